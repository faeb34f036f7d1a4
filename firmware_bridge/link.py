"""SerialLink: a serial port or any pyserial URL as a :class:`Source`.

One reader thread per link reads with a 20 ms timeout, feeds the decoder and
publishes blocks and messages on the notifier at once (each listener has its
own thread and queue, so nothing downstream can stall the reader). The same
thread resends unanswered commands, notices silence, and reconnects when the
port disappears. See docs/link.md.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import struct
import threading
import time

import serial

try:  # POSIX: ask the OS how many bytes wait on a descriptor
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    _FIONREAD = None

from .codec import Command, Decoder, DecodeResult
from .errors import (
    LinkError,
    NotSupported,
    NoValidData,
    PortNotFound,
    UnsupportedProtocol,
    classify_open_error,
    device_path,
)
from .listener import Notifier
from .messages import Ack, DeviceInfo, LinkState, LinkStats, Nack, SampleBlock
from .protocol import ACK_ATTEMPTS, ACK_TIMEOUT_S, DEFAULT_BAUD, MsgType
from .source import CommandTracker, Source

log = logging.getLogger(__name__)

#: Read timeout (s). Bounds how long bytes can wait in the OS before we look,
#: and how often commands are retried and stop() is noticed.
READ_TIMEOUT_S = 0.02
#: A write that cannot complete in this long (flow control stuck) fails.
WRITE_TIMEOUT_S = 0.5
#: Most bytes handed to the decoder at once.
MAX_CHUNK = 1 << 16
#: Reconnect backoff (s): first wait, doubling up to the cap.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
#: A reconnection that lasts less than this (s) does not reset the backoff.
STABLE_S = 2.0
#: While a device path is missing, look for it this often (s) so a replugged
#: device is reopened at once rather than at the next backoff step.
PATH_POLL_S = 0.02
#: How long to wait for INFO after opening before announcing CONNECTED without it (s).
INFO_TIMEOUT_S = 1.0
#: Host frames at least this often (s) so the device does not report HOST_LOST (5 s).
KEEPALIVE_S = 1.0

MODES = ("auto", "binary", "text")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _descriptor(port: serial.SerialBase) -> int | None:
    """The OS descriptor behind ``port`` if FIONREAD works on it, else None."""
    if _FIONREAD is None:
        return None
    try:
        fd = port.fileno()
        fcntl.ioctl(fd, _FIONREAD, b"\0\0\0\0")
        return int(fd)
    except Exception:  # loop://, sim://, handlers without a descriptor
        return None


def _path_identity(path: str | None) -> tuple[int, int, int] | None:
    """(device, inode, rdev) of what ``path`` names now; None if absent or not a path."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_rdev)


class SerialLink(Source):
    """A device on a serial port or pyserial URL.

    ``url``: a device path (``/dev/ttyACM0``, ``COM3``) or any pyserial URL
    (``socket://``, ``rfc2217://``, ``loop://``, ``spy://``, ``sim://``, ...).
    ``mode``: "auto" (detect binary frames or text lines), "binary" or "text".
    ``reconnect``: reopen the port after it disappears (backoff 0.1 s doubling
    to 2 s; a device path that reappears is reopened at once).
    ``no_data_timeout``: seconds after (re)connecting without any valid frame
    before an ERROR event says so (the link keeps reading).
    """

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUD, mode: str = "auto",
                 reconnect: bool = True, no_data_timeout: float = 3.0,
                 notifier: Notifier | None = None, *, read_timeout: float = READ_TIMEOUT_S,
                 info_timeout: float = INFO_TIMEOUT_S, keepalive: float | None = KEEPALIVE_S,
                 exclusive: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        super().__init__(notifier)
        self.url = url
        self.baudrate = baudrate
        self.mode = mode
        self.reconnect = reconnect
        self.no_data_timeout = no_data_timeout
        self.read_timeout = read_timeout
        self.info_timeout = info_timeout
        self.keepalive = keepalive
        self.exclusive = exclusive
        self._decoder = Decoder(mode)
        self._tracker = CommandTracker(self._write_frame)
        self._port: serial.SerialBase | None = None
        self._port_lock = threading.Lock()  # guards _port and serialises writes
        self._life_lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._reconnects = 0
        self._last_tx = 0.0
        self._fd: int | None = None  # the port's OS descriptor, if it has one
        self._decoder_bugs = 0
        self._decoder_bug_reported = -1e9
        # Per-connection state, reset by _attach().
        self._ever_connected = False
        self._conn_t0 = 0.0
        self._announced = False
        self._conn_info: DeviceInfo | None = None
        self._valid_seen = False
        self._nodata_reported = False
        self._version_reported: int | None = None
        # Outage state, set by _lost().
        self._backoff = BACKOFF_FIRST_S
        self._next_attempt = 0.0
        self._path_id: tuple[int, int, int] | None = None
        self._outage_error = ""

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Open the port and start the reader thread. Raises LinkError
        (PortNotFound, PermissionDenied, PortBusy, ...) if the open fails."""
        with self._life_lock:
            if self._stopped:
                raise LinkError(f"the link to {self.url} was stopped; open a new one")
            if self._thread is not None:
                return
            self._publish_state(LinkState.CONNECTING, f"opening {self.url}")
            try:
                port = self._open()
            except LinkError as exc:
                self._publish_state(LinkState.ERROR, str(exc))
                raise
            self._thread = threading.Thread(target=self._run, name=f"link-reader {self.url}",
                                            daemon=True)
            self._attach(port)
            self._thread.start()

    def stop(self) -> None:
        """Stop reading, close the port, fail pending commands, publish CLOSED,
        then stop the notifier (listeners' ``stop()``). Idempotent."""
        with self._life_lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._stop_evt.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
            if thread.is_alive():
                log.warning("reader thread of %s did not stop within 5 s", self.url)
        self._close_port()
        self._tracker.fail_all(LinkError(f"the link to {self.url} was closed"))
        self._publish_state(LinkState.CLOSED, f"closed {self.url}")
        self.notifier.stop()

    # -- state -------------------------------------------------------------
    def stats(self) -> LinkStats:
        """Decoder counters, reconnects and listener overruns."""
        s = self._decoder.stats.copy()
        s.reconnects = self._reconnects
        s.listener_overruns = self.notifier.overruns()
        return s

    @property
    def port(self) -> serial.SerialBase | None:
        """The pyserial port the link has open on :attr:`url` now, or None
        (not started, stopped, or lost and not yet reopened). Read-only; a
        reconnect replaces it with a new port object.

        For reaching what is behind the port, e.g. ``link.port.device``, the
        :class:`sim.device.VirtualDevice` of a ``sim://`` port. Do not read
        from it (the reader thread owns reads) nor write to it (use
        :meth:`write` or :meth:`send_command`, which keep frames whole)."""
        with self._port_lock:
            return self._port

    @property
    def detected_mode(self) -> str:
        """"binary" or "text" once the decoder has recognised the stream, else "auto"."""
        return self._decoder.mode

    # -- commands and raw bytes -------------------------------------------
    def send_command(self, cmd: Command, timeout: float = ACK_TIMEOUT_S,
                     attempts: int = ACK_ATTEMPTS) -> concurrent.futures.Future:
        """Send ``cmd`` with a fresh seq; the future resolves to the :class:`Ack`,
        or fails with CommandNacked, CommandTimeout (after ``attempts`` sends,
        ``timeout`` s apart), NotSupported (text device) or LinkError (closed)."""
        reason: LinkError | None = None
        if self._stopped or self._thread is None or not self._thread.is_alive():
            reason = LinkError(f"the link to {self.url} is not running")
        elif self.mode == "text" or self._decoder.mode == "text":
            reason = NotSupported(f"{self.url} sends the text format, which takes no commands")
        if reason is not None:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(reason)
            return future
        return self._tracker.submit(cmd, timeout, attempts)

    def write(self, data: bytes) -> None:
        """Write raw bytes to the port (diagnostics; tests over ``loop://``).
        Raises LinkError when the port is not open or the write fails."""
        try:
            self._write_frame(data)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"write to {self.url} failed: {_one_line(exc)}") from exc

    def _write_frame(self, data: bytes) -> None:
        with self._port_lock:  # whole frames only: never interleave two writers
            port = self._port
            if port is None:
                raise LinkError(f"{self.url} is not connected")
            port.write(data)
            self._last_tx = time.monotonic()

    # -- opening -----------------------------------------------------------
    def _open(self) -> serial.SerialBase:
        kwargs: dict = {"baudrate": self.baudrate, "timeout": self.read_timeout,
                        "write_timeout": WRITE_TIMEOUT_S}
        if self.exclusive and os.name == "posix":
            # flock() on the device: a second program (or a second cupmon) gets
            # PortBusy instead of silently stealing half the bytes.
            kwargs["exclusive"] = True
        try:
            try:
                return serial.serial_for_url(self.url, **kwargs)
            except TypeError:
                if "exclusive" not in kwargs:
                    raise
                # A third-party URL handler that knows no exclusive access.
                kwargs.pop("exclusive")
                return serial.serial_for_url(self.url, **kwargs)
        except Exception as exc:
            raise classify_open_error(self.url, exc) from exc

    def _attach(self, port: serial.SerialBase, reopened: bool = False) -> None:
        """Use ``port`` for a new connection and ask the device who it is."""
        with self._port_lock:
            self._port = port
        self._fd = _descriptor(port)
        if reopened:
            self._decoder.reset()  # the next block says gap_before; no sample is invented
        self._conn_t0 = time.monotonic()
        self._announced = False
        self._conn_info = None
        self._valid_seen = False
        self._nodata_reported = False
        self._version_reported = None
        if self.mode != "text":
            # A text sketch ignores the bytes; a cupmon device ACKs and sends INFO.
            self._tracker.submit(Command(MsgType.GET_INFO), internal=True)

    def _close_port(self) -> None:
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # closing a vanished device may fail; it is gone anyway
                log.debug("closing %s: %s", self.url, exc)

    # -- the reader thread -------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop_evt.is_set():
                try:
                    if self._port is None:
                        if not self.reconnect:
                            break
                        self._try_reconnect()
                    else:
                        self._read_once()
                        self._housekeeping(time.monotonic())
                except Exception as exc:  # a bug here or in the codec: say so, keep reading
                    log.exception("serial reader of %s failed", self.url)
                    self._publish_state(LinkState.ERROR,
                                        f"internal error reading {self.url}: "
                                        f"{type(exc).__name__}: {_one_line(exc)}")
                    self._stop_evt.wait(0.1)  # no hot loop if it keeps failing
        except BaseException:
            log.exception("serial reader of %s died", self.url)
            raise
        finally:
            if not self._stop_evt.is_set():
                # Ended without stop(): LOST with reconnect=False. Nobody will
                # answer the commands still waiting.
                self._tracker.fail_all(LinkError(f"{self.url} was lost"))

    def _read_once(self) -> None:
        port = self._port
        assert port is not None
        try:
            data = port.read(min(MAX_CHUNK, max(1, self._waiting(port))))
            # read(1) returns on the first byte: take what else is already
            # waiting, once, so the decoder sees whole bursts, not a byte at a
            # time. Never loop "while more is waiting": a device streaming
            # continuously always has more, and the link would hoard data
            # (seconds of it) instead of publishing it: alarm latency.
            if data:
                more = min(MAX_CHUNK - len(data), self._waiting(port))
                if more > 0:
                    data += port.read(more)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return
        if data:
            now = time.monotonic()
            self._dispatch(self._decoder.feed(data, now))

    def _waiting(self, port: serial.SerialBase) -> int:
        n = port.in_waiting
        if n == 1 and self._fd is not None:
            # Some handlers (socket://) only say "something is waiting"; the
            # descriptor knows how much. Exact handlers never return less.
            try:
                raw = fcntl.ioctl(self._fd, _FIONREAD, b"\0\0\0\0")
                n = max(n, struct.unpack("i", raw)[0])
            except OSError:
                self._fd = None
        return n

    def _dispatch(self, res: DecodeResult) -> None:
        for item in res.ordered():
            if isinstance(item, SampleBlock):
                self._valid_seen = True
                self.notifier.publish_block(item)
                continue
            if isinstance(item, Command):
                continue  # our own frames echoed (loop://) or a confused peer
            self._valid_seen = True
            if isinstance(item, (Ack, Nack)):
                pending = self._tracker.resolve(item)
                if pending is not None and pending.internal:
                    continue  # GET_INFO on connect, keep-alive: not the listeners' business
            self.notifier.publish_message(item)
            if isinstance(item, DeviceInfo):
                self._info = self._conn_info = item
                if not self._announced:
                    self._announce()

    def _announce(self) -> None:
        self._announced = True
        info = self._conn_info
        if info is not None:
            what = (f"{info.serial or 'device'} firmware {info.firmware_str}, "
                    f"{info.cups} cups at {info.rate_hz} Hz")
        elif self._decoder.mode == "text":
            what = "text format"
        else:
            what = "the device has not sent INFO"
        first = not self._ever_connected
        self._ever_connected = True
        state = LinkState.CONNECTED if first else LinkState.RECONNECTED
        verb = "connected to" if first else "reconnected to"
        self._publish_state(state, f"{verb} {self.url} ({what})", info)

    def _housekeeping(self, now: float) -> None:
        since = now - self._conn_t0
        if not self._announced and (self._decoder.mode == "text" or since >= self.info_timeout):
            self._announce()
        version = self._decoder.version_mismatch
        if version is not None and version != self._version_reported:
            self._version_reported = version
            self._publish_state(LinkState.ERROR, str(UnsupportedProtocol(self.url, version)))
        if not self._valid_seen and not self._nodata_reported and since >= self.no_data_timeout:
            self._nodata_reported = True
            if self._version_reported is None:  # the version message already says why
                self._publish_state(LinkState.ERROR,
                                    str(NoValidData(self.url, self.no_data_timeout)))
        bugs = getattr(self._decoder, "internal_errors", 0)
        if bugs > self._decoder_bugs and now - self._decoder_bug_reported >= 10.0:
            # The decoder survived its own exception but dropped bytes: say so
            # (at most every 10 s) rather than let data vanish quietly.
            self._decoder_bug_reported = now
            self._publish_state(LinkState.ERROR,
                                f"internal decoder error on {self.url}: "
                                f"{bugs - self._decoder_bugs} chunk(s) of bytes dropped; "
                                "details in the log")
            self._decoder_bugs = bugs
        if (self.keepalive is not None and self._decoder.mode == "binary"
                and now - self._last_tx >= self.keepalive):
            self._last_tx = now  # one ping per interval even if the write fails
            self._tracker.submit(Command(MsgType.PING), attempts=1, internal=True)
        self._tracker.poll(now)

    # -- losing and regaining the port ------------------------------------
    def _lost(self, exc: BaseException) -> None:
        self._close_port()
        now = time.monotonic()
        self._publish_state(LinkState.LOST, f"lost {self.url}: {_one_line(exc)}")
        if not self.reconnect:
            return
        if self._reconnects and now - self._conn_t0 < STABLE_S:
            # Reopened, then lost again at once (a node that opens but cannot
            # be read): keep backing off instead of cycling every 0.1 s.
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
        else:
            self._backoff = BACKOFF_FIRST_S
        self._next_attempt = now + self._backoff
        self._path_id = _path_identity(device_path(self.url))
        self._outage_error = ""
        self._publish_state(LinkState.RECONNECTING, f"waiting for {self.url} to come back")

    def _try_reconnect(self) -> None:
        now = time.monotonic()
        self._tracker.poll(now)
        path = device_path(self.url)
        ident = _path_identity(path)
        # A device node that appears, or is replaced by another (a symlink
        # re-pointed, a node re-created by udev), is worth trying at once.
        appeared = ident is not None and ident != self._path_id
        self._path_id = ident
        if now < self._next_attempt and not appeared:
            # Short naps: keep retrying commands and notice stop() and the path.
            nap = PATH_POLL_S if path is not None else 0.1
            self._stop_evt.wait(min(self._next_attempt - now, nap))
            return
        try:
            port = self._open()
        except LinkError as exc:
            self._backoff = min(BACKOFF_MAX_S, self._backoff * 2)
            self._next_attempt = time.monotonic() + self._backoff
            msg = str(exc)
            log.debug("reconnect to %s failed: %s", self.url, msg)
            # A missing port is the expected state while unplugged; anything
            # else (permission after replug, busy) the user must hear about, once.
            if not isinstance(exc, PortNotFound) and msg != self._outage_error:
                self._outage_error = msg
                self._publish_state(LinkState.ERROR, msg)
            return
        self._reconnects += 1
        self._attach(port, reopened=True)
        self._housekeeping(time.monotonic())


__all__ = ["SerialLink", "READ_TIMEOUT_S"]
