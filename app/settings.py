"""The web process's settings: the workers' (Redis, site, prefix, timings)
plus what only the web process needs. Validated at start; a bad value stops
the process with one line naming the variable."""

from __future__ import annotations

import os
from dataclasses import dataclass

from workers.settings import ConfigError, Settings, _flag, _seconds, _whole


@dataclass(frozen=True)
class WebSettings:
    core: Settings
    auth_username: str | None
    auth_password: str | None
    embedded_worker: bool
    port: int  # set by Heroku
    web_concurrency: int  # HTTP worker processes; set by Heroku's Python buildpack
    keep_awake_url: str | None
    keep_awake_interval: float

    @classmethod
    def from_env(cls, environ=None) -> "WebSettings":
        env = os.environ if environ is None else environ
        core = Settings.from_env(env)
        username, password = env.get("BASIC_AUTH_USERNAME") or None, env.get("BASIC_AUTH_PASSWORD") or None
        if (username is None) != (password is None):
            missing = "BASIC_AUTH_PASSWORD" if password is None else "BASIC_AUTH_USERNAME"
            raise ConfigError(f"{missing} must be set too (set both BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD, or neither)")
        url = env.get("KEEP_AWAKE_URL") or None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"KEEP_AWAKE_URL must be the site's public http(s):// URL; got {url!r}")
        return cls(
            core=core,
            auth_username=username,
            auth_password=password,
            embedded_worker=_flag(env, "BATON_EMBEDDED_WORKER", True),
            port=_whole(env, "PORT", 5000, 1, 65535, "the TCP port to listen on"),
            web_concurrency=_whole(env, "WEB_CONCURRENCY", 2, 1, 64, "the number of HTTP worker processes"),
            keep_awake_url=url,
            keep_awake_interval=_seconds(env, "KEEP_AWAKE_INTERVAL", 20 * 60.0),
        )
