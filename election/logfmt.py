"""logfmt lines on stdout, the way Heroku's router and log tooling print them.

Every event is one line: ``at=info event=elected site=a token=7``. A value that
contains a space, a quote or an ``=`` is quoted so that the line still splits
unambiguously on spaces.
"""

from __future__ import annotations

import logging
import sys

_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def format_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text == "" or any(c in text for c in ' "=\\\n\t'):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


def format_fields(fields: dict) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in fields.items())


class LogfmtFormatter(logging.Formatter):
    """Renders records made by :func:`log_event`; plain records become ``msg=...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {"at": _LEVEL_NAMES.get(record.levelno, record.levelname.lower())}
        event_fields = getattr(record, "logfmt", None)
        if event_fields is None:
            fields["logger"] = record.name
            fields["msg"] = record.getMessage()
        else:
            fields.update(event_fields)
        if record.exc_info:
            # One line per event, even for a traceback: the last line names the error.
            exc_type, exc, _ = record.exc_info
            fields["error"] = f"{exc_type.__name__}: {exc}"
        return format_fields(fields)


def log_event(logger: logging.Logger, level: int, event: str, **fields) -> None:
    """Log one event as a logfmt line: ``log_event(log, INFO, "elected", token=7)``."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"logfmt": {"event": event, **fields}})


def configure_stdout_logging(level: int = logging.INFO, name: str = "baton") -> None:
    """Send the ``name`` loggers (Baton's; ``rq`` for RQ's own lines) to
    stdout as logfmt, a traceback as one ``error=`` field (idempotent)."""
    root = logging.getLogger(name)
    root.setLevel(level)
    if not any(getattr(h, "_baton_logfmt", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(LogfmtFormatter())
        handler._baton_logfmt = True  # marks our handler so a second call adds none
        root.addHandler(handler)
        root.propagate = False
