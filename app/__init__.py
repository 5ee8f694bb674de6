"""The web process of a Baton site: a Flask app factory.

gunicorn runs ``app:create_app()`` with ``app/gunicorn_conf.py``; the lease
and the scheduler live in the gunicorn master (app/runtime.py), and the views
here read what it publishes and what is in Redis.
"""

from __future__ import annotations

from flask import Flask

from .settings import WebSettings


def create_app(settings: WebSettings | None = None) -> Flask:
    app = Flask(__name__)
    app.extensions["baton"] = settings or WebSettings.from_env()

    from .cli import baton_cli
    from .csrf import install as install_csrf
    from .entries import entries
    from .health import health
    from .metrics import metrics
    from .ops import ops

    # Before every view, so before require_auth too (app/csrf.py says why).
    install_csrf(app)
    app.register_blueprint(health)
    app.register_blueprint(ops)
    app.register_blueprint(entries)
    app.register_blueprint(metrics)
    app.cli.add_command(baton_cli)

    return app
