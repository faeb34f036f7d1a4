"""``sim://`` URLs for pyserial: the simulator in-process, behind the serial API.

``serial.serial_for_url("sim://normal?cups=4&rate=100&seed=1&speed=1")``
returns a port whose bytes come from a :class:`~sim.device.VirtualDevice`,
so cupmon's ordinary ``SerialLink`` reads the simulator through the same
code path as hardware (BrainFlow's "synthetic board" idea). ``import sim``
registers the handler (``serial.protocol_handler_packages``).

URL: ``sim://SCENARIO?key=value&...``

========== =============================================================
cups       1..16 (default 4)
rate       sample rate, 10..2000 Hz (default 100)
seed       random seed (default 0)
speed      device seconds per wall second (default 1); 0 = as fast as
           the reader reads
format     ``binary`` (default) or ``text`` (Arduino serial plotter)
duration   device seconds after which the device falls silent (default:
           the scenario's own; none = forever)
other      passed to the scenario, e.g. ``sensor_offset_kpa=1.2``
========== =============================================================

An unknown scenario or a bad parameter raises ``serial.SerialException``
with one line saying which. ``read(size)`` blocks up to ``timeout`` while
device time advances with the wall clock x speed.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

#: Keys of a sim:// URL that configure the device rather than the scenario.
DEVICE_KEYS = ("cups", "rate", "seed", "speed", "format", "duration")
#: Device time produced per step when speed=0 (as fast as the reader reads), s.
AFAP_CHUNK_S = 0.1
#: Output not yet read beyond this many bytes is dropped (an OS serial buffer
#: overflowing), so a reader that never reads cannot exhaust memory.
MAX_BUFFER = 4 << 20
#: Longest single nap inside read() (s), so close() and cancel_read() are quick.
MAX_NAP_S = 0.05
#: Device time produced per device call when paced (s). Bytes are produced when
#: the reader asks, so bigger steps cost no latency, only fewer calls.
PACED_CHUNK_S = 0.5


@dataclass(frozen=True)
class SimURL:
    """A parsed ``sim://`` URL."""

    scenario: str = "normal"
    cups: int = 4
    rate_hz: int = 100
    seed: int = 0
    speed: float = 1.0
    fmt: str = "binary"
    duration_s: float | None = None
    params: dict[str, str] = field(default_factory=dict)


def _as(kind: type, key: str, text: str) -> object:
    try:
        value = kind(text)
    except ValueError:
        raise SerialException(f"sim:// parameter {key}={text!r} is not a{'n' if kind is int else ''} "
                              f"{kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise SerialException(f"sim:// parameter {key}={text!r} is not a finite number")
    return value


def parse_url(url: str) -> SimURL:
    """``sim://SCENARIO?k=v&...`` -> :class:`SimURL`; SerialException when malformed."""
    from sim.device import FORMATS

    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "sim":
        raise SerialException(f"expected a sim://SCENARIO URL, not {url!r}")
    scenario = (parts.netloc + parts.path).strip("/") or "normal"
    try:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SerialException(f"malformed query in {url!r}: use sim://SCENARIO?key=value&...") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise SerialException(f"sim:// parameter {key} is given twice")
        values[key] = value
    fields: dict[str, object] = {}
    if "cups" in values:
        fields["cups"] = _as(int, "cups", values.pop("cups"))
    if "rate" in values:
        fields["rate_hz"] = _as(int, "rate", values.pop("rate"))
    if "seed" in values:
        fields["seed"] = _as(int, "seed", values.pop("seed"))
    if "speed" in values:
        speed = _as(float, "speed", values.pop("speed"))
        if speed < 0:
            raise SerialException(f"sim:// speed must be >= 0 (0 = as fast as possible), not {speed:g}")
        fields["speed"] = speed
    if "format" in values:
        fmt = values.pop("format").lower()
        if fmt not in FORMATS:
            raise SerialException(f"sim:// format must be {' or '.join(FORMATS)}, not {fmt!r}")
        fields["fmt"] = fmt
    if "duration" in values:
        text = values.pop("duration")
        if text.lower() not in ("", "none", "inf"):
            fields["duration_s"] = _as(float, "duration", text)
    # The scenario coerces each string to the type of the parameter's default.
    return SimURL(scenario=scenario, params=dict(values), **fields)  # type: ignore[arg-type]


def make_url(scenario: str, **params: object) -> str:
    """``make_url("normal", cups=8, rate=250)`` -> ``"sim://normal?cups=8&rate=250"``.
    ``None`` values are left out; booleans are written true/false."""
    query = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        query.append((key, str(value)))
    text = urllib.parse.urlencode(query)
    return f"sim://{urllib.parse.quote(scenario, safe='')}" + (f"?{text}" if text else "")


class Serial(SerialBase):
    """A pyserial port backed by an in-process :class:`~sim.device.VirtualDevice`.

    Serial settings (baud rate, parity, ...) are accepted and ignored, as by a
    USB CDC-ACM device. Thread-safe for one reader and one writer thread.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._device = None
        self._pacer = None
        self._afap = False
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.config: SimURL | None = None
        #: Bytes lost because the reader did not keep up (MAX_BUFFER).
        self.dropped_bytes = 0
        super().__init__(*args, **kwargs)

    # -- open / close -------------------------------------------------------------
    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        from sim.device import SimConfigError, VirtualDevice, make_simulation
        from sim.transports import Pacer

        cfg = parse_url(self._port)
        try:
            sim = make_simulation(cfg.scenario, cups=cfg.cups, rate_hz=cfg.rate_hz,
                                  seed=cfg.seed, duration_s=cfg.duration_s, **cfg.params)
        except SimConfigError as exc:
            raise SerialException(str(exc)) from None
        self.config = cfg
        self._device = VirtualDevice(sim, cfg.fmt, cfg.seed)
        self._afap = cfg.speed == 0
        self._pacer = Pacer(self._device, cfg.speed or 1.0, cfg.duration_s,
                            max_chunk_s=PACED_CHUNK_S)
        self._buf = bytearray()
        self._cancel.clear()
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        self._cancel.set()
        with self._lock:
            self._buf = bytearray()

    def _reconfigure_port(self, *args, **kwargs) -> None:
        """Serial settings mean nothing to a simulated USB device."""

    @property
    def device(self):
        """The :class:`~sim.device.VirtualDevice` behind this port (None before
        the first open; kept after close so its counters can be read)."""
        return self._device

    # -- producing ------------------------------------------------------------------
    def _pump(self, want: int = 0) -> None:
        """Move what the device has sent by now into the input buffer. With
        speed=0, produce until ``want`` bytes are buffered (or the run ended)."""
        with self._lock:
            pacer = self._pacer
            if pacer is None:
                return
            if self._afap:
                while len(self._buf) < want and not pacer.finished:
                    step = min(pacer.end_s, pacer.cursor_s + AFAP_CHUNK_S)
                    self._append(self._device.produce_until(step))
                    pacer.cursor_s = step
                # Replies to commands go out even when nothing more is wanted.
                self._append(self._device.produce_until(pacer.cursor_s))
                return
            for chunk in pacer.chunks():
                self._append(chunk)

    def _append(self, data: bytes) -> None:
        room = MAX_BUFFER - len(self._buf)
        if len(data) > room:
            self.dropped_bytes += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self._buf += data

    # -- the pyserial API --------------------------------------------------------------
    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        self._pump(1 if self._afap else 0)
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; waits up to ``timeout`` s (None: until ``size``
        bytes came) while the device produces in step with the wall clock."""
        if not self.is_open:
            raise PortNotOpenError()
        timeout = self._timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._pump(size)
            if len(self._buf) >= size or not self.is_open:
                break
            now = time.monotonic()
            left = math.inf if deadline is None else deadline - now
            if left <= 0:
                break
            assert self._pacer is not None
            nap = min(left, MAX_NAP_S, max(self._pacer.wait_s(), 0.001))
            if self._cancel.wait(nap):
                self._cancel.clear()
                break
        with self._lock:
            data = bytes(self._buf[:size])
            del self._buf[:size]
        return data

    def write(self, data: bytes) -> int:
        """Host -> device bytes; commands are executed at the present device time."""
        if not self.is_open:
            raise PortNotOpenError()
        data = bytes(data)
        self._pump()  # bring the device clock up to now before it acts
        assert self._device is not None
        self._device.receive(data)
        return len(data)

    def flush(self) -> None:
        """Writes are delivered at once; nothing to wait for."""

    def reset_input_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        self._pump()
        with self._lock:
            self._buf.clear()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    @property
    def out_waiting(self) -> int:
        return 0

    def cancel_read(self) -> None:
        self._cancel.set()

    def cancel_write(self) -> None:
        """Writes never block."""

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True


__all__ = ["DEVICE_KEYS", "Serial", "SimURL", "make_url", "parse_url"]
