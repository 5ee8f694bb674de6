"""Importing a user's module (the schedule, a job's function) with every way
it can fail turned into one line that names the file and the line."""

from __future__ import annotations

import importlib
import os
import traceback


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback that is not the import machinery."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    if not frames:
        return ""
    frame = frames[-1]
    path = os.path.relpath(frame.filename) if frame.filename.startswith(os.getcwd() + os.sep) else frame.filename
    return f" at {path}, line {frame.lineno}"


def import_module(name: str, what: str):
    """``importlib.import_module(name)``, or ImportError with one line:
    ``what`` says who asked (e.g. "BATON_SCHEDULE")."""
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        path = os.path.relpath(exc.filename) if exc.filename else name
        raise ImportError(f"{what}: {path}, line {exc.lineno}: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            raise ImportError(f"{what}: cannot import module {name!r} (no such module)") from None
        raise ImportError(f"{what}: importing {name!r} failed{_where(exc)}: {exc}") from None
    except Exception as exc:  # user code ran at import and raised
        raise ImportError(f"{what}: importing {name!r} raised {type(exc).__name__}: {exc}{_where(exc)}") from None
