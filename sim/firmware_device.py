"""A simulated board whose brain is the reference firmware's C core.

:class:`FirmwareDevice` is a :class:`sim.device.ByteDevice` like
:class:`sim.device.VirtualDevice`, so every transport (pty, TCP, file,
``sim://``) can run it, but every byte it sends and every decision it takes
come from the compiled C core (``firmware_bridge.cfirmware``): framing,
command parsing and replies, retries, regulator, interlock, sensor checks,
calibration and tare, sample scheduling, host-loss and overrun events.

Python supplies the world around the microcontroller, from the same scenario
(``sim.engine.Simulation``: its resolved parameters and script):

* the cups' gas physics (``sim.physics``: pump, seal leak, vent valve, tissue
  dome, ambient pressure), integrated sample by sample with the pump and
  valve the firmware drives;
* the sensor chain (``sim.sensor``: lag, offset/gain, supply ripple, noise,
  saturation, injected faults) ending in ADC counts. The ADC rounds to the
  nearest code (the ATmega328P's ideal transfer, first step at 0.5 LSB),
  which is what the firmware's ``counts / 2^bits`` conversion assumes;
* the practitioner and the faults of the script: ``apply``/``remove``,
  leaks, detachment, pump and line faults, sensor faults, the calibration
  rig; scripted ``start``/``stop``/``vent`` are pressed on the unit's own
  controls (``cm_local_command``: executed, no reply on the wire);
* the link: silent and lost windows, isolated dropped frames, corrupted bytes.

Differences from the Python device are the firmware's: the interlock acts on
the firmware's reading (not on the true suction), is always fitted
(``interlock=false`` sets the limit to 100 kPa instead), the device applies
calibration itself and tares after calibrating, and a sensor is flagged stuck
only while its pump is driven (docs/firmware.md).

Device time is the simulation's; the C core's 32-bit µs clock wraps as on the
real board and is unwrapped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from firmware_bridge import cfirmware
from firmware_bridge.protocol import (
    ALL_CUPS,
    HEADER_SIZE,
    InfoFlags,
    MsgType,
    SensorModel,
)
from sim import physics, sensor
from sim.device import SimConfigError
from sim.scenarios import per_cup
from sim.sensor import SensorFault, SensorParams

__all__ = ["FirmwareDevice", "FirmwareCounters"]

_US = 1_000_000
_WRAP = 1 << 32
_NOISE_BLOCK = 4096
#: Isolated dropped frames keep this far (s) from a loss window (as the engine).
_DROP_GUARD_S = 0.5
#: With a changing ambient a segment lasts at most this long (s), as in the engine.
_AMBIENT_STEP_S = 1.0
#: "Never", µs.
_NEVER = 1 << 50
#: Without an interlock fitted the firmware's limit goes to its maximum.
_NO_INTERLOCK_LIMIT_KPA = 100.0


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


class FirmwareDevice:
    """The scenario of ``sim`` run by the C firmware core.

    sim: a :class:`sim.engine.Simulation` (only its parameters, script, cup
        count, rate, seed, duration and link windows are used; its own
        engine does not run).
    fmt: "binary" only (the firmware speaks wire protocol frames).
    seed: seeds the noisy-link model (as VirtualDevice); the sensor noise
        follows ``sim.seed`` like the Python engine.
    firmware: None (this package's C core), a firmware source directory to
        build, or a host library built by ``cfirmware.build_library``.
    """

    def __init__(self, sim, fmt: str = "binary", seed: int = 0,
                 firmware: str | os.PathLike | None = None) -> None:
        if fmt != "binary":
            raise SimConfigError("the firmware speaks binary frames only (no --format text)")
        p = sim.params
        self.sim = sim
        self.fmt = fmt
        self.cups = cups = int(sim.cups)
        script = sim.script
        self.counters = FirmwareCounters()

        def col(key: str) -> np.ndarray:
            if key in script.cup_setup:
                return np.asarray(script.cup_setup[key], dtype=float)[:cups].copy()
            return per_cup(p[key], cups, key)

        # physics (mL, mL/s, kPa)
        self.V0 = col("cup_volume_ml")
        self.kt = col("tissue_ml_per_kpa")
        self.flow = col("pump_flow_l_min") * physics.L_MIN
        self.smax = col("pump_max_kpa")
        self.seal = col("seal_leak_l_min") * physics.L_MIN
        self.valve_g = float(p["valve_l_min"]) * physics.L_MIN
        self.open_g = float(p["open_l_min"]) * physics.L_MIN
        if script.ambient:
            self._amb_t = np.array([a for a, _ in script.ambient], dtype=float)
            self._amb_p = np.array([b for _, b in script.ambient], dtype=float)
        else:
            self._amb_t = np.array([0.0])
            self._amb_p = np.array([float(p["ambient_kpa"])])
        # sensor
        self.sp = SensorParams(
            kind=str(p["sensor"]), noise_kpa=float(p["noise_kpa"]), ripple=float(p["ripple"]),
            ripple_hz=float(p["ripple_hz"]), adc_bits=int(p["adc_bits"]),
            lag_s=float(p["lag_s"]), stuck_detect_s=float(p["stuck_detect_s"]),
            fault_clear_s=float(p["fault_clear_s"]))
        if self.sp.kind != "gauge":
            raise SimConfigError("the firmware reads a gauge sensor (MPXV6115V) only, "
                                 f"not sensor={self.sp.kind}")
        if not 8 <= self.sp.adc_bits <= 16:
            raise SimConfigError(f"the firmware takes 8..16-bit ADC counts, not "
                                 f"adc_bits={self.sp.adc_bits}")
        self.s_gain = per_cup(p["sensor_gain"], cups, "sensor_gain")
        self.s_off = per_cup(p["sensor_offset_kpa"], cups, "sensor_offset_kpa")
        seed_sim = int(sim.seed)
        self._phase = float(np.random.default_rng([seed_sim, 3]).uniform(0.0, 2.0 * np.pi))
        self._noise_rng = [np.random.default_rng([seed_sim, 1, i]) for i in range(cups)]
        self._drop_rng = [np.random.default_rng([seed_sim, 2, i]) for i in range(cups)]
        self._noise = np.zeros((0, cups))
        self._drops = np.zeros((0, cups))
        self._ni = 0
        # cup condition, changed by the script
        z = np.zeros(cups, dtype=bool)
        self.applied, self.detached, self.dead, self.stuck = z.copy(), z.copy(), z.copy(), z.copy()
        self.extra_leak = np.zeros(cups)
        self.block = np.zeros(cups)
        self.stuck_frac = np.ones(cups)
        self.rig, self.rig_set, self.rig_tau = z.copy(), np.zeros(cups), np.ones(cups)
        self.fault = np.zeros(cups, dtype=np.int64)
        self.drop_rate = np.zeros(cups)
        self.stuck_code = np.zeros(cups, dtype=np.int64)
        self.last_code = np.full(cups, -1, dtype=np.int64)
        # outputs the firmware drives
        self.pump = z.copy()
        self.valve = np.ones(cups, dtype=bool)  # boot: vented
        # script, in time order
        self._actions = sorted(((int(round(a.t * _US)), n, a) for n, a in
                                enumerate(script.actions)), key=lambda x: (x[0], x[1]))
        self._ai = 0
        # link
        self._silent = [(float(a), float(b)) for a, b in getattr(sim, "silent_windows", ())]
        self._lost = [(float(a), float(b)) for a, b in getattr(sim, "lost_windows", ())]
        self._drop_prob = float(getattr(script, "drop_prob", 0.0) or 0.0)
        self._drop_link_rng = np.random.default_rng([seed_sim, 4])
        self._drop_prev = False
        self._corrupt_rate = float(getattr(sim, "link_corruption_rate", 0.0) or 0.0)
        self._corrupt_rng = np.random.default_rng([int(seed), 0x6E6F697379])

        # the firmware, booted at the first sample's time with the scenario's settings
        t0_us = int(round(float(sim.t0_s) * _US))
        limit = float(p["hard_limit_kpa"]) if bool(p["interlock"]) else _NO_INTERLOCK_LIMIT_KPA
        band = (float(p["band_low_kpa"]), float(p["band_high_kpa"]))
        try:
            self.core = cfirmware.CoreDevice(
                cups, serial=f"FW-{seed_sim % 10**8:08d}", adc_bits=self.sp.adc_bits,
                sensor_model=int(SensorModel.SIMULATED), info_flags=int(InfoFlags.SIMULATED),
                t_us=t0_us, firmware=firmware, rate_hz=int(sim.rate_hz), band_kpa=band,
                limit_kpa=limit)
        except ValueError as exc:
            raise SimConfigError(f"firmware: {exc}") from None
        self._t_next = t0_us           # unwrapped time of the next sample
        self._pending = bytearray(self._link(self.core.read(), t0_us * 1e-6,  # INFO, BOOT
                                             allow_drop=False))
        # physics: per cup a segment (anchor + constant coefficients), as the engine
        amb0 = float(self._ambient(t0_us * 1e-6))
        self._amb_varies = bool(np.ptp(self._amb_p) > 0)
        self._anc_us = np.full(cups, t0_us, dtype=np.int64)
        self._amb_a = np.full(cups, amb0)
        self._p_a = np.full(cups, amb0)
        self._y_a = np.zeros(cups)
        self._lam = np.zeros(cups)
        self._peq = self._p_a.copy()
        self._lgain = np.ones(cups)
        self._seg_us = np.zeros(cups, dtype=np.int64)
        self._coefficients(np.arange(cups))
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
        out = self._pending
        self._pending = bytearray()
        end_us = int(round(float(t_s) * _US))
        while self._t_next < end_us:
            out += self._tick()
        self.counters.bytes_out += len(out)
        return bytes(out)

    def produce(self, n: int) -> bytes:
        """Run ``n`` samples and return what the unit sent."""
        out = self._pending
        self._pending = bytearray()
        for _ in range(int(n)):
            out += self._tick()
        self.counters.bytes_out += len(out)
        return bytes(out)

    # -- one sample -------------------------------------------------------------------
    def _tick(self) -> bytes:
        t_us = self._t_next
        t_s = t_us * 1e-6
        # segments that ran out before this sample end where they ran out
        expired = np.flatnonzero(self._seg_us <= t_us)
        while expired.size:
            self._anchor(expired, self._seg_us[expired])
            expired = np.flatnonzero(self._seg_us <= t_us)
        p, y, amb = self._state_at(np.full(self.cups, t_us, dtype=np.int64))
        self.true_suction = amb - p
        # the script: what is due at this sample (acts from this sample on)
        touched = np.zeros(self.cups, dtype=bool)
        while self._ai < len(self._actions) and self._actions[self._ai][0] <= t_us:
            _, _, a = self._actions[self._ai]
            self._ai += 1
            self._act(a.cup, a.kind, a.value, t_us)
            touched[:] |= (np.arange(self.cups) == a.cup) | (a.cup < 0)
        # sensor, ADC
        if self._ni >= self._noise.shape[0]:
            self._noise = np.stack([r.standard_normal(_NOISE_BLOCK) for r in self._noise_rng], 1)
            self._drops = np.stack([r.random(_NOISE_BLOCK) for r in self._drop_rng], 1)
            self._ni = 0
        noise, drop = self._noise[self._ni], self._drops[self._ni]
        self._ni += 1
        press = sensor.sensor_input(y, amb - y, self.s_gain, self.s_off, self.sp)
        v = sensor.output_voltage(press, t_s, noise, self.sp, self._phase)
        levels = self.sp.levels
        code = np.clip(np.rint(v * (levels / self.sp.supply_v)), 0, levels - 1).astype(np.int64)
        if self.fault.any():
            code = sensor.inject(code[None, :], self.fault, self.stuck_code,
                                 (drop < self.drop_rate)[None, :], self.sp)[0]
        self.last_code = code
        counts = np.where(code < 0, 0, code)  # no reading: the input floats to 0 V
        # the firmware's tick
        pump, valve = self.core.step(t_us % _WRAP, counts)
        touched |= (pump != self.pump) | (valve != self.valve)
        self.pump, self.valve = pump, valve
        self.counters.samples += 1
        out = self._link(self.core.read(), t_s, allow_drop=True)
        # a new segment where the outputs or the cup's condition changed
        if touched.any():
            cols = np.flatnonzero(touched)
            self._set_anchor(cols, t_us, p[cols], y[cols], amb[cols])
        nxt = self.core.next_sample_us
        self._t_next = t_us + ((nxt - t_us) % _WRAP)
        return out

    def _state_at(self, us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p kPa abs, lagged suction y kPa, ambient kPa) of every cup at ``us``."""
        dt = (us - self._anc_us) * 1e-6
        e1 = np.exp(-self._lam * dt)
        p = self._peq + (self._p_a - self._peq) * e1
        amb = np.interp(us * 1e-6, self._amb_t, self._amb_p) if self._amb_varies \
            else np.full(self.cups, self._amb_p[0])
        y = physics.lagged(self._y_a, self._amb_a - self._peq, -(self._p_a - self._peq),
                           self._lam, self._lgain, self.sp.lag_s, dt, e1) + (amb - self._amb_a)
        return p, y, amb

    def _anchor(self, cols: np.ndarray, us: np.ndarray) -> None:
        """New segments for ``cols`` starting at ``us`` (per cup)."""
        when = self._anc_us.copy()
        when[cols] = us
        p, y, amb = self._state_at(when)
        self._set_anchor(cols, us, p[cols], y[cols], amb[cols])

    def _set_anchor(self, cols: np.ndarray, us, p: np.ndarray, y: np.ndarray,
                    amb: np.ndarray) -> None:
        self._anc_us[cols] = us
        self._p_a[cols], self._y_a[cols], self._amb_a[cols] = p, y, amb
        self._coefficients(cols)

    def _coefficients(self, cols: np.ndarray) -> None:
        amb, pa = self._amb_a[cols], self._p_a[cols]
        rig = self.rig[cols]
        k = np.where(rig, 0.0, self.kt[cols])
        cap = physics.capacitance(self.V0[cols], k, amb, pa)
        stuck = self.stuck[cols]
        running = self.pump[cols] | stuck  # a stuck driver runs whatever the MCU says
        flow = (self.flow[cols] * np.where(stuck, self.stuck_frac[cols], 1.0)
                * (1.0 - self.block[cols]) * ~self.dead[cols])
        s0, p_ult = physics.pump_terms(flow, self.smax[cols], amb)
        seal = np.where(self.applied[cols] & ~self.detached[cols],
                        self.seal[cols] + self.extra_leak[cols], self.open_g)
        g_in = seal + np.where(self.valve[cols], self.valve_g, 0.0)
        lam, peq = physics.coefficients(cap, s0 * running, p_ult, g_in, amb, pa)
        # capacitance held at its value halfway through the segment (as the engine)
        cap = physics.capacitance(self.V0[cols], k, amb,
                                  physics.segment_midpoint(pa, peq, cap, k))
        lam, peq = physics.coefficients(cap, s0 * running, p_ult, g_in, amb, pa)
        lam = np.where(rig, 1.0 / self.rig_tau[cols], lam)
        peq = np.where(rig, amb - self.rig_set[cols], peq)
        self._lam[cols], self._peq[cols] = lam, peq
        self._lgain[cols] = physics.lag_gain(lam, self.sp.lag_s)
        lim = physics.segment_limit_s(pa, peq, lam, cap, k)
        if self._amb_varies:
            lim = np.minimum(lim, _AMBIENT_STEP_S)
        lim_us = np.where(np.isfinite(lim), np.minimum(lim, 1e6) * _US, _NEVER)
        self._seg_us[cols] = self._anc_us[cols] + np.maximum(lim_us, 1).astype(np.int64)

    def _ambient(self, t_s: float) -> float:
        if self._amb_p.size == 1:
            return float(self._amb_p[0])
        return float(np.interp(t_s, self._amb_t, self._amb_p))

    def _act(self, cup: int, kind: str, value: object, t_us: int) -> None:
        js = range(self.cups) if cup < 0 else ([cup] if 0 <= cup < self.cups else [])
        mask = ALL_CUPS if cup < 0 else 1 << cup
        if kind in ("start", "stop", "vent"):
            if cup >= self.cups:
                return
            typ = {"start": MsgType.START, "stop": MsgType.STOP, "vent": MsgType.VENT}[kind]
            self.core.set_time(t_us % _WRAP)
            self.counters.local_commands += 1
            if self.core.local(typ, mask.to_bytes(2, "little")) is not None:
                self.counters.local_refused += 1
            return
        for j in js:
            if kind == "apply":
                self.applied[j], self.detached[j] = True, False
            elif kind == "remove":
                self.applied[j] = False
            elif kind == "leak":
                self.extra_leak[j] = float(value)  # type: ignore[arg-type]
            elif kind == "detach":
                self.detached[j] = True
            elif kind == "block":
                self.block[j] = float(value)  # type: ignore[arg-type]
            elif kind == "pump_dead":
                self.dead[j] = True
            elif kind == "pump_stuck":
                self.stuck[j], self.stuck_frac[j] = True, float(value)  # type: ignore[arg-type]
            elif kind == "pump_force":
                self.stuck[j], self.stuck_frac[j] = bool(value), 1.0
            elif kind == "pump_weak":
                self.flow[j], self.smax[j] = value  # type: ignore[misc]
            elif kind == "sensor_fault":
                f, rate = value  # type: ignore[misc]
                self.fault[j], self.drop_rate[j] = int(f), float(rate)
                last = int(self.last_code[j])
                self.stuck_code[j] = last if last >= 0 else self.sp.levels // 2
            elif kind == "sensor_ok":
                self.fault[j] = SensorFault.NONE
            elif kind == "rig":
                self.rig[j], self.rig_set[j] = True, float(value)  # type: ignore[arg-type]
            elif kind == "rig_tau":
                self.rig_tau[j] = max(float(value), 1e-3)  # type: ignore[arg-type]
            else:
                raise SimConfigError(f"the firmware device cannot play the action {kind!r}")

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
