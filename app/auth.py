"""HTTP Basic auth for the operator routes, compared in constant time."""

from __future__ import annotations

import hmac
from functools import wraps

from flask import Response, request

from .state import settings


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def require_auth(view):
    @wraps(view)
    def wrapped(*args, **kwargs):
        s = settings()
        if not s.auth_username:
            return Response(
                "This page is off until credentials are set: configure BASIC_AUTH_USERNAME and "
                "BASIC_AUTH_PASSWORD for this app.\n",
                status=503, mimetype="text/plain",
            )
        auth = request.authorization
        ok = (auth is not None and auth.type == "basic"
              and _equal(auth.username or "", s.auth_username) & _equal(auth.password or "", s.auth_password))
        if not ok:
            return Response(status=401, headers={"WWW-Authenticate": 'Basic realm="baton"'})
        return view(*args, **kwargs)

    return wrapped
