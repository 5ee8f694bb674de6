import pytest

from election import ElectionConfig, Identity


def test_defaults_are_valid_and_documented_relations_hold():
    config = ElectionConfig()
    assert (config.ttl, config.renew_interval, config.renew_deadline) == (10.0, 2.0, 7.0)
    assert 0 < config.renew_interval < config.renew_deadline < config.ttl


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1}, "ttl"),
        ({"renew_interval": 0}, "renew_interval"),
        ({"renew_deadline": "7"}, "renew_deadline"),
        ({"renew_interval": 7.0}, "renew_interval"),  # == deadline
        ({"renew_interval": 8.0}, "renew_interval"),  # > deadline
        ({"renew_deadline": 10.0}, "renew_deadline"),  # == ttl
        ({"ttl": 5.0}, "renew_deadline"),  # deadline 7 > ttl 5
        ({"retry_backoff_min": 3.0}, "retry_backoff_min"),
        ({"history_maxlen": 0}, "history_maxlen"),
    ],
)
def test_invalid_timings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ElectionConfig(**kwargs)


def test_identity_prefers_baton_site_then_heroku_app_name_then_host():
    a = Identity.from_env({"BATON_SITE": "site-a", "HEROKU_APP_NAME": "app", "DYNO": "web.1"})
    assert (a.site, a.dyno) == ("site-a", "web.1")
    assert Identity.from_env({"HEROKU_APP_NAME": "my-app"}).site == "my-app"
    assert Identity.from_env({}).site  # the host name


def test_each_process_start_gets_a_new_boot_id():
    # Heroku reuses web.1 across restarts: the holder id must still differ.
    env = {"BATON_SITE": "a", "DYNO": "web.1"}
    first, second = Identity.from_env(env), Identity.from_env(env)
    assert first.holder != second.holder
    assert first.holder.startswith("a/web.1/")


def test_dyno_defaults_to_pid():
    import os

    assert Identity.from_env({"BATON_SITE": "a"}).dyno == str(os.getpid())


@pytest.mark.parametrize("var", ["BATON_SITE", "HEROKU_APP_NAME", "DYNO"])
def test_bad_names_are_rejected_naming_the_variable(var):
    env = {"BATON_SITE": "a"} if var == "DYNO" else {}
    env[var] = "has space"
    with pytest.raises(ValueError, match=var):
        Identity.from_env(env)


def test_on_heroku_the_site_must_be_named_not_taken_from_the_dynos_host_name():
    with pytest.raises(ValueError, match="BATON_SITE must be set on Heroku"):
        Identity.from_env({"DYNO": "worker.1"})
    assert Identity.from_env({"DYNO": "worker.1", "HEROKU_APP_NAME": "sched-a"}).site == "sched-a"
