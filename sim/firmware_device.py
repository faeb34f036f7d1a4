"""A simulated board whose brain is the reference firmware's C core.

:class:`FirmwareDevice` is a :class:`sim.device.ByteDevice` like
:class:`sim.device.VirtualDevice`, so every transport (pty, TCP, file,
``sim://``) can run it, but every byte it sends and every decision it takes
come from the compiled C core (``firmware_bridge.cfirmware``): framing,
command parsing and replies, retries, regulator, interlock, sensor checks,
calibration and tare, sample scheduling, host-loss and overrun events.

Python supplies the world around the microcontroller, from the same scenario
(``sim.engine.Simulation``: its parameters and script), with the engine's own
plant model (``sim.engine.CupPlant``: cup physics in segments, the script's
cup conditions, the sensor's noise streams) stepped one sample at a time:

* before each sample: the segments that ran out end, the script's actions
  due act (``apply``, leaks, detachment, pump and line faults, sensor
  faults, the calibration rig); scripted ``start``/``stop``/``vent`` are
  pressed on the unit's own controls (``cm_local_command``: executed, no
  reply on the wire);
* the sensor chain (``sim.sensor``) gives ADC counts; the ADC rounds to the
  nearest code (the ATmega328P's ideal transfer, first step at 0.5 LSB),
  which is what the firmware's ``counts / 2^bits`` conversion assumes;
* the firmware takes the sample and drives pump and valve; a cup whose
  outputs changed starts a new segment there;
* the link: silent and lost windows, isolated dropped frames, corrupted bytes.

Differences from the Python device are the firmware's (docs/firmware.md):
the interlock acts on the firmware's reading and is always fitted
(``interlock=false`` sets the limit to 100 kPa instead), the device applies
calibration itself and tares after calibrating, a sensor is flagged stuck
only while its pump is driven, and PUMP_ON is the drive output.

Device time is the simulation's; the C core's 32-bit µs clock wraps as on the
real board and is unwrapped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from firmware_bridge import cfirmware
from firmware_bridge.protocol import ALL_CUPS, HEADER_SIZE, InfoFlags, MsgType, SensorModel
from sim import sensor
from sim.device import SharedDevice, SimConfigError
from sim.engine import CupPlant

__all__ = ["FirmwareDevice", "FirmwareCounters"]

_US = 1_000_000
_WRAP = 1 << 32
_NOISE_BLOCK = 4096
#: Isolated dropped frames keep this far (s) from a loss window (as the engine).
_DROP_GUARD_S = 0.5
#: Without an interlock fitted the firmware's limit goes to its maximum.
_NO_INTERLOCK_LIMIT_KPA = 100.0
#: Script actions that are the practitioner pressing the unit's buttons.
_BUTTONS = {"start": MsgType.START, "stop": MsgType.STOP, "vent": MsgType.VENT}


@dataclass(slots=True)
class FirmwareCounters:
    """What the device did (monotonic)."""

    samples: int = 0            #: control ticks run by the firmware
    frames_sent: int = 0        #: frames put on the line (all types)
    samples_sent: int = 0       #: SAMPLE frames put on the line
    bytes_out: int = 0          #: bytes put on the line
    frames_unsent: int = 0      #: frames the link swallowed (silent, lost, dropped)
    corrupted_bytes: int = 0
    bytes_in: int = 0
    bytes_ignored: int = 0      #: host bytes that arrived while the link was cut
    local_commands: int = 0     #: scripted start/stop/vent pressed on the unit
    local_refused: int = 0      #: of which the firmware refused (e.g. sensor fault)


class FirmwareDevice(SharedDevice):
    """The scenario of ``sim`` run by the C firmware core.

    sim: a :class:`sim.engine.Simulation` (its parameters, script, cup count,
        rate, seed, duration and link windows; its own regulator never runs).
    fmt: "binary" only (the firmware speaks wire protocol frames).
    seed: seeds the noisy-link model (as VirtualDevice); the sensor noise
        follows ``sim.seed`` like the Python engine.
    firmware: None (this package's C core), a firmware source directory to
        build, or a host library built by ``cfirmware.build_library``.

    Like :class:`sim.device.VirtualDevice` it is a :class:`SharedDevice`:
    ``receive`` and ``produce*`` run under one lock, :meth:`call_locked` runs
    a function under it from another thread, and output hooks see every byte
    it sends (called for the produce calls that sent bytes, with ``samples``
    None: the samples are the C core's; the true suction of the last one is
    ``true_suction``).
    """

    def __init__(self, sim, fmt: str = "binary", seed: int = 0,
                 firmware: str | os.PathLike | None = None) -> None:
        if fmt != "binary":
            raise SimConfigError("the firmware speaks binary frames only (no --format text)")
        p = sim.params
        self.sim = sim
        self.fmt = fmt
        self.cups = cups = int(sim.cups)
        self.counters = FirmwareCounters()
        super().__init__()  # the lock and the output hooks (SharedDevice)
        script = sim.script
        # The plant: the engine's model of cups, pumps, valves and sensors, without
        # the buttons (they go to the firmware) and without an interlock of its own.
        plant_script = replace(script, actions=[a for a in script.actions
                                                if a.kind not in _BUTTONS])
        try:
            self.plant = CupPlant(p, plant_script, list(range(cups)), cups, int(sim.rate_hz),
                               int(sim.seed))
        except ValueError as exc:
            raise SimConfigError(str(exc)) from None
        self.plant.interlock = False
        self.sp = self.plant.sp
        if self.sp.transfer.absolute:
            raise SimConfigError("the firmware reads a gauge sensor (MPXV6115V) only, "
                                 f"not sensor={self.sp.kind}")
        if not 8 <= self.sp.adc_bits <= 16:
            raise SimConfigError(f"the firmware takes 8..16-bit ADC counts, not "
                                 f"adc_bits={self.sp.adc_bits}")
        self._buttons = sorted((int(round(a.t * _US)), n, a.cup, _BUTTONS[a.kind])
                               for n, a in enumerate(script.actions) if a.kind in _BUTTONS)
        self._bi = 0
        self._noise = np.zeros((0, cups))
        self._drops = np.zeros((0, cups))
        self._ni = 0
        # link
        self._silent = [(float(a), float(b)) for a, b in getattr(sim, "silent_windows", ())]
        self._lost = [(float(a), float(b)) for a, b in getattr(sim, "lost_windows", ())]
        self._drop_prob = float(getattr(script, "drop_prob", 0.0) or 0.0)
        self._drop_link_rng = np.random.default_rng([int(sim.seed), 4])
        self._drop_prev = False
        self._corrupt_rate = float(getattr(sim, "link_corruption_rate", 0.0) or 0.0)
        self._corrupt_rng = np.random.default_rng([int(seed), 0x6E6F697379])

        # the firmware, booted at the first sample's time with the scenario's settings
        t0_us = int(self.plant.clock.us0)
        limit = float(p["hard_limit_kpa"]) if bool(p["interlock"]) else _NO_INTERLOCK_LIMIT_KPA
        band = (float(p["band_low_kpa"]), float(p["band_high_kpa"]))
        try:
            self.core = cfirmware.CoreDevice(
                cups, serial=f"FW-{int(sim.seed) % 10**8:08d}", adc_bits=self.sp.adc_bits,
                sensor_model=int(SensorModel.SIMULATED), info_flags=int(InfoFlags.SIMULATED),
                t_us=t0_us, firmware=firmware, rate_hz=int(sim.rate_hz), band_kpa=band,
                limit_kpa=limit)
        except ValueError as exc:
            raise SimConfigError(f"firmware: {exc}") from None
        self._t_next = t0_us           # unwrapped time of the next sample
        self._pending = bytearray(self._link(self.core.read(), t0_us * 1e-6,  # INFO, BOOT
                                             allow_drop=False))
        self.pump = np.zeros(cups, dtype=bool)
        self.valve = np.ones(cups, dtype=bool)   # boot: vented
        self._drive(np.arange(cups), t0_us)
        self.true_suction = np.zeros(cups)  #: at the last sample, kPa (reference gauge)

    # -- ByteDevice ------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Device time of the next sample, s."""
        return self._t_next * 1e-6

    @property
    def duration_s(self) -> float | None:
        d = getattr(self.sim, "duration_s", None)
        return None if d is None else float(d)

    @property
    def rate_hz(self) -> int:
        return self.core.rate_hz

    def receive(self, data: bytes) -> None:
        """Host -> device bytes, at the present device time (the next sample's)."""
        if not data:
            return
        with self._lock:
            self.counters.bytes_in += len(data)
            if self._cut(self.t_s):
                self.counters.bytes_ignored += len(data)
                return
            self.core.set_time(self._t_next % _WRAP)
            self.core.feed(bytes(data))
            self._pending += self._link(self.core.read(), self.t_s, allow_drop=False)

    def produce_until(self, t_s: float) -> bytes:
        """Run the unit up to device time ``t_s`` (samples before it) and return
        what it sent: queued replies, then samples and events in time order."""
        with self._lock:
            out = self._pending
            self._pending = bytearray()
            end_us = int(round(float(t_s) * _US))
            while self._t_next < end_us:
                out += self._tick()
            return self._finish(out)

    def produce(self, n: int) -> bytes:
        """Run ``n`` samples and return what the unit sent."""
        with self._lock:
            out = self._pending
            self._pending = bytearray()
            for _ in range(int(n)):
                out += self._tick()
            return self._finish(out)

    def _finish(self, out: bytearray) -> bytes:
        self.counters.bytes_out += len(out)
        data = bytes(out)
        self._publish_output(data)
        return data

    # -- one sample -------------------------------------------------------------------
    def _tick(self) -> bytes:
        plant, t_us = self.plant, self._t_next
        t_s = t_us * 1e-6
        # segments that ran out before this sample end where they ran out
        expired = np.flatnonzero(plant.seg_us <= t_us)
        while expired.size:
            plant.anchor(expired, plant.seg_us[expired])
            expired = np.flatnonzero(plant.seg_us <= t_us)
        # the script: conditions due at this sample act from it on
        due = np.flatnonzero(plant.act_us <= t_us)
        for j in due:
            plant.apply_due(int(j), t_us)
        if due.size:
            plant.anchor(due, np.full(due.size, t_us, dtype=np.int64))
        while self._bi < len(self._buttons) and self._buttons[self._bi][0] <= t_us:
            _, _, cup, typ = self._buttons[self._bi]
            self._bi += 1
            self._press(cup, typ, t_us)
        # the sensor and its ADC
        cols = np.arange(self.cups)
        p, y, amb = plant.state_at(cols, np.full(self.cups, t_us, dtype=np.int64))
        self.true_suction = amb - p
        if self._ni >= self._noise.shape[0]:
            self._noise = np.stack([r.standard_normal(_NOISE_BLOCK) for r in plant.noise_rng], 1)
            self._drops = np.stack([r.random(_NOISE_BLOCK) for r in plant.drop_rng], 1)
            self._ni = 0
        noise, drop = self._noise[self._ni], self._drops[self._ni]
        self._ni += 1
        press = sensor.sensor_input(y, amb - y, plant.s_gain, plant.s_off, self.sp)
        v = sensor.output_voltage(press, t_s, noise, self.sp, plant.phase)
        levels = self.sp.levels
        code = np.clip(np.rint(v * (levels / self.sp.supply_v)), 0, levels - 1).astype(np.int64)
        if plant.fault.any():
            code = sensor.inject(code[None, :], plant.fault, plant.stuck_code,
                                 (drop < plant.drop_rate)[None, :], self.sp)[0]
        plant.last_code = code  # a sensor that sticks freezes at its last code
        counts = np.where(code < 0, 0, code)  # no reading: the input floats to 0 V
        # the firmware's tick
        pump, valve = self.core.step(t_us % _WRAP, counts)
        changed = np.flatnonzero((pump != self.pump) | (valve != self.valve))
        self.pump, self.valve = pump, valve
        if changed.size:
            self._drive(changed, t_us)
        self.counters.samples += 1
        out = self._link(self.core.read(), t_s, allow_drop=True)
        nxt = self.core.next_sample_us
        self._t_next = t_us + ((nxt - t_us) % _WRAP)
        return out

    def _drive(self, cols: np.ndarray, t_us: int) -> None:
        """The firmware's outputs reach the plant: new segments for ``cols`` at ``t_us``.
        (A stuck-on pump driver runs whatever the firmware says: the plant's own.)"""
        plant = self.plant
        plant.u[cols], plant.valve[cols] = self.pump[cols], self.valve[cols]
        plant.R[cols], plant.L[cols] = False, False
        plant.anchor(cols, np.full(cols.size, t_us, dtype=np.int64))

    def _press(self, cup: int, typ: int, t_us: int) -> None:
        if cup >= self.cups:
            return
        mask = ALL_CUPS if cup < 0 else 1 << cup
        self.core.set_time(t_us % _WRAP)
        self.counters.local_commands += 1
        if self.core.local(typ, mask.to_bytes(2, "little")) is not None:
            self.counters.local_refused += 1

    # -- link -------------------------------------------------------------------------
    def _cut(self, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self._silent)

    def _link(self, data: bytes, t_s: float, allow_drop: bool) -> bytes:
        """What of the firmware's bytes at time ``t_s`` reaches the host."""
        if not data:
            return b""
        frames = _split(data)
        if self._cut(t_s) or any(a <= t_s < b for a, b in self._lost):
            self.counters.frames_unsent += len(frames)
            return b""
        if allow_drop and self._drop_prob > 0:
            cand = bool(self._drop_link_rng.random() < self._drop_prob)
            near = any(a - _DROP_GUARD_S <= t_s < b + _DROP_GUARD_S
                       for a, b in self._silent + self._lost)
            drop = cand and not self._drop_prev and not near
            self._drop_prev = cand
            if drop:
                kept = [f for f in frames if f[3] != MsgType.SAMPLE]
                self.counters.frames_unsent += len(frames) - len(kept)
                frames = kept
        self.counters.frames_sent += len(frames)
        self.counters.samples_sent += sum(1 for f in frames if f[3] == MsgType.SAMPLE)
        out = bytearray(b"".join(frames))
        if self._corrupt_rate > 0 and out:
            hit = np.flatnonzero(self._corrupt_rng.random(len(out)) < self._corrupt_rate)
            if hit.size:
                arr = np.frombuffer(out, dtype=np.uint8).copy()
                arr[hit] ^= self._corrupt_rng.integers(1, 256, hit.size, dtype=np.uint8)
                out = bytearray(arr.tobytes())
                self.counters.corrupted_bytes += int(hit.size)
        return bytes(out)


def _split(data: bytes) -> list[bytes]:
    """The firmware's output as whole frames (it only ever sends whole, good frames)."""
    out, i = [], 0
    while i < len(data):
        n = HEADER_SIZE + data[i + 4] + 2
        out.append(data[i:i + n])
        i += n
    return out
