"""The simulation engine: a multi-cup unit (physics, sensors, regulator,
interlock) advanced in blocks of samples, with host commands in between.

``Simulation`` is what the virtual device (``sim.device``) drives. Per cup
the state is a *segment*: an anchor (time, pressure, lagged sensor state) and
constant coefficients, so the pressure at any later sample is a closed form
(``sim.physics``). A segment ends when the regulator switches, the interlock
trips, the sensor-fault flag changes the pump, a scripted action or host
command arrives, or the cup's volume has changed enough that the constant
capacitance is no longer good to 1 % (``physics.segment_limit_s``). Within
a window the engine evaluates every cup's samples at once with numpy, finds
each cup's first switching sample, commits up to there and continues that cup
from the switch: the Python loop runs per switch, never per sample.

Each cup owns its random streams and its segments, so a cup's samples do not
depend on how ``advance`` is cut into blocks or on the other cups; the engine
uses this to compute the ground truth up front with a dry run of the faulty
cups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from firmware_bridge.conditions import (
    DWELL_ADVISORY_S,
    DWELL_EXCEEDED,
    SIGNAL_LOSS,
    SIGNAL_LOSS_S,
    regulator_thresholds,
)
from firmware_bridge.messages import DeviceInfo
from firmware_bridge.protocol import (
    MAX_CUPS,
    MAX_RATE_HZ,
    MIN_RATE_HZ,
    NO_READING,
    SUCTION_SCALE_KPA,
    EventCode,
    InfoFlags,
    NackReason,
    SensorModel,
    Status,
)
from sim import physics, sensor
from sim.scenarios import Script, get, per_cup
from sim.sensor import SensorFault, SensorParams
from sim.truth import SignalTruth, TruthRecord, sort_records

__all__ = ["SimOutput", "Simulation", "TruthRecord"]

#: "Never", in µs (2^50 µs ≈ 36 years; times rate stays inside int64).
_NEVER = 1 << 50
#: Samples evaluated per window at most (memory and wasted work per switch).
_MAX_WINDOW = 2048
#: Samples per internal block of a long ``advance``.
_MAX_BLOCK = 1 << 16
#: With a changing ambient a segment lasts at most this long (s). The ODE holds
#: ambient at its anchor value for the leak and pump terms only (suction is
#: always the exact ambient minus the cup pressure), which moves the cup
#: pressure by far less than 0.01 kPa at 0.1 kPa/s (docs/simulator.md).
_AMBIENT_STEP_S = 1.0
#: Isolated dropped frames keep this far (s) from a loss window, so that the
#: signal_loss truth of the window is exact.
_DROP_GUARD_S = 0.5
_US = 1_000_000


@dataclass
class SimOutput:
    """Samples ``advance`` produced.

    time_us: (n,) int64 device clock, µs, not wrapped.
    suction_kpa: (n, cups) float32 reported suction (after zero and device
        calibration), NaN = no reading.
    status: (n, cups) uint8 Status bits.
    send: (n,) bool, False where the device does not transmit the sample.
    true_suction_kpa: (n, cups) float32 physical truth (reference gauge).
    events: [(time_us, EventCode, cup 1-based or 0, value)] raised in this span.
    link_lost: (n,) bool, True where the device sends the frame (its seq is
        used) but the link loses it; always False where ``send`` is True.
    """

    time_us: np.ndarray
    suction_kpa: np.ndarray
    status: np.ndarray
    send: np.ndarray
    true_suction_kpa: np.ndarray
    events: list[tuple[int, int, int, int]] = field(default_factory=list)
    link_lost: np.ndarray | None = None

    @property
    def t_s(self) -> np.ndarray:
        """(n,) float64 device time, s."""
        return self.time_us * 1e-6


def _wire(kpa: float) -> int:
    """kPa -> int16 suction units for an EVENT value (NaN -> NO_READING)."""
    if not math.isfinite(kpa):
        return NO_READING
    return int(np.clip(round(kpa / SUCTION_SCALE_KPA), -32767, 32767))


class _Clock:
    """Sample index <-> device µs for the present rate: ``us(k) = us0 + k 1e6 // rate``."""

    def __init__(self, us0: int, rate: int) -> None:
        self.us0, self.rate = int(us0), int(rate)

    def us(self, k: np.ndarray | int) -> np.ndarray:
        return self.us0 + (np.asarray(k, dtype=np.int64) * _US) // self.rate

    def k_at(self, us: np.ndarray | int) -> np.ndarray:
        """Smallest k whose time is >= ``us`` (may be negative)."""
        d = np.asarray(us, dtype=np.int64) - self.us0
        return -((-d * self.rate) // _US)


class CupPlant:
    """Cups ``ids`` (0-based) of a scripted unit: state, integrator, regulator.

    The physics behind :class:`Simulation`; public because
    :class:`sim.firmware_device.FirmwareDevice` drives it sample by sample with
    the C firmware core as the regulator (``apply_due`` and the step methods)."""

    def __init__(self, p: dict[str, object], script: Script, ids: list[int], cups: int,
                 rate_hz: int, seed: int) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        nc = self.nc = len(ids)
        self.clock = _Clock(int(round(float(p["t0_s"]) * _US)), rate_hz)
        self.K = 0  # next sample index of the present clock epoch
        sel = self.ids

        def col(key: str) -> np.ndarray:
            if key in script.cup_setup:
                return np.asarray(script.cup_setup[key], dtype=float)[sel]
            return per_cup(p[key], cups, key)[sel]

        # physics (mL, mL/s, kPa)
        self.V0 = col("cup_volume_ml")
        self.kt = col("tissue_ml_per_kpa")
        self.flow = col("pump_flow_l_min") * physics.L_MIN
        self.smax = col("pump_max_kpa")
        self.seal = col("seal_leak_l_min") * physics.L_MIN
        self.valve_g = float(p["valve_l_min"]) * physics.L_MIN
        self.open_g = float(p["open_l_min"]) * physics.L_MIN
        if script.ambient:
            self.amb_t = np.array([a for a, _ in script.ambient], dtype=float)
            self.amb_p = np.array([b for _, b in script.ambient], dtype=float)
        else:
            self.amb_t = np.array([0.0])
            self.amb_p = np.array([float(p["ambient_kpa"])])
        self.amb_varies = bool(np.ptp(self.amb_p) > 0)
        # sensor
        self.sp = SensorParams(
            kind=str(p["sensor"]), noise_kpa=float(p["noise_kpa"]), ripple=float(p["ripple"]),
            ripple_hz=float(p["ripple_hz"]), adc_bits=int(p["adc_bits"]),
            lag_s=float(p["lag_s"]), stuck_detect_s=float(p["stuck_detect_s"]),
            fault_clear_s=float(p["fault_clear_s"]))
        _ = self.sp.transfer  # validates the kind
        if not 8 <= self.sp.adc_bits <= 24:
            raise ValueError(f"adc_bits must be 8..24, not {self.sp.adc_bits}")
        self.s_gain = per_cup(p["sensor_gain"], cups, "sensor_gain")[sel]
        self.s_off = per_cup(p["sensor_offset_kpa"], cups, "sensor_offset_kpa")[sel]
        self.phase = float(np.random.default_rng([seed, 3]).uniform(0.0, 2.0 * np.pi))
        self.noise_rng = [np.random.default_rng([seed, 1, int(i)]) for i in ids]
        self.drop_rng = [np.random.default_rng([seed, 2, int(i)]) for i in ids]
        amb0 = self.ambient(np.array([self.clock.us0 * 1e-6]))[0]
        self.p_boot = self.s_gain * amb0 + self.s_off  # absolute sensor's boot tare
        self._rate_counts()
        # device
        lo, hi = float(p["band_low_kpa"]), float(p["band_high_kpa"])
        if not 0.0 <= lo < hi:
            raise ValueError(f"band {lo:g}..{hi:g} kPa is not a band")
        self.band = np.tile([lo, hi], (nc, 1))
        self.thr = np.tile(regulator_thresholds(lo, hi), (nc, 1))
        self.limit = float(p["hard_limit_kpa"])
        self.interlock = bool(p["interlock"])
        self.cal_on_device = bool(p["cal_on_device"])
        self.cal = np.tile([0.0, 1.0, 0.0], (nc, 1))
        self.cal_valid = np.zeros(nc, dtype=bool)
        self.tare = np.zeros(nc)
        z = np.zeros(nc, dtype=bool)
        # cup condition (script and commands change these)
        self.applied, self.detached, self.dead, self.stuck = z.copy(), z.copy(), z.copy(), z.copy()
        self.extra_leak = np.zeros(nc)
        self.block = np.zeros(nc)
        self.stuck_frac = np.ones(nc)
        self.rig, self.rig_set, self.rig_tau = z.copy(), np.zeros(nc), np.ones(nc)
        # regulator / device state
        self.u, self.R, self.L, self.valve, self.F = z.copy(), z.copy(), z.copy(), z.copy(), z.copy()
        self.fault = np.zeros(nc, dtype=np.int64)
        self.drop_rate = np.zeros(nc)
        self.stuck_code = np.zeros(nc, dtype=np.int64)
        self.last_code = np.full(nc, -2, dtype=np.int64)
        self.run = np.zeros(nc, dtype=np.int64)
        self.since = np.full(nc, 1 << 40, dtype=np.int64)
        # actions per cup: [(t_us, order, kind, value)], consumed from the front
        self.actions: list[list[tuple[int, int, str, object]]] = [[] for _ in range(nc)]
        where = {int(c): j for j, c in enumerate(ids)}
        for order, a in enumerate(sorted(script.actions, key=lambda a: a.t)):
            t_us = int(round(a.t * _US))
            targets = range(nc) if a.cup < 0 else ([where[a.cup]] if a.cup in where else [])
            for j in targets:
                self.actions[j].append((t_us, order, a.kind, a.value))
        self.act_us = np.array([a[0][0] if a else _NEVER for a in self.actions], dtype=np.int64)
        # segment state
        us0 = self.clock.us(0)
        self.anc_us = np.full(nc, us0, dtype=np.int64)
        self.pamb_a = np.full(nc, amb0)
        self.p_a = np.full(nc, amb0)
        self.y_a = np.zeros(nc)
        self.lam = np.zeros(nc)
        self.peq = self.p_a.copy()
        self.lgain = np.ones(nc)
        self.seg_us = np.full(nc, _NEVER, dtype=np.int64)
        self.pending: list[tuple[int, int, int, int]] = []  # events raised by commands
        self._coefficients(np.arange(nc))

    # --- helpers -----------------------------------------------------------------
    def _rate_counts(self) -> None:
        self.stuck_n = self.sp.stuck_samples(self.clock.rate)
        self.clear_n = self.sp.clear_samples(self.clock.rate)

    def ambient(self, t_s: np.ndarray) -> np.ndarray:
        """Ambient pressure, kPa abs, at device times ``t_s``."""
        if not self.amb_varies:
            return np.full(np.shape(t_s), self.amb_p[0])
        return np.interp(t_s, self.amb_t, self.amb_p)

    @property
    def us_next(self) -> int:
        return int(self.clock.us(self.K))

    def state_at(self, cols: np.ndarray, us: np.ndarray) -> tuple[np.ndarray, ...]:
        """(p kPa abs, lagged suction y kPa, ambient kPa) of cups ``cols`` at ``us``."""
        dt = (us - self.anc_us[cols]) * 1e-6
        e1 = np.exp(-self.lam[cols] * dt)
        peq, pa = self.peq[cols], self.p_a[cols]
        p = peq + (pa - peq) * e1
        amb = self.ambient(us * 1e-6)
        y = physics.lagged(self.y_a[cols], self.pamb_a[cols] - peq, -(pa - peq), self.lam[cols],
                           self.lgain[cols], self.sp.lag_s, dt, e1) + (amb - self.pamb_a[cols])
        return p, y, amb

    def anchor(self, cols: np.ndarray, us: np.ndarray) -> None:
        """Start new segments for ``cols`` at ``us`` with the present cup condition."""
        if cols.size == 0:
            return
        p, y, amb = self.state_at(cols, us)
        self.anc_us[cols] = us
        self.p_a[cols], self.y_a[cols], self.pamb_a[cols] = p, y, amb
        self._coefficients(cols)

    def _coefficients(self, cols: np.ndarray) -> None:
        amb, pa = self.pamb_a[cols], self.p_a[cols]
        rig = self.rig[cols]
        k = np.where(rig, 0.0, self.kt[cols])
        cap = physics.capacitance(self.V0[cols], k, amb, pa)
        stuck = self.stuck[cols]
        running = (self.u[cols] | stuck) & ~self.L[cols]
        flow = (self.flow[cols] * np.where(stuck, self.stuck_frac[cols], 1.0)
                * (1.0 - self.block[cols]) * ~self.dead[cols])
        s0, p_ult = physics.pump_terms(flow, self.smax[cols], amb)
        seal = np.where(self.applied[cols] & ~self.detached[cols],
                        self.seal[cols] + self.extra_leak[cols], self.open_g)
        g_in = seal + np.where(self.valve[cols], self.valve_g, 0.0)
        lam, peq = physics.coefficients(cap, s0 * running, p_ult, g_in, amb, pa)
        # Hold Cap at its value halfway through the segment (midpoint rule:
        # second-order in the segment's pressure change; docs/simulator.md).
        cap = physics.capacitance(self.V0[cols], k, amb, physics.segment_midpoint(pa, peq, cap, k))
        lam, peq = physics.coefficients(cap, s0 * running, p_ult, g_in, amb, pa)
        # A calibration bench drives the chamber itself (first order to its set point).
        lam = np.where(rig, 1.0 / self.rig_tau[cols], lam)
        peq = np.where(rig, amb - self.rig_set[cols], peq)
        self.lam[cols], self.peq[cols] = lam, peq
        self.lgain[cols] = physics.lag_gain(lam, self.sp.lag_s)
        lim = physics.segment_limit_s(pa, peq, lam, cap, k)
        if self.amb_varies:
            lim = np.minimum(lim, _AMBIENT_STEP_S)
        lim_us = np.where(np.isfinite(lim), np.minimum(lim, 1e6) * _US, _NEVER)
        self.seg_us[cols] = self.anc_us[cols] + np.maximum(lim_us, 1).astype(np.int64)

    # --- actions and commands ----------------------------------------------------------
    def apply_due(self, j: int, us: int) -> None:
        """Apply the scripted actions of cup index ``j`` due at or before
        device time ``us`` (µs, unwrapped), in order; ``act_us[j]`` then holds
        the time of its next one. The caller re-anchors the cup's segment."""
        acts = self.actions[j]
        while acts and acts[0][0] <= us:
            _, _, kind, value = acts.pop(0)
            self.act(j, kind, value, us)
        self.act_us[j] = acts[0][0] if acts else _NEVER

    def act(self, j: int, kind: str, value: object, us: int) -> None:
        """Apply one scripted action to cup index ``j`` (no re-anchoring here)."""
        if kind == "apply":
            self.applied[j], self.detached[j] = True, False
        elif kind == "remove":
            self.applied[j] = False
        elif kind == "start":
            self.start(np.array([j]), us)
        elif kind == "stop":
            self.stop(np.array([j]))
        elif kind == "vent":
            self.vent(np.array([j]))
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
            # A stuck output freezes at the last code it gave (or mid-scale).
            self.stuck_code[j] = self.last_code[j] if self.last_code[j] >= 0 else self.sp.levels // 2
        elif kind == "sensor_ok":
            self.fault[j] = SensorFault.NONE
        elif kind == "rig":
            self.rig[j], self.rig_set[j] = True, float(value)  # type: ignore[arg-type]
        elif kind == "rig_tau":
            self.rig_tau[j] = max(float(value), 1e-3)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown action {kind!r}")

    def start(self, cols: np.ndarray, us: int) -> None:
        for j in cols[self.L[cols]]:
            self.pending.append((us, EventCode.INTERLOCK_CLEARED, int(self.ids[j]) + 1, 0))
        self.R[cols], self.valve[cols], self.L[cols] = True, False, False

    def stop(self, cols: np.ndarray) -> None:
        self.R[cols], self.u[cols], self.valve[cols] = False, False, False

    def vent(self, cols: np.ndarray) -> None:
        self.R[cols], self.u[cols], self.valve[cols] = False, False, True

    def reading_now(self, cols: np.ndarray) -> np.ndarray:
        """Noise-free untared reading of ``cols`` at the next sample, kPa."""
        us = np.full(cols.size, self.us_next, dtype=np.int64)
        p, y, amb = self.state_at(cols, us)
        return sensor.ideal_raw(y, amb - y, self.s_gain[cols], self.s_off[cols], self.sp,
                                self.p_boot[cols])

    def set_rate(self, hz: int) -> None:
        self.clock = _Clock(self.us_next, hz)
        self.K = 0
        self._rate_counts()

    # --- integration ---------------------------------------------------------------
    def advance(self, n: int) -> tuple[np.ndarray, ...]:
        """Next ``n`` samples: (time_us, reading, status, true suction, events)."""
        parts = []
        events: list[tuple[int, int, int, int]] = list(self.pending)
        self.pending.clear()
        left = n
        while left > 0 or not parts:
            m = min(left, _MAX_BLOCK)
            parts.append(self._block(m, events))
            left -= m
        if len(parts) == 1:
            t, r, s, tr = parts[0]
        else:
            t, r, s, tr = (np.concatenate(x) for x in zip(*parts, strict=True))
        events.sort(key=lambda e: (e[0], e[2]))
        return t, r, s, tr, events

    def _block(self, n: int, events: list) -> tuple[np.ndarray, ...]:
        nc, clock, sp = self.nc, self.clock, self.sp
        K0, K1 = self.K, self.K + n
        time_us = clock.us(np.arange(K0, K1))
        out_true = np.empty((n, nc))
        out_read = np.empty((n, nc))
        out_stat = np.empty((n, nc), dtype=np.uint8)
        if n == 0:
            return time_us, out_read.astype(np.float32), out_stat, out_true.astype(np.float32)
        # Each cup draws its own streams in sample order: block-size independent.
        noise = np.empty((n, nc))
        drop = np.empty((n, nc))
        for j in range(nc):
            noise[:, j] = self.noise_rng[j].standard_normal(n)
            drop[:, j] = self.drop_rng[j].random(n)
        lo_thr_all = self.thr[:, 0]
        hi_thr_all = self.thr[:, 1]
        nxt = np.full(nc, K0, dtype=np.int64)
        stuck_n1 = self.stuck_n - 1
        while True:
            act = nxt < K1
            if not act.any():
                break
            us_n = clock.us(nxt)
            # A segment that ran out before the next sample ends where it ran
            # out, between samples if need be: segments follow the physics,
            # not the sample grid (this keeps the 1 % capacitance bound at 10 Hz).
            expired = act & (self.seg_us <= us_n)
            while expired.any():
                cols = np.flatnonzero(expired)
                self.anchor(cols, self.seg_us[cols])
                expired = act & (self.seg_us <= us_n)
            # scripted actions due at a cup's next sample
            act_k = clock.k_at(self.act_us)
            due = np.flatnonzero(act & (act_k <= nxt))
            if due.size:
                for j in due:
                    self.apply_due(int(j), int(us_n[j]))
                self.anchor(due, us_n[due])
                act_k[due] = clock.k_at(self.act_us[due])
            seg_k = clock.k_at(self.seg_us)
            lim = np.minimum(np.minimum(seg_k, act_k), K1)
            w = np.where(act, lim - nxt, 0)
            cols = np.flatnonzero(w > 0)
            wc = w[cols]
            m = int(min(wc.max(), _MAX_WINDOW))
            i = np.arange(m)[:, None]
            k = nxt[cols][None, :] + i                      # (m, q) sample index
            valid = i < wc[None, :]
            rows = np.minimum(k - K0, n - 1)
            us = clock.us(np.minimum(k, K1 - 1))
            dt = (us - self.anc_us[cols]) * 1e-6
            lam, peq, pa = self.lam[cols], self.peq[cols], self.p_a[cols]
            e1 = np.exp(-lam * dt)
            p = peq + (pa - peq) * e1
            t_s = us * 1e-6
            amb = self.ambient(t_s)
            s_true = amb - p
            amb_a = self.pamb_a[cols]
            y = physics.lagged(self.y_a[cols], amb_a - peq, -(pa - peq), lam, self.lgain[cols],
                               sp.lag_s, dt, e1) + (amb - amb_a)
            # sensor and firmware reading
            colb = np.broadcast_to(cols, k.shape)
            # Common case (steady holding): every cup at the same sample, the
            # whole window in the block -> plain slices instead of gathers.
            r0 = int(nxt[cols[0]]) - K0
            aligned = bool(np.all(nxt[cols] == nxt[cols[0]])) and r0 + m <= n
            nz = noise[r0:r0 + m, cols] if aligned else noise[rows, colb]
            press = sensor.sensor_input(y, amb - y, self.s_gain[cols], self.s_off[cols], sp)
            code = sensor.adc_code(sensor.output_voltage(press, t_s, nz, sp, self.phase), sp)
            fault = self.fault[cols]
            if fault.any():
                code = sensor.inject(code, fault, self.stuck_code[cols],
                                     drop[rows, colb] < self.drop_rate[cols], sp)
            raw = sensor.raw_suction(code, sp, self.p_boot[cols])
            run = sensor.run_lengths(code, self.last_code[cols], self.run[cols])
            flag = sensor.range_flags(code, raw, sp) | (code < 0) | (run >= stuck_n1)
            since = sensor.since_flag(flag, self.since[cols])
            F = since < self.clear_n
            reading = raw - self.tare[cols]
            capp = self.cal_valid[cols] & self.cal_on_device
            if capp.any():
                c = self.cal[cols]
                reading = np.where(capp, c[:, 0] + c[:, 1] * reading + c[:, 2] * reading ** 2,
                                   reading)
            # regulator (firmware) and interlock (hardware, on the true suction)
            u, R, L = self.u[cols], self.R[cols], self.L[cols]
            with np.errstate(invalid="ignore"):
                d = np.where(reading < lo_thr_all[cols], True,
                             np.where(reading >= hi_thr_all[cols], False, u))
            d &= R & ~L & ~F
            trip = (s_true > self.limit) & ~L if self.interlock else np.zeros_like(d)
            change = valid & ((d != u) | trip)
            has = change.any(axis=0)
            j = np.where(has, change.argmax(axis=0), np.minimum(wc, m) - 1)
            commit = i <= j[None, :]
            # commit rows up to and including each cup's j
            base = self._status_bits(cols)
            stat = base[None, :] | np.where(F, Status.SENSOR_FAULT, 0).astype(np.uint8)
            if aligned and commit.all() and cols.size == nc:
                out_true[r0:r0 + m] = s_true
                out_read[r0:r0 + m] = reading
                out_stat[r0:r0 + m] = stat
            else:
                r_c, c_c = rows[commit], colb[commit]
                out_true[r_c, c_c] = s_true[commit]
                out_read[r_c, c_c] = reading[commit]
                out_stat[r_c, c_c] = stat[commit]
            # sensor fault / ok events
            Fprev = np.concatenate([self.F[cols][None, :], F[:-1]], axis=0)
            tr = commit & (F != Fprev)
            if tr.any():
                for a, b in zip(*np.nonzero(tr), strict=True):
                    cup = int(self.ids[cols[b]]) + 1
                    if F[a, b]:
                        events.append((int(us[a, b]), EventCode.SENSOR_FAULT, cup,
                                       _wire(float(raw[a, b]))))
                    else:
                        events.append((int(us[a, b]), EventCode.SENSOR_OK, cup, 0))
            q = np.arange(cols.size)
            self.last_code[cols] = code[j, q]
            self.run[cols] = run[j, q]
            self.since[cols] = since[j, q]
            self.F[cols] = F[j, q]
            nxt[cols] = k[j, q] + 1
            if has.any():
                hq = np.flatnonzero(has)
                hc = cols[hq]
                tripped = trip[j[hq], hq]
                for b, cup_j in zip(hq[tripped], hc[tripped], strict=True):
                    events.append((int(us[j[b], b]), EventCode.INTERLOCK_TRIPPED,
                                   int(self.ids[cup_j]) + 1, _wire(float(reading[j[b], b]))))
                tc = hc[tripped]
                self.L[tc], self.valve[tc], self.R[tc], self.u[tc] = True, True, False, False
                oc, oq = hc[~tripped], hq[~tripped]
                self.u[oc] = d[j[oq], oq]
                # the switching sample already shows the new state
                out_stat[rows[j[hq], hq], hc] = (self._status_bits(hc)
                                                 | np.where(F[j[hq], hq], Status.SENSOR_FAULT, 0))
                self.anchor(hc, us[j[hq], hq])
        self.K = K1
        return (time_us, out_read.astype(np.float32), out_stat, out_true.astype(np.float32))

    def _status_bits(self, cols: np.ndarray) -> np.ndarray:
        running = (self.u[cols] | self.stuck[cols]) & ~self.L[cols]
        bits = (np.where(running, Status.PUMP_ON, 0) | np.where(self.valve[cols], Status.VALVE_OPEN, 0)
                | np.where(self.R[cols], Status.REGULATING, 0)
                | np.where(self.L[cols], Status.INTERLOCK, 0)
                | np.where(self.cal_valid[cols] & self.cal_on_device, Status.CALIBRATED, 0))
        return bits.astype(np.uint8)


def _shifted(script: Script, t0: float) -> Script:
    """``script`` with every time moved by ``t0`` s (device clock at the first sample)."""
    if t0 == 0:
        return script
    return replace(
        script,
        actions=[replace(a, t=a.t + t0) for a in script.actions],
        ambient=[(t + t0, v) for t, v in script.ambient],
        silent=[(a + t0, b + t0) for a, b in script.silent],
        lost=[(a + t0, b + t0) for a, b in script.lost],
        injected=[replace(r, t_start=r.t_start + t0,
                          t_end=None if r.t_end is None else r.t_end + t0)
                  for r in script.injected],
        rig_steps=[(a + t0, b + t0, v) for a, b, v in script.rig_steps])


class Simulation:
    """A simulated multi-cup unit running a scenario (see docs/simulator.md).

    scenario: a name from ``sim.scenarios.SCENARIOS``; cups 1..16; rate_hz
    10..2000; seed: every random stream derives from it; duration_s: the run's
    length (None: the scenario's own); params: scenario parameters (names in
    ``SCENARIOS[name].params``; strings from URLs are coerced).

    Host commands return None on success or a ``NackReason``; they act from
    the next sample on.
    """

    def __init__(self, scenario: str = "normal", cups: int = 4, rate_hz: int = 100,
                 seed: int = 0, duration_s: float | None = None, **params: object) -> None:
        if not 1 <= int(cups) <= MAX_CUPS:
            raise ValueError(f"cups must be 1..{MAX_CUPS}, not {cups}")
        if not MIN_RATE_HZ <= int(rate_hz) <= MAX_RATE_HZ:
            raise ValueError(f"rate must be {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz, not {rate_hz}")
        self.scenario = get(scenario)
        self.params = self.scenario.resolve(params)
        if duration_s is None:
            duration_s = self.scenario.natural_duration(self.params)
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration must be a positive number of seconds, not {duration_s}")
        self.cups, self.rate_hz, self.seed = int(cups), int(rate_hz), int(seed)
        self.duration_s = float(duration_s)
        t0 = float(self.params["t0_s"])
        if not (t0 >= 0 and math.isfinite(t0)):
            raise ValueError(f"t0_s must be >= 0, not {t0}")
        # Scripts count from the run's first sample; the device clock starts at t0_s.
        self.script = _shifted(self.scenario.script(self.cups, self.rate_hz, self.seed,
                                                    self.duration_s, self.params), t0)
        self._core = CupPlant(self.params, self.script, list(range(self.cups)), self.cups,
                           self.rate_hz, self.seed)
        self._grid = _Clock(self._core.clock.us0, self.rate_hz)  # the initial sample grid
        self.t0_s = self._core.clock.us0 * 1e-6
        self.link_corruption_rate = float(self.script.link_corruption_rate)
        self.silent_windows = [(a, b) for a, b in self.script.silent]
        self.lost_windows = [(a, b) for a, b in self.script.lost]
        self._drop_rng = np.random.default_rng([self.seed, 4])
        self._drop_prev = False
        flags = InfoFlags.SIMULATED
        if self._core.cal_on_device:
            flags |= InfoFlags.CAL_ON_DEVICE
        if self._core.sp.transfer.absolute:
            flags |= InfoFlags.ABSOLUTE_SENSOR
        self.info = DeviceInfo(serial=f"SIM-{self.seed % 10**8:08d}", firmware=(1, 0, 0),
                               cups=self.cups, rate_hz=self.rate_hz,
                               sensor_model=int(SensorModel.SIMULATED), flags=int(flags),
                               adc_bits=self._core.sp.adc_bits,
                               hard_limit_kpa=self._core.limit)
        self.truth: list[TruthRecord] = self._build_truth()

    # --- time ------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Device time of the next sample, s."""
        return self._core.us_next * 1e-6

    @property
    def rig_steps(self) -> list[tuple[float, float, float]]:
        """calibration_rig: (t_start, t_end, reference suction kPa) of each step."""
        return list(self.script.rig_steps)

    def advance(self, n: int) -> SimOutput:
        """The next ``n`` samples at ``rate_hz``."""
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        t_us, read, stat, true, events = self._core.advance(n)
        send, lost = self._link(t_us)
        return SimOutput(t_us, read, stat, send, true, events, lost)

    def advance_to(self, t_s: float) -> SimOutput:
        """All samples with device time < ``t_s`` (s, rounded to µs)."""
        core = self._core
        k = int(core.clock.k_at(int(round(t_s * _US))))
        return self.advance(max(k - core.K, 0))

    def _link(self, t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = t_us.shape[0]
        t = t_us * 1e-6
        silent = np.zeros(n, dtype=bool)
        lost = np.zeros(n, dtype=bool)
        guard = np.zeros(n, dtype=bool)
        for a, b in self.silent_windows:
            silent |= (t >= a) & (t < b)
            guard |= (t >= a - _DROP_GUARD_S) & (t < b + _DROP_GUARD_S)
        for a, b in self.lost_windows:
            lost |= (t >= a) & (t < b)
            guard |= (t >= a - _DROP_GUARD_S) & (t < b + _DROP_GUARD_S)
        prob = self.script.drop_prob
        if prob > 0 and n:
            cand = self._drop_rng.random(n) < prob
            prev = np.concatenate([[self._drop_prev], cand[:-1]])
            self._drop_prev = bool(cand[-1])
            lost |= cand & ~prev & ~guard & ~silent
        return ~(silent | lost), lost

    # --- ground truth -------------------------------------------------------------------
    def _grid_time(self, t: float) -> float:
        """Device time of the first sample at or after ``t`` on the initial grid, s."""
        us = int(round(t * _US))
        return float(self._grid.us(max(int(self._grid.k_at(us)), 0))) * 1e-6

    def _build_truth(self) -> list[TruthRecord]:
        end = self._grid_time(self.t0_s + self.duration_s)  # first sample after the run
        recs: list[TruthRecord] = []

        def clip(rec: TruthRecord) -> TruthRecord | None:
            a = self._grid_time(rec.t_start)
            if a >= end:
                return None
            b = None if rec.t_end is None else self._grid_time(rec.t_end)
            return replace(rec, t_start=a, t_end=None if b is None or b >= end else b)

        for rec in self.script.injected:
            r = clip(rec)
            if r is not None:
                recs.append(r)
        for a, b in self.silent_windows + self.lost_windows:
            r = self._loss_record(a, b, end)
            if r is not None:
                recs.append(r)
        dry = sorted(set(self.script.dry_run_cups))
        recs += self._dry_run(dry, end)
        for c in range(self.cups):
            if c not in dry:
                recs += self._scripted_dwell(c, end)
        return sort_records(recs)

    def _loss_record(self, a: float, b: float, end: float) -> TruthRecord | None:
        g = self._grid
        ka = int(g.k_at(int(round(a * _US))))
        kb = int(g.k_at(int(round(b * _US))))
        if ka <= 0 or kb <= ka:
            return None  # nothing was sent before: no frame to time the loss from
        t_last = float(g.us(ka - 1)) * 1e-6
        t_resume = float(g.us(kb)) * 1e-6
        start = t_last + SIGNAL_LOSS_S
        if t_resume - t_last <= SIGNAL_LOSS_S or start >= end:
            return None
        return TruthRecord(None, SIGNAL_LOSS, start, None if t_resume >= end else t_resume)

    def _dry_run(self, cups: list[int], end: float) -> list[TruthRecord]:
        if not cups:
            return []
        core = CupPlant(self.params, self.script, cups, self.cups, self.rate_hz, self.seed)
        tracker = SignalTruth([c + 1 for c in cups], core.band[:, 0], core.band[:, 1])
        end_us = int(round(end * _US))
        while core.us_next < end_us:
            n = min(int(core.clock.k_at(end_us)) - core.K, _MAX_BLOCK)
            t_us, _, stat, true, _ = core.advance(n)
            tracker.feed(t_us * 1e-6, true, stat)
        return [r for r in tracker.records() if r.t_start < end]

    def _scripted_dwell(self, c: int, end: float) -> list[TruthRecord]:
        """dwell_exceeded of a cup whose REGULATING follows the script alone
        (same rule as ``SignalTruth``: due at or before the last sample)."""
        out, since = [], None
        acts = sorted((a for a in self.script.actions if a.cup in (c, -1)), key=lambda a: a.t)
        spans = []
        for a in acts:
            if a.kind == "start" and since is None:
                since = self._grid_time(a.t)
            elif a.kind in ("stop", "vent") and since is not None:
                spans.append((since, self._grid_time(a.t)))
                since = None
        if since is not None:
            spans.append((since, None))
        g = self._grid
        last = float(g.us(int(g.k_at(int(round(end * _US)))) - 1)) * 1e-6
        for a, b in spans:
            due = a + DWELL_ADVISORY_S
            if due <= last and (b is None or b > due):
                out.append(TruthRecord(c + 1, DWELL_EXCEEDED, due, None if b is None or b >= end
                                       else b))
        return out

    # --- host commands ---------------------------------------------------------------------
    def _cols(self, mask: int) -> np.ndarray | None:
        every = (1 << self.cups) - 1
        if mask == 0xFFFF:
            mask = every
        if mask <= 0 or mask & ~every:
            return None
        return np.array([c for c in range(self.cups) if mask >> c & 1], dtype=np.int64)

    def _reanchor(self, cols: np.ndarray) -> None:
        core = self._core
        core.anchor(cols, np.full(cols.size, core.us_next, dtype=np.int64))

    def start(self, mask: int) -> int | None:
        """Begin regulating (REGULATING set, valve closed, INTERLOCK latch cleared)."""
        cols = self._cols(mask)
        if cols is None:
            return NackReason.BAD_CUP
        if self._core.F[cols].any():
            return NackReason.SENSOR_FAULT
        self._core.start(cols, self._core.us_next)
        self._reanchor(cols)
        return None

    def stop(self, mask: int) -> int | None:
        """Pump off, valve closed: the cup holds."""
        cols = self._cols(mask)
        if cols is None:
            return NackReason.BAD_CUP
        self._core.stop(cols)
        self._reanchor(cols)
        return None

    def vent(self, mask: int) -> int | None:
        """Stop regulating and open the valve: the cup goes to ambient."""
        cols = self._cols(mask)
        if cols is None:
            return NackReason.BAD_CUP
        self._core.vent(cols)
        self._reanchor(cols)
        return None

    def set_band(self, mask: int, low_kpa: float, high_kpa: float) -> int | None:
        """New target band (kPa suction); OUT_OF_RANGE unless 0 <= low < high <= hard limit."""
        cols = self._cols(mask)
        if cols is None:
            return NackReason.BAD_CUP
        lo, hi = float(low_kpa), float(high_kpa)
        if not (0.0 <= lo < hi <= self._core.limit):
            return NackReason.OUT_OF_RANGE
        self._core.band[cols] = (lo, hi)
        self._core.thr[cols] = regulator_thresholds(lo, hi)
        return None

    def zero(self, mask: int) -> int | None:
        """Tare: the present reading becomes 0 kPa (SENSOR_FAULT if the sensor is faulted)."""
        cols = self._cols(mask)
        if cols is None:
            return NackReason.BAD_CUP
        core = self._core
        if core.F[cols].any():  # what the firmware knows, not the injected fault
            return NackReason.SENSOR_FAULT
        core.tare[cols] = core.reading_now(cols)
        return None

    def set_rate(self, hz: int) -> int | None:
        """New sample rate, 10..2000 Hz (from the next sample)."""
        if not MIN_RATE_HZ <= int(hz) <= MAX_RATE_HZ:
            return NackReason.OUT_OF_RANGE
        self._core.set_rate(int(hz))
        self.rate_hz = int(hz)
        self.info = replace(self.info, rate_hz=self.rate_hz)
        return None

    def write_cal(self, cup: int, coeffs: tuple[float, float, float]) -> int | None:
        """Store calibration ``c0 + c1 x + c2 x^2`` for a 1-based cup."""
        if not 1 <= int(cup) <= self.cups:
            return NackReason.BAD_CUP
        c = np.asarray(coeffs, dtype=float)
        if c.shape != (3,) or not np.isfinite(c).all() or c[1] <= 0:
            return NackReason.OUT_OF_RANGE
        self._core.cal[cup - 1] = c
        self._core.cal_valid[cup - 1] = True
        return None

    def read_cal(self, cup: int) -> tuple[tuple[float, float, float], bool]:
        """(coefficients, valid) of a 1-based cup."""
        if not 1 <= int(cup) <= self.cups:
            raise ValueError(f"cup {cup} is outside 1..{self.cups}")
        c = self._core.cal[cup - 1]
        return (float(c[0]), float(c[1]), float(c[2])), bool(self._core.cal_valid[cup - 1])

    def set_limit(self, kpa: float) -> int | None:
        """New interlock hard limit, kPa suction (0 < kpa <= 90)."""
        kpa = float(kpa)
        if not 0.0 < kpa <= 90.0:
            return NackReason.OUT_OF_RANGE
        self._core.limit = kpa
        self.info = replace(self.info, hard_limit_kpa=kpa)
        return None

    def set_reference(self, suction_kpa: float) -> None:
        """calibration_rig: drive the bench chamber to ``suction_kpa`` from now
        on; the scripted steps that remain are cancelled."""
        if self.scenario.name != "calibration_rig":
            raise ValueError("set_reference needs the calibration_rig scenario")
        kpa = float(suction_kpa)
        if not 0.0 <= kpa <= 100.0:
            raise ValueError(f"reference {kpa:g} kPa is outside 0..100")
        core = self._core
        for j in range(core.nc):
            core.actions[j] = [a for a in core.actions[j] if a[2] not in ("rig",)]
            core.act_us[j] = core.actions[j][0][0] if core.actions[j] else _NEVER
            core.rig[j], core.rig_set[j] = True, kpa
        self._reanchor(np.arange(core.nc))

    @property
    def reference_kpa(self) -> float | None:
        """calibration_rig: the chamber's present set point, kPa (None elsewhere)."""
        if self.scenario.name != "calibration_rig":
            return None
        return float(self._core.rig_set[0]) if self._core.rig[0] else 0.0
