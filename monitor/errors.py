"""Turn exceptions into one line a user can act on (no traceback reaches a user)."""

from __future__ import annotations

import os
import traceback
from datetime import UTC, datetime
from pathlib import Path


def log_path() -> Path:
    """Where unexpected errors are written in full: $XDG_STATE_HOME/cupmon/cupmon.log."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "cupmon" / "cupmon.log"


def _expected(exc: BaseException) -> str | None:
    # Errors that carry a user-facing message of their own.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"LinkError", "StoreError", "ConfigError", "SerialException", "ReplayError"}:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, (IsADirectoryError, NotADirectoryError)):
        return f"not a valid path: {exc.filename}"
    if isinstance(exc, ValueError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid value"
    return None


def user_message(exc: BaseException) -> str:
    """One line for the user. Unexpected errors are logged in full and the line
    says where."""
    msg = _expected(exc)
    if msg is not None:
        return msg
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.now(UTC).isoformat()}\n")
            fh.write("".join(traceback.format_exception(exc)))
        where = f"details in {path}"
    except OSError:
        where = "no log could be written"
    return f"internal error ({type(exc).__name__}: {exc}); {where}"
