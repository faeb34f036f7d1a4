"""Errors of the serial link, each with one line a user can act on.

``str(error)`` is always a single line that says what went wrong *and* what to
do about it; ``monitor.errors.user_message`` prints it as is. Low-level
pyserial / OS errors are turned into these by :func:`classify_open_error`.
"""

from __future__ import annotations

import errno
import os
import re
import sys

from .protocol import VERSION, MsgType, NackReason


class LinkError(Exception):
    """Base of every link error; ``str()`` is one actionable line."""

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the OS put in the underlying message.
        super().__init__(" ".join(str(message).split()))


class PortNotFound(LinkError):
    """The device path does not exist (unplugged, typo, wrong number)."""

    def __init__(self, url: str, available: list[str] | None = None) -> None:
        self.url = url
        self.available = list(available or [])
        if self.available:
            found = ", ".join(self.available)
            msg = f"no serial port {url}; ports found: {found} (cupmon --list-ports shows details)"
        else:
            msg = (f"no serial port {url}, and no serial ports were found: "
                   "is the device plugged in and powered?")
        super().__init__(msg)


class PermissionDenied(LinkError):
    """The device node exists but this user may not open it."""

    def __init__(self, url: str, group: str | None = None) -> None:
        self.url = url
        self.group = group
        if group and group != "root":
            msg = (f"permission denied opening {url} (device group '{group}'): "
                   f"add yourself to the '{group}' group: sudo usermod -aG {group} $USER, "
                   "then log in again")
        else:
            msg = (f"permission denied opening {url}: run cupmon as a user who may open it "
                   "(on Linux add a udev rule giving the device to the 'dialout' group)")
        super().__init__(msg)


class PortBusy(LinkError):
    """Another program (serial monitor, second cupmon, ModemManager) holds the port."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"{url} is in use by another program: close the other serial monitor "
                         "or cupmon window using it and try again")


class NoValidData(LinkError):
    """The port opened but nothing on it decodes as cupmon data."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.seconds = seconds
        super().__init__(f"no valid frames from {url} in {seconds:g} s: wrong baud rate "
                         "(try --baud 115200/921600) or not a cupmon device")


class UnsupportedProtocol(LinkError):
    """The device speaks another version of the wire protocol."""

    def __init__(self, url: str, version: int) -> None:
        self.url = url
        self.version = version
        super().__init__(f"{url} speaks wire protocol version {version}, this cupmon speaks "
                         f"version {VERSION}: update cupmon or the device firmware")


class CommandError(LinkError):
    """Base of the errors a command future can fail with."""


class CommandNacked(CommandError):
    """The device answered NACK; ``reason`` is a :class:`NackReason` value."""

    def __init__(self, reason: int, cmd: int | None = None) -> None:
        self.reason = int(reason)
        self.cmd = cmd
        try:
            why = NackReason(self.reason).name
        except ValueError:
            why = f"reason {self.reason}"
        super().__init__(f"the device refused {_cmd_name(cmd)}: {why}")


class CommandTimeout(CommandError):
    """No ACK/NACK after every attempt."""

    def __init__(self, cmd: int | None = None, attempts: int = 0, seconds: float = 0.0,
                 detail: str = "") -> None:
        self.cmd = cmd
        self.attempts = attempts
        extra = f" ({detail})" if detail else ""
        super().__init__(f"no answer from the device to {_cmd_name(cmd)} after {attempts} "
                         f"attempt{'s' if attempts != 1 else ''} in {seconds:.2f} s{extra}: "
                         "check the cable and that the device runs cupmon firmware")


class NotSupported(CommandError):
    """This source cannot do that (e.g. commands to a replay or a text-format device)."""


def _cmd_name(cmd: int | None) -> str:
    if cmd is None:
        return "the command"
    try:
        return MsgType(cmd).name
    except ValueError:
        return f"command 0x{cmd:02X}"


_ERRNO_RE = re.compile(r"\[Errno (\d+)\]")


def _errno_of(exc: BaseException) -> int | None:
    # pyserial puts the OS errno in SerialException.errno for failed opens and
    # locks; other paths only mention "[Errno N]" in the text.
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    m = _ERRNO_RE.search(str(exc))
    return int(m.group(1)) if m else None


def device_path(url: str) -> str | None:
    """The filesystem path behind a port URL, else None: ``/dev/ttyACM0`` ->
    itself, ``spy:///dev/ttyACM0?file=x`` -> ``/dev/ttyACM0``, any other
    ``scheme://`` URL (``socket://``, ``sim://``, ``loop://``) -> None."""
    if url.startswith("spy://"):
        url = url[len("spy://"):].split("?", 1)[0]
    return None if "://" in url else url


def _group_of(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        import grp

        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (ImportError, OSError, KeyError):
        return None


def _existing_ports() -> list[str]:
    try:
        from .ports import list_ports

        return [p.path for p in list_ports()]
    except Exception:  # listing is a courtesy; never hide the real error behind it
        return []


def classify_open_error(url: str, exc: BaseException) -> LinkError:
    """Turn an error from opening ``url`` into a :class:`LinkError` subclass."""
    if isinstance(exc, LinkError):
        return exc
    text = str(exc)
    if isinstance(exc, ValueError) and "protocol" in text and "not known" in text:
        scheme = url.split("://", 1)[0]
        return LinkError(f"unknown port URL scheme '{scheme}://' in {url}: use a device path "
                         "or a socket://, rfc2217://, loop://, spy:// or sim:// URL")
    if isinstance(exc, ValueError):
        return LinkError(f"invalid settings for {url}: {text}")
    code = _errno_of(exc)
    lowered = text.lower()
    if "exclusively lock" in lowered or code == errno.EBUSY:
        return PortBusy(url)
    if sys.platform == "win32" and "access is denied" in lowered:
        return PortBusy(url)  # Windows reports a port held by another program this way
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "filenotfounderror" in lowered:
        return PortNotFound(url, _existing_ports())
    if code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(url, _group_of(device_path(url)))
    if code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT):
        return LinkError(f"cannot connect to {url}: {os.strerror(code).lower()}: "
                         "is the device server running and the address right?")
    if "could not configure port" in lowered:
        return LinkError(f"{url} is not a serial port (it does not accept serial settings): "
                         "check the path")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # pyserial already says "could not open port URL: ..."; do not say it twice.
    first = re.sub(r"(?i)^could not open port .*?: ", "", first)
    return LinkError(f"cannot open {url}: {first}")
