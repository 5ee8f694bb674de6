"""Who is competing: ``site/dyno/boot``.

The boot id is random per process start because Heroku reuses ``$DYNO``
(``web.1``) across restarts: a restarted process must never take the lease
left behind by its previous life for its own.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass, field

# Site names end up in CLIENT SETNAME (no spaces allowed), in Redis keys and in
# logfmt lines, so they are kept to a safe alphabet.
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _check(name: str, value: str, source: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{source} must be 1-64 characters of letters, digits, '.', '_' or '-', got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Identity:
    site: str
    dyno: str
    boot: str = field(default_factory=lambda: secrets.token_hex(4))

    def __post_init__(self) -> None:
        _check("site", self.site, "site")
        _check("dyno", self.dyno, "dyno")
        _check("boot", self.boot, "boot")

    @property
    def holder(self) -> str:
        """The candidate id written to ``{prefix}:lease`` as ``holder``."""
        return f"{self.site}/{self.dyno}/{self.boot}"

    @classmethod
    def from_env(cls, environ=None) -> "Identity":
        """Site from BATON_SITE, else HEROKU_APP_NAME, else (off Heroku) the
        host name; dyno from DYNO, else the pid. Raises ValueError naming the
        variable."""
        env = os.environ if environ is None else environ
        if env.get("BATON_SITE"):
            site = _check("site", env["BATON_SITE"], "BATON_SITE")
        elif env.get("HEROKU_APP_NAME"):
            site = _check("site", env["HEROKU_APP_NAME"], "HEROKU_APP_NAME")
        elif env.get("DYNO"):
            # On Heroku every dyno has a host name of its own: the web and
            # worker dynos of one app would be different sites, and a worker
            # whose site never leads waits forever.
            raise ValueError(
                "BATON_SITE must be set on Heroku, the same for every process type of one app "
                "(heroku config:set BATON_SITE=<name> -a <app>), or enable runtime-dyno-metadata for HEROKU_APP_NAME"
            )
        else:
            # Host names may carry a domain; the first label is the useful part.
            site = _check("site", socket.gethostname().split(".")[0] or "localhost", "the host name")
        dyno = _check("dyno", env["DYNO"], "DYNO") if env.get("DYNO") else str(os.getpid())
        return cls(site=site, dyno=dyno)
