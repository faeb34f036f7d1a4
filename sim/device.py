"""The virtual device: a :class:`~sim.engine.Simulation` speaking wire protocol v1.

:class:`VirtualDevice` turns simulation output into the bytes a cupmon board
would send (docs/protocol.md) and answers host commands, independent of any
transport: the pty, TCP, file and ``sim://`` transports (``sim.transports``,
``sim.protocol_sim``) only move its bytes and pace it against the wall clock.

Device time is simulation time; for a given scenario, seed and sequence of
commands (at given device times) the byte stream is identical run after run.

Swapping the device logic: the transports need only the :class:`ByteDevice`
protocol, and the command handling of :class:`VirtualDevice` is delegated to a
:class:`Controller` (:class:`SimController` by default). A device driven by
the reference C firmware core can plug in at either level (``cupsim
--firmware`` is meant to, later).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import numpy as np

from firmware_bridge.codec import (
    Command,
    Decoder,
    encode_ack,
    encode_cal_data,
    encode_event,
    encode_info,
    encode_nack,
    encode_samples,
    encode_text_samples,
)
from firmware_bridge.protocol import (
    ALL_CUPS,
    MAX_CUPS,
    MAX_RATE_HZ,
    MIN_RATE_HZ,
    SEQ_WRAP,
    EventCode,
    MsgType,
    NackReason,
)

if TYPE_CHECKING:  # the engine is only needed by whoever builds a Simulation
    from sim.engine import SimOutput, Simulation

log = logging.getLogger(__name__)

FORMATS = ("binary", "text")
#: No host frame for this long (device s) after hearing one -> EVENT HOST_LOST
#: (docs/protocol.md 3.3; same constant as the C core).
HOST_LOST_S = 5.0
#: Reset cause sent in the BOOT event: 0 = power-on.
RESET_POWER_ON = 0
#: Gaps between corrupted bytes are drawn this many at a time (see _Corruptor).
_CORRUPT_BATCH = 256


T = TypeVar("T")
#: An output hook: ``hook(data, samples)`` after every produce call that sent
#: bytes or took samples. ``data``: exactly the bytes the call returned (what
#: goes on the line, after the noisy-link model); ``samples``: the
#: :class:`~sim.engine.SimOutput` of the samples taken (device time µs,
#: reported and true suction kPa, status, send), or None when none were taken
#: or the device has no SimOutput (:class:`sim.firmware_device.FirmwareDevice`).
OutputHook = Callable[[bytes, "SimOutput | None"], None]


class ByteDevice(Protocol):
    """What a transport needs from a device: bytes in, bytes out, a clock."""

    @property
    def t_s(self) -> float:
        """Device clock, s (time of the last sample produced)."""

    @property
    def duration_s(self) -> float | None:
        """Where the device's run ends by itself (device s), or None."""

    @property
    def rate_hz(self) -> int:
        """Present sample rate, Hz."""

    def receive(self, data: bytes) -> None:
        """Bytes from the host."""

    def produce_until(self, t_s: float) -> bytes:
        """Run the device up to device time ``t_s`` and return what it sent."""


class Controller(Protocol):
    """Executes one well-formed command; returns (NackReason or None, ACK data)."""

    def execute(self, cmd: Command) -> tuple[int | None, bytes]: ...


class SimController:
    """Command logic of the simulated board: checks cups, then asks the Simulation."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def _mask(self, mask: int) -> int | None:
        """Mask limited to existing cups; None if it names a cup that does not
        exist or none at all (BAD_CUP), like the C core's ``mask_cups``."""
        every = (1 << self.sim.cups) - 1
        if mask == ALL_CUPS:
            return every
        if mask == 0 or mask & ~every:
            return None
        return mask

    def execute(self, cmd: Command) -> tuple[int | None, bytes]:
        sim, t = self.sim, cmd.type
        if t in (MsgType.PING, MsgType.GET_INFO):
            return None, b""
        if t in (MsgType.START, MsgType.STOP, MsgType.VENT, MsgType.ZERO, MsgType.SET_BAND):
            mask = self._mask(cmd.mask)
            if mask is None:
                return NackReason.BAD_CUP, b""
            if t == MsgType.START:
                return sim.start(mask), b""
            if t == MsgType.STOP:
                return sim.stop(mask), b""
            if t == MsgType.VENT:
                return sim.vent(mask), b""
            if t == MsgType.ZERO:
                return sim.zero(mask), b""
            return sim.set_band(mask, cmd.low_kpa, cmd.high_kpa), b""
        if t == MsgType.SET_RATE:
            return sim.set_rate(cmd.rate_hz), b""
        if t == MsgType.SET_LIMIT:
            return sim.set_limit(cmd.limit_kpa), b""
        if t in (MsgType.WRITE_CAL, MsgType.READ_CAL):
            if not 1 <= cmd.cup <= sim.cups:
                return NackReason.BAD_CUP, b""
            if t == MsgType.WRITE_CAL:
                return sim.write_cal(cmd.cup, tuple(cmd.coeffs)), b""
            coeffs, valid = sim.read_cal(cmd.cup)
            return None, encode_cal_data(cmd.cup, tuple(coeffs), bool(valid))
        return NackReason.UNKNOWN_COMMAND, b""


@dataclass(slots=True)
class DeviceCounters:
    """What the device did, for ground truth and debugging (monotonic)."""

    frames_sent: int = 0        #: frames put on the line (all types)
    samples_sent: int = 0       #: SAMPLE frames (binary) or lines (text) put on the line
    samples_dropped: int = 0    #: samples not transmitted (seq consumed: the host sees a gap)
    frames_unsent: int = 0      #: frames of any type that took a seq but were not transmitted
    events_sent: int = 0
    replies_sent: int = 0       #: ACK + NACK (+ INFO after GET_INFO)
    bytes_out: int = 0
    corrupted_bytes: int = 0    #: bytes altered by the noisy-link model
    commands: int = 0           #: command frames received
    commands_repeated: int = 0  #: retries answered again without executing
    bytes_ignored: int = 0      #: host bytes ignored (text format, or during signal loss)


class _Corruptor:
    """Flips bytes of the output stream at a given probability per byte.

    Positions are drawn as geometric gaps over the absolute byte offset of the
    stream in fixed batches, so the corrupted positions depend on the seed and
    the rate only, not on how the stream was cut into chunks.
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0x6E6F697379])  # "noisy": own stream
        self._rate = 0.0
        self._pos = np.empty(0, dtype=np.int64)
        self._xor = np.empty(0, dtype=np.uint8)
        self._i = 0

    def _refill(self, start: int) -> None:
        gaps = self._rng.geometric(self._rate, _CORRUPT_BATCH).astype(np.int64)
        self._pos = start - 1 + np.cumsum(gaps)
        self._xor = self._rng.integers(1, 256, _CORRUPT_BATCH, dtype=np.uint8)
        self._i = 0

    def apply(self, buf: bytearray, offset: int, rate: float) -> int:
        """Corrupt ``buf`` (stream bytes ``offset ..``) in place; returns the count."""
        if rate <= 0.0 or not buf:
            self._rate = 0.0
            return 0
        rate = min(float(rate), 1.0)
        end = offset + len(buf)
        if rate != self._rate or self._i >= len(self._pos):
            self._rate = rate
            self._refill(offset)
        count = 0
        arr = np.frombuffer(buf, dtype=np.uint8).copy()
        while True:
            pos, i = self._pos, self._i
            stop = i + int(np.searchsorted(pos[i:], end))
            sel = pos[i:stop] - offset
            sel_ok = sel >= 0  # positions from before this chunk (cannot happen) are skipped
            arr[sel[sel_ok]] ^= self._xor[i:stop][sel_ok]
            count += int(sel_ok.sum())
            self._i = stop
            if stop < len(pos):
                break
            self._refill(int(pos[-1]) + 1)
        buf[:] = arr.tobytes()
        return count


class SharedDevice:
    """The part of a device that other threads use while a transport runs it:
    one re-entrant lock held by every produce and receive call,
    :meth:`call_locked` to act on the device under it, and output hooks
    (:data:`OutputHook`) to see what it sends. Subclasses call
    ``super().__init__()``, hold ``self._lock`` around ``receive`` and
    ``produce*``, and end every produce call with :meth:`_publish_output`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._hooks: list[OutputHook] = []

    def call_locked(self, fn: Callable[[Self], T]) -> T:
        """Run ``fn(device)`` under the device's lock and return its result.

        The transport's thread produces samples and executes commands under
        the same lock, so ``fn`` sees a consistent state and a change it makes
        (e.g. ``d.sim.set_reference(12.0)``) acts from the next sample on,
        never in the middle of a produce call. ``fn`` runs on the caller's
        thread and holds up the device while it runs: keep it short. The lock
        is re-entrant (an output hook may call this)."""
        with self._lock:
            return fn(self)

    def add_output_hook(self, hook: OutputHook) -> None:
        """Call ``hook(data, samples)`` after every produce call that sent
        bytes or took samples (:data:`OutputHook`): in stream order, on the
        producing thread, under the device lock (so it must not block; a hook
        that raises is logged and the device carries on)."""
        with self._lock:
            self._hooks.append(hook)

    def remove_output_hook(self, hook: OutputHook) -> None:
        """Stop calling ``hook``; a hook not added is ignored."""
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def _publish_output(self, data: bytes, samples: SimOutput | None = None) -> None:
        """Give every hook what a produce call sent (``samples`` with no rows
        counts as none); nothing when it sent nothing and took no sample."""
        if samples is not None and not samples.time_us.shape[0]:
            samples = None
        if not self._hooks or not (data or samples is not None):
            return
        for hook in list(self._hooks):
            try:
                hook(data, samples)
            except Exception:
                log.exception("output hook %r of %s failed", hook, type(self).__name__)


class VirtualDevice(SharedDevice):
    """A simulated cupmon board: ``receive`` host bytes, ``produce_until`` device bytes.

    sim: the Simulation it runs (device clock = ``sim.t_s``).
    fmt: "binary" (protocol frames) or "text" (Arduino serial-plotter lines;
        host bytes are ignored, there is no INFO, EVENT or ACK).
    seed: seeds the noisy-link model (``sim.link_corruption_rate``).
    controller: executes commands (default :class:`SimController`).

    Thread-safe: a transport may call ``receive`` and ``produce_until`` from
    different threads. Another thread reaches the device state (``sim``,
    ``counters``) consistently through :meth:`call_locked`, and sees what the
    device sends through :meth:`add_output_hook`.
    """

    def __init__(self, sim: Simulation, fmt: str = "binary", seed: int = 0,
                 controller: Controller | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.sim = sim
        self.fmt = fmt
        self.controller: Controller = controller if controller is not None else SimController(sim)
        self.counters = DeviceCounters()
        super().__init__()  # the lock and the output hooks (SharedDevice)
        self._decoder = Decoder("binary")
        self._corrupt = _Corruptor(seed)
        self._seq = 0
        self._booted = False
        self._pending = bytearray()  # replies waiting for the next produce
        self._last_cmd: Command | None = None
        self._last_reply: tuple[int | None, bytes] = (None, b"")
        self._last_host_s: float | None = None  # device time of the last host frame
        self._host_lost_sent = False

    # -- ByteDevice -----------------------------------------------------------
    @property
    def t_s(self) -> float:
        return float(self.sim.t_s)

    @property
    def duration_s(self) -> float | None:
        d = self.sim.duration_s
        return None if d is None else float(d)

    @property
    def rate_hz(self) -> int:
        return int(self.sim.rate_hz)

    @property
    def seq(self) -> int:
        """Seq the next device frame will carry."""
        return self._seq

    def receive(self, data: bytes) -> None:
        """Host -> device bytes. Every complete command frame is executed (at
        the present device time) and answered; the answers go out ahead of
        the next samples."""
        if not data:
            return
        with self._lock:
            if self.fmt == "text" or self._silent_at(self.t_s):
                # A text sketch has no command parser; during signal loss the
                # link is cut both ways.
                self.counters.bytes_ignored += len(data)
                return
            for msg in self._decoder.feed(bytes(data)).messages:
                if isinstance(msg, Command):
                    self._command(msg)

    def produce_until(self, t_s: float) -> bytes:
        """Advance the simulation to device time ``t_s`` (s) and return the
        bytes sent meanwhile: queued replies, then samples and events in time order."""
        with self._lock:
            if t_s <= self.sim.t_s and self._booted and not self._pending:
                return b""
            out = self._start_output()
            samples = None
            if t_s > self.sim.t_s:
                samples = self.sim.advance_to(t_s)
                self._emit(samples, out)
            return self._finish_output(out, samples)

    def produce(self, n: int) -> bytes:
        """Advance the simulation by ``n`` samples and return the bytes sent."""
        with self._lock:
            out = self._start_output()
            samples = None
            if n > 0:
                samples = self.sim.advance(int(n))
                self._emit(samples, out)
            return self._finish_output(out, samples)

    # -- commands ---------------------------------------------------------------
    def _command(self, cmd: Command) -> None:
        self.counters.commands += 1
        now = self.t_s
        self._last_host_s = now
        self._host_lost_sent = False
        if cmd == self._last_cmd and cmd.type not in (MsgType.PING, MsgType.GET_INFO):
            # A retry (same seq, type and payload) of what we just executed:
            # answer it again, never execute twice (docs/protocol.md 3.4).
            self.counters.commands_repeated += 1
            reason, data = self._last_reply
        elif cmd.error is not None:
            reason, data = int(cmd.error), b""
        else:
            reason, data = self.controller.execute(cmd)
        self._last_cmd = cmd
        self._last_reply = (reason, data)
        t_us = _us(now)
        if reason is None:
            self._pending += encode_ack(cmd.seq, int(cmd.type), self._next_seq(), t_us, data)
            if cmd.type == MsgType.GET_INFO:
                self._pending += encode_info(self.sim.info, self._next_seq(), t_us)
                self.counters.replies_sent += 1
                self.counters.frames_sent += 1
        else:
            self._pending += encode_nack(cmd.seq, int(cmd.type), int(reason), self._next_seq(),
                                         t_us)
        self.counters.replies_sent += 1
        self.counters.frames_sent += 1

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % SEQ_WRAP
        return seq

    # -- output -----------------------------------------------------------------
    def _start_output(self) -> bytearray:
        out = bytearray()
        if not self._booted:
            self._booted = True
            if self.fmt == "binary":
                # Like the C core: INFO, then BOOT with the reset cause.
                t_us = _us(self.t_s)
                out += encode_info(self.sim.info, self._next_seq(), t_us)
                out += encode_event(EventCode.BOOT, 0, RESET_POWER_ON, self._next_seq(), t_us)
                self.counters.frames_sent += 2
                self.counters.events_sent += 1
        out += self._pending
        self._pending.clear()
        return out

    def _finish_output(self, out: bytearray, samples: SimOutput | None = None) -> bytes:
        rate = float(getattr(self.sim, "link_corruption_rate", 0.0) or 0.0)
        self.counters.corrupted_bytes += self._corrupt.apply(out, self.counters.bytes_out, rate)
        self.counters.bytes_out += len(out)
        data = bytes(out)
        self._publish_output(data, samples)
        return data

    def _host_lost_event(self, t_us: np.ndarray) -> list[tuple[int, int, int, int]]:
        """HOST_LOST, stamped 5 s after the last host frame, if that falls in
        this span of samples (and has not been said since the host was heard)."""
        last = self._last_host_s
        if last is None or self._host_lost_sent or not t_us.shape[0]:
            return []
        due = _us(last + HOST_LOST_S)
        if due > int(t_us[-1]):
            return []
        self._host_lost_sent = True
        return [(due, int(EventCode.HOST_LOST), 0, 0)]

    def _emit(self, o: SimOutput, out: bytearray) -> None:
        t_us = np.asarray(o.time_us, dtype=np.int64)
        n = int(t_us.shape[0])
        send = np.asarray(o.send, dtype=bool).copy() if n else np.zeros(0, dtype=bool)
        silent = self._silent_mask(t_us)
        send &= ~silent
        if self.fmt == "text":
            self._emit_text(o, t_us, send, out)
            return
        events = sorted(list(o.events) + self._host_lost_event(t_us), key=lambda e: int(e[0]))
        # An event goes after the samples taken at or before its time.
        cuts = np.searchsorted(t_us, np.array([int(e[0]) for e in events], dtype=np.int64),
                               side="right") if events else np.zeros(0, dtype=np.int64)
        start = 0
        for k in range(len(events) + 1):
            stop = int(cuts[k]) if k < len(events) else n
            if stop > start:
                self._emit_samples(o, t_us, send, start, stop, out)
                start = stop
            if k < len(events):
                ev_t, code, cup, value = events[k]
                seq = self._next_seq()
                if self._silent_at(int(ev_t) / 1e6):  # sent, but lost on a cut link
                    self.counters.frames_unsent += 1
                else:
                    out += encode_event(int(code), int(cup), int(value), seq, int(ev_t))
                    self.counters.frames_sent += 1
                    self.counters.events_sent += 1

    def _emit_samples(self, o: SimOutput, t_us: np.ndarray, send: np.ndarray, a: int, b: int,
                      out: bytearray) -> None:
        suction = np.asarray(o.suction_kpa)[a:b]
        data, self._seq = encode_samples(t_us[a:b], suction, np.asarray(o.status)[a:b],
                                         self._seq)
        keep = send[a:b]
        kept = int(keep.sum())
        if kept == b - a:
            out += data
        elif kept:
            # Fixed-size frames: drop the untransmitted rows; their seq stays used.
            rows = np.frombuffer(data, dtype=np.uint8).reshape(b - a, -1)
            out += rows[keep].tobytes()
        self.counters.frames_sent += kept
        self.counters.samples_sent += kept
        self.counters.samples_dropped += (b - a) - kept
        self.counters.frames_unsent += (b - a) - kept

    def _emit_text(self, o: SimOutput, t_us: np.ndarray, send: np.ndarray,
                   out: bytearray) -> None:
        kept = int(send.sum())
        if kept:
            out += encode_text_samples(t_us[send] / 1e6, np.asarray(o.suction_kpa)[send])
        self.counters.samples_sent += kept
        self.counters.samples_dropped += int(send.shape[0]) - kept

    # -- signal loss --------------------------------------------------------------
    def _loss_intervals(self) -> list[tuple[float, float]]:
        """[a, b) device-time windows in which nothing reaches the host: the
        scenario's silent device and lost-link windows (signal_loss)."""
        sim = self.sim
        return ([(float(a), float(b)) for a, b in getattr(sim, "silent_windows", ())]
                + [(float(a), float(b)) for a, b in getattr(sim, "lost_windows", ())])

    def _silent_at(self, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self._loss_intervals())

    def _silent_mask(self, t_us: np.ndarray) -> np.ndarray:
        mask = np.zeros(t_us.shape[0], dtype=bool)
        for a, b in self._loss_intervals():
            t = t_us / 1e6
            mask |= (t >= a) & (t < b)
        return mask


class SimConfigError(ValueError):
    """An impossible simulator setting; ``str()`` is one line for the user."""


def make_simulation(scenario: str, cups: int = 4, rate_hz: int = 100, seed: int = 0,
                    duration_s: float | None = None, **params: object) -> Simulation:
    """Build a Simulation, turning every impossible setting into one
    :class:`SimConfigError` line (unknown scenario, cups outside 1..16, rate
    outside 10..2000 Hz, duration <= 0, a parameter the scenario refuses).
    Scenario parameters may be strings (from a URL or the command line): the
    scenario coerces each to the type of its default."""
    from sim.engine import Simulation
    from sim.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        raise SimConfigError(f"unknown scenario {scenario!r} (known: {known})")
    if not 1 <= cups <= MAX_CUPS:
        raise SimConfigError(f"cups must be 1..{MAX_CUPS}, not {cups}")
    if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise SimConfigError(f"rate must be {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz, not {rate_hz}")
    if duration_s is not None and not duration_s > 0:
        raise SimConfigError(f"duration must be positive, not {duration_s:g} s")
    try:
        return Simulation(scenario, cups=cups, rate_hz=rate_hz, seed=seed,
                          duration_s=duration_s, **params)
    except (TypeError, ValueError, KeyError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise SimConfigError(f"scenario {scenario!r}: {text}") from None


def _us(t_s: float) -> int:
    return int(round(t_s * 1e6))


__all__ = ["ByteDevice", "Controller", "DeviceCounters", "FORMATS", "HOST_LOST_S",
           "OutputHook", "SharedDevice", "SimConfigError", "SimController", "VirtualDevice",
           "make_simulation"]
