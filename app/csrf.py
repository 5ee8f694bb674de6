"""CSRF protection for every state-changing request, app-wide.

The operator routes use HTTP Basic auth, which a browser resends on its own
to a site it holds credentials for, whoever's page made the request. So a
page on another origin could post a form to ``POST /lease/release`` and flap
the lease. :func:`install` adds one ``before_request`` hook that refuses,
with 403 and a one-line JSON error, every request whose method is not a safe
one (anything but GET, HEAD, OPTIONS, TRACE: POST, PUT, PATCH, DELETE and
any other) unless

1. it carries ``X-Baton-Request: 1``. A cross-origin HTML form cannot set a
   header, and a cross-origin ``fetch`` that sets one needs a CORS preflight
   that Baton never grants (no route answers with ``Access-Control-Allow-*``);
2. its ``Origin``, when present, is this site's own scheme, host and port
   (``Origin: null`` is refused). gunicorn is behind Heroku's router, which
   ends TLS: the app sees ``http`` while the browser's origin is ``https``.
   That mismatch is accepted only when ``X-Forwarded-Proto`` names the
   browser's scheme; the host and port must match exactly;
3. its ``Sec-Fetch-Site``, when present, is ``same-origin`` or ``none`` (a
   request the user made by typing the URL or from a bookmark).

Being a hook, it runs for every route, including those added later, and
before the view's ``require_auth``. That order is deliberate: a refused
cross-site request learns nothing about the credentials the browser sent
(valid or not, the answer is the same 403), and it never gets a 401 with
``WWW-Authenticate``, which would let a foreign page pop up Baton's login
prompt in the operator's browser. A client that is not a browser (curl, a
script) sends no ``Origin`` or ``Sec-Fetch-Site``; it only adds the header.
The ``flask --app app baton`` commands talk to Redis and are unaffected.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, request

from election.logfmt import log_event

log = logging.getLogger("baton.web")

HEADER = "X-Baton-Request"
HEADER_VALUE = "1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(url: str, scheme: str | None = None, bare: bool = False):
    """(scheme, host, port) of an origin or URL, ``scheme`` overriding its own;
    None when it is not an http(s) origin (or, ``bare``, has more than
    scheme://host[:port], as a browser's Origin never does)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if bare and (parts.username is not None or parts.path or parts.query or parts.fragment):
        return None
    scheme = (scheme or parts.scheme).lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def own_origin():
    """This site's (scheme, host, port) as the browser sees it: the request's
    own, with the scheme of ``X-Forwarded-Proto`` when a proxy (Heroku's
    router) ended TLS in front of gunicorn."""
    forwarded = (request.headers.get("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
    return _origin_tuple(request.host_url, forwarded if forwarded in _DEFAULT_PORTS else None)


def refusal() -> str | None:
    """Why this request must be refused (one line that says how to send it
    right), or None when it may go on."""
    method = request.method
    if method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        mine = own_origin()
        if origin.strip().lower() == "null" or mine is None or _origin_tuple(origin, bare=True) != mine:
            return (f"{method} refused: Origin {origin} is not this site's own ({_shown(mine)}); "
                    "state-changing requests are accepted only from Baton's own pages, or with no Origin "
                    "header (curl, scripts)")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in ALLOWED_FETCH_SITES:
        return (f"{method} refused: the browser says this request came from another site "
                f"(Sec-Fetch-Site: {fetch_site}); use the dashboard on this site itself")
    if request.headers.get(HEADER) != HEADER_VALUE:
        return (f"{method} refused: the {HEADER} header is missing (or not {HEADER_VALUE}); send "
                f"'{HEADER}: {HEADER_VALUE}' with every POST/PUT/PATCH/DELETE, e.g. curl -X {method} "
                f"-H '{HEADER}: {HEADER_VALUE}' -u USER:PASSWORD {_shown(own_origin())}{request.path}")
    return None


def _shown(mine) -> str:
    """This site's origin as the browser sees it, for a message."""
    return f"{mine[0]}://{request.host}" if mine else request.host_url.rstrip("/")


def _check():
    reason = refusal()
    if reason is None:
        return None
    settings = current_app.extensions.get("baton")
    log_event(log, logging.WARNING, "csrf_refused", site=settings.core.identity.site if settings else None,
              method=request.method, path=request.path,
              origin=request.headers.get("Origin"), sec_fetch_site=request.headers.get("Sec-Fetch-Site"),
              header=HEADER in request.headers)
    return jsonify(error=reason), 403


def install(app: Flask) -> None:
    """Refuse cross-site state-changing requests on every route of ``app``."""
    app.before_request(_check)
