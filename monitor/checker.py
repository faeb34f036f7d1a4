"""The checker: turns sample blocks and device/link messages into condition
changes (:class:`Detection`), one block at a time with numpy.

Every rule works on whole ``(n, cups)`` blocks and carries its state to the
next block, so a stream split into blocks anywhere gives identical detections,
stamped with the device time of the sample that proved them (signal loss: the
last sample's time plus the timeout). The rules, thresholds and reasons are in
docs/alarms.md; the condition names come from :mod:`firmware_bridge.conditions`.

Devices that send status bits (binary protocol) are checked against their
pump/valve/regulating state; text-format devices send none, so a cup counts as
applied while its suction is above ``applied_kpa`` and the pump-based
conditions (detached, leak, blockage, stuck sensor) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np

from firmware_bridge import conditions as C
from firmware_bridge.messages import DeviceEvent, DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import SUCTION_SCALE_KPA, EventCode, Status

from .config import CupConfig, MonitorConfig
from .runs import (
    SENTINEL,
    Lagged,
    MovingSum,
    OnDelay,
    RunClock,
    Segments,
    changes,
    last_index,
    latch,
    prev_rows,
    uniform,
)

#: Order of conditions among detections that share a time and cup.
_ORDER = {name: i for i, name in enumerate(C.CONDITIONS)}
#: Status bits as plain ints (an Enum member lookup costs more than the test on a block).
_PUMP_ON, _VALVE_OPEN, _SENSOR_FAULT, _REGULATING, _INTERLOCK = (
    int(Status.PUMP_ON), int(Status.VALVE_OPEN), int(Status.SENSOR_FAULT),
    int(Status.REGULATING), int(Status.INTERLOCK))
#: Per-cup conditions checked on every block, in report order.
_CUP_CONDITIONS = (C.OVER_SUCTION, C.UNDER_SUCTION, C.DETACHED, C.LEAK, C.BLOCKAGE,
                   C.SENSOR_FAULT, C.INTERLOCK)


@dataclass(frozen=True, slots=True)
class Detection:
    """A condition began (``active``) or ended at device time ``t`` (s).

    cup: 1-based, None for device-wide conditions (signal_loss).
    level: dwell_exceeded step (1 advisory, 2 limit); 1 for other conditions.
    suction_kpa: the reading that decided it (None when there was none).
    """

    t: float
    cup: int | None
    condition: str
    active: bool
    level: int = 1
    suction_kpa: float | None = None


class _Params:
    """Per-cup settings as (cups,) arrays, so cups with different bands check together."""

    def __init__(self, cfg: MonitorConfig, cups: int) -> None:
        per = [cfg.cup(i + 1) for i in range(cups)]
        for f in fields(CupConfig):
            dtype = bool if f.name == "enabled" else float
            setattr(self, f.name, np.array([getattr(c, f.name) for c in per], dtype=dtype))
        self.over = self.band_high_kpa + self.over_margin_kpa
        self.under = self.band_low_kpa - self.under_margin_kpa
        # Derived levels, computed once per configuration (not once per block).
        hyst = self.hysteresis_kpa
        self.over_clear = self.over - hyst
        self.under_clear = self.under + hyst
        self.detached_clear = self.detached_kpa + hyst
        self.leak_window = self.leak_drop_kpa / self.leak_decay_kpa_s
        self.stuck_on = self.stuck_s > 0
        k = cfg.smooth_samples

        def ck(level_kpa: np.ndarray) -> np.ndarray:  # kPa -> smoothed units
            return np.rint(level_kpa / SUCTION_SCALE_KPA * k)

        self.ck_decay = ck(self.leak_decay_kpa_s)
        self.ck_drop = ck(self.leak_drop_kpa)
        self.ck_rise = ck(self.blockage_rise_kpa)
        self.ck_under = ck(self.under)
        self.ck_detached = ck(self.detached_kpa)
        #: The same settings in their fastest broadcast form (a scalar when every
        #: cup shares the value, else a (1, cups) row), for the block arithmetic.
        self.b = SimpleNamespace(**{k: uniform(v) for k, v in vars(self).items()})


def _suction(x: float) -> float | None:
    return round(float(x), 2) if math.isfinite(x) else None


class Checker:
    """Condition detection for one device with ``cups`` cups (see module doc)."""

    def __init__(self, config: MonitorConfig, cups: int) -> None:
        self.config = config
        self.cups = cups
        self.p = _Params(config, cups)
        self._binary = config.status_bits == "on"
        self.last_t: float | None = None       # device time of the last sample, s
        self.last_seen: float | None = None    # host time the last block was seen, s
        self.signal_lost = False
        self.lost_since: float | None = None   # device time signal_loss was raised
        self.blocks = 0
        # Per-cup state, carried from block to block.
        self.last_suction = np.full(cups, np.nan)
        self.last_status = np.zeros(cups, np.uint8)
        self._prev_s = np.full(cups, np.nan, np.float32)
        self._last_change = np.full(cups, np.nan)
        self._dev_fault = np.zeros(cups, bool)
        self._dev_interlock = np.zeros(cups, bool)
        self._applied = np.zeros(cups, bool)
        self._applied_clock = RunClock(cups)
        self._active_clock = RunClock(cups)
        self._reached = np.zeros(cups, bool)
        self._dwell_level = np.zeros(cups, np.int64)
        self._smooth = MovingSum(cups, config.smooth_samples)
        self._segments = Segments(cups)
        self._lagged = Lagged(cups)
        self._delays = {name: OnDelay(cups) for name in _CUP_CONDITIONS}
        self._no_delay = np.zeros(cups)
        # Latest per-cup views for the snapshot (last row of the last block).
        self.applied = np.zeros(cups, bool)
        self.applied_since = np.full(cups, np.nan)
        self.active = np.zeros(cups, bool)
        self.pumped_down = np.zeros(cups, bool)
        #: Masks of the last block for statistics: dict of (n, cups) arrays.
        self.last_masks: dict[str, np.ndarray] = {}

    # ---- configuration ---------------------------------------------------------
    def set_config(self, config: MonitorConfig) -> None:
        """Use new thresholds from the next block on; carried state is kept."""
        self.config = config
        self.p = _Params(config, self.cups)
        if config.status_bits == "on":
            self._binary = True

    def set_band(self, cup: int, low_kpa: float, high_kpa: float) -> MonitorConfig:
        """Change one cup's target band (kPa), e.g. after a SET_BAND command."""
        self.set_config(self.config.with_cup(cup, band_low_kpa=low_kpa, band_high_kpa=high_kpa))
        return self.config

    @property
    def status_bits(self) -> bool:
        """True once the device is known to send status bits (binary protocol)."""
        return self._binary and self.config.status_bits != "off"

    # ---- messages -------------------------------------------------------------
    def on_message(self, msg: object, host_time: float | None = None) -> list[Detection]:
        """DeviceInfo, DeviceEvent and LinkEvent; returns detections they cause."""
        out: list[Detection] = []
        if isinstance(msg, DeviceInfo):
            if self.config.status_bits == "auto":
                self._binary = True
        elif isinstance(msg, DeviceEvent):
            if self.config.status_bits == "auto":
                self._binary = True
            cups = range(self.cups) if msg.cup == 0 else [msg.cup - 1]
            for c in cups:
                if not 0 <= c < self.cups or not self.p.enabled[c]:
                    continue
                out.extend(self._device_event(msg, c))
        elif isinstance(msg, LinkEvent) and msg.state in (LinkState.LOST, LinkState.ERROR):
            # Before any data the link reports "no valid data" itself (docs/link.md).
            if not self.signal_lost and self.last_t is not None:
                t = self.last_t
                h = msg.host_time or host_time
                if self.last_seen is not None and h:
                    t += min(max(0.0, h - self.last_seen), self.config.signal_loss_s)
                out.append(self._lose(t))
        return out

    def _device_event(self, ev: DeviceEvent, c: int) -> list[Detection]:
        value = ev.value * SUCTION_SCALE_KPA
        # An EVENT no later than the last checked sample is history: that sample
        # and those before it carried the device's flags (INTERLOCK and
        # SENSOR_FAULT bits), already judged. The decoder delivers a chunk's
        # events after its samples, so acting on it would raise again an alarm
        # that came and went in that chunk, stamped in the past, and hold it
        # until the next chunk (replay != live). Clearing events always apply.
        stale = self.last_t is not None and ev.t <= self.last_t
        if stale and ev.code in (EventCode.INTERLOCK_TRIPPED, EventCode.SENSOR_FAULT):
            return []
        if ev.code == EventCode.INTERLOCK_TRIPPED:
            self._dev_interlock[c] = True
            if self._delays[C.INTERLOCK].force(c, ev.t, 0.0):
                return [Detection(ev.t, c + 1, C.INTERLOCK, True, 1, round(value, 2))]
        elif ev.code == EventCode.INTERLOCK_CLEARED:
            self._dev_interlock[c] = False
        elif ev.code == EventCode.SENSOR_FAULT:
            self._dev_fault[c] = True
            if self._delays[C.SENSOR_FAULT].force(c, ev.t, float(self.p.sensor_fault_delay_s[c])):
                return [Detection(ev.t, c + 1, C.SENSOR_FAULT, True, 1, None)]
        elif ev.code == EventCode.SENSOR_OK:
            self._dev_fault[c] = False
        return []

    # ---- signal loss ------------------------------------------------------------
    def _lose(self, t: float) -> Detection:
        self.signal_lost = True
        self.lost_since = t
        return Detection(t, None, C.SIGNAL_LOSS, True)

    def _regain(self, t: float) -> Detection:
        self.signal_lost = False
        t = max(t, self.lost_since if self.lost_since is not None else t)
        self.lost_since = None
        return Detection(t, None, C.SIGNAL_LOSS, False)

    def on_idle(self, host_time: float) -> list[Detection]:
        """Host-clock tick (s): raise signal_loss when no block was seen for longer
        than the timeout, stamped at the last sample's device time + timeout."""
        timeout = self.config.signal_loss_s
        if (self.signal_lost or self.last_seen is None or self.last_t is None
                or host_time - self.last_seen <= timeout):
            return []
        return [self._lose(self.last_t + timeout)]

    def _gaps(self, block: SampleBlock) -> list[Detection]:
        """signal_loss raised and cleared around device-time gaps > timeout (before
        and inside the block), and cleared on the first sample after a loss."""
        t = block.t
        timeout = self.config.signal_loss_s
        out: list[Detection] = []
        gaps: list[tuple[float, int]] = []
        if self.last_t is not None:
            d0 = t[0] - self.last_t
            if d0 > timeout or (block.gap_before and d0 <= 0):
                gaps.append((self.last_t, 0))
        inside = np.flatnonzero(np.diff(t) > timeout) + 1
        gaps.extend((float(t[i - 1]), int(i)) for i in inside)
        if self.signal_lost and not (gaps and gaps[0][1] == 0):
            out.append(self._regain(float(t[0])))
        for before, i in gaps:
            if not self.signal_lost:
                out.append(self._lose(before + timeout))
            out.append(self._regain(float(t[i])))
        return out

    # ---- blocks -----------------------------------------------------------------
    def process(self, block: SampleBlock, host_now: float | None = None) -> list[Detection]:
        """Check one block; return detections sorted by device time.

        ``host_now``: host time (s) the block is processed (the live pipeline passes
        ``time.monotonic()``; signal loss by host clock counts from the later of
        this and ``block.host_time``)."""
        if block.n == 0:
            return []
        if block.cups != self.cups:
            raise ValueError(f"block has {block.cups} cups, checker expects {self.cups}")
        p = self.p
        t = np.asarray(block.t, np.float64)
        s32 = np.asarray(block.suction, np.float32)
        s = s32.astype(np.float64)
        st = np.asarray(block.status, np.uint8)
        mode = self.config.status_bits
        if mode == "off":
            st = np.zeros_like(st)

        dets = self._gaps(block)
        seen = [h for h in (block.host_time, host_now) if h]
        if seen:
            self.last_seen = max(seen)

        # Binary mode from the first sample that carries any status bit, for good:
        # a scalar when it holds for the whole block (the usual case), else (n, 1).
        binary: np.ndarray | np.bool_
        if mode == "auto" and not self._binary:
            rows = np.logical_or.accumulate(st.any(axis=1))
            self._binary = bool(rows[-1])
            binary = np.bool_(rows[0]) if rows[0] == rows[-1] else rows[:, None]
        else:
            binary = np.bool_(mode != "off")

        def bit(b: int) -> np.ndarray:
            return (st & b) != 0

        pump, valve, fault_bit = bit(_PUMP_ON), bit(_VALVE_OPEN), bit(_SENSOR_FAULT)
        regulating, interlock = bit(_REGULATING) & binary, bit(_INTERLOCK)
        b = p.b  # settings as scalars when every cup shares them (fast broadcasts)
        enabled = b.enabled
        finite = np.isfinite(s)
        with np.errstate(invalid="ignore"):
            in_range = (s > b.sensor_min_kpa) & (s < b.sensor_max_kpa)
            valid = finite & in_range & ~fault_bit

            def above(level: np.ndarray) -> np.ndarray:
                return valid & (s >= level)

            def below(level: np.ndarray) -> np.ndarray:
                return valid & (s < level)

            # Applied (cup on the skin): regulating, or holding suction; hysteresis
            # between applied_kpa and released_kpa so noise at ~0 cannot toggle it.
            applied = latch(enabled & (regulating | above(b.applied_kpa)),
                            ~enabled | (~regulating & below(b.released_kpa)), self._applied)
            applied_start = self._applied_clock.step(applied, t)
            # Active: the band is being held (regulating, not venting, not tripped);
            # text devices: applied.
            active = enabled & _pick(binary, regulating & ~valve & ~interlock, applied)
            active_start = self._active_clock.step(active, t)
            reached = latch(active & above(b.band_low_kpa), ~active, self._reached)
            # Pumped down: the band was reached once, or the grace period is over.
            if reached.all():
                pumped = active
            else:
                pumped = active & (reached | (t[:, None] - active_start >= b.pumpdown_grace_s))
            pumped_bin = pumped & binary

            # Smoothed integer suction (k samples of 0.01 kPa) for leak/blockage evidence;
            # thresholds in the same units are p.ck_* (_Params).
            all_finite = bool(finite.all())
            q = np.rint(s / SUCTION_SCALE_KPA)
            q = (q if all_finite else np.where(finite, q, 0)).astype(np.int64)
            sm = self._smooth.step(q, valid)

            eligible = active & binary & valid
            code = np.where(eligible, np.where(pump, 1, 2), 0)
            # peak: pump-off rows the phase's highest smoothed suction so far,
            # pump-on rows minus its lowest (Segments); SENTINEL before a valid one.
            seg_t0, peak, rise = self._segments.step(code, t, sm)
            span = t[:, None] - seg_t0
            on, off = code == 1, code == 2
            sm_ok = (sm > SENTINEL) & (peak > SENTINEL)
            rise_ok = sm_ok & (rise > SENTINEL)
            # Leak evidence while the pump is off: the phase so far lost leak_drop_kpa at
            # >= leak_decay_kpa_s, or (a leak that began mid-hold) the last
            # window = drop/decay seconds of the phase lost leak_drop_kpa.
            window = p.leak_window
            ago = self._lagged.step(t, sm, window)
            drop = peak - sm
            decay_floor = b.ck_decay * span  # smoothed units lost in `span` s
            fell = (drop >= b.ck_drop) & (drop >= decay_floor)
            fell_lately = (span >= b.leak_window) & (ago > SENTINEL) & (ago - sm >= b.ck_drop)
            leak_decay = off & pumped & sm_ok & (fell | fell_lately)
            leak_effort = (on & pumped & rise_ok & (span >= b.leak_pump_s)
                           & (rise >= b.ck_rise) & (sm >= b.ck_under))
            # Leak ends after a hold of leak_clear_s whose last window shows no fast decay.
            leak_clear = ~pumped_bin | (off & sm_ok & (span >= b.leak_clear_s) & (ago > SENTINEL)
                                        & (ago - sm < b.ck_drop))
            blocked = (on & rise_ok & (span >= b.blockage_s) & (rise < b.ck_rise)
                       & (sm >= b.ck_detached))
            unblocked = ~(active & binary) | off | (on & rise_ok & (rise >= b.ck_rise))

            # Stuck sensor: bit-identical readings while the regulator works the cup.
            changed = s32 != prev_rows(s32, self._prev_s)
            if not all_finite:
                changed |= ~finite
            stuck, last_change = self._stuck(changed, t, active & binary & finite, active_start)
            device_fault = enabled & (fault_bit | self._dev_fault[None, :])
            sensor_bad = enabled & (~finite | ~in_range | stuck) | device_fault
            tripped = enabled & (interlock | self._dev_interlock[None, :])

            # (name, set, clear, delay, immediate): clear and immediate are only
            # evaluated for a rule that is latched, alarmed or set in this block (a
            # quiet rule leaves its OnDelay untouched and changes nothing).
            rules = (
                (C.OVER_SUCTION, enabled & valid & (s > b.over),
                 lambda: ~enabled | below(b.over_clear), p.over_delay_s,
                 lambda: enabled & above(b.hard_limit_kpa)),
                (C.UNDER_SUCTION, pumped & below(b.under),
                 lambda: ~pumped | (valid & (s > b.under_clear)), p.under_delay_s, None),
                (C.DETACHED, pumped_bin & below(b.detached_kpa),
                 lambda: ~pumped_bin | above(b.detached_clear), p.detached_delay_s, None),
                (C.LEAK, leak_decay | leak_effort, lambda: leak_clear, p.leak_delay_s, None),
                (C.BLOCKAGE, blocked, lambda: unblocked, p.blockage_delay_s, None),
                # The device's own flag (bit or EVENT, sent with the same sample) is
                # its judgement, already debounced (stuck after 1 s): at once, like
                # its EVENT. Were the bit delayed, the stamp would depend on whether
                # the EVENT was read before or after the block holding its sample
                # (chunking), and the next block's on-delay would undo the EVENT's
                # raise. The delay rides out host-side evidence (no reading, range).
                (C.SENSOR_FAULT, sensor_bad, lambda: ~sensor_bad, p.sensor_fault_delay_s,
                 lambda: device_fault),
                (C.INTERLOCK, tripped, lambda: ~tripped, self._no_delay, None),
            )
            rows_all, cols_all, cond_all, act_all, lvl_all = [], [], [], [], []
            for name, set_, clear, delay, immediate in rules:
                od = self._delays[name]
                if od.quiet(set_):
                    continue
                alarm, before = od.step(t, set_, clear(), delay,
                                        None if immediate is None else immediate())
                r, c = changes(alarm, before)
                if r.size:
                    rows_all.append(r)
                    cols_all.append(c)
                    cond_all.append(np.full(r.shape, _ORDER[name]))
                    act_all.append(alarm[r, c])
                    lvl_all.append(np.ones(r.shape, np.int64))

        # Dwell: how long the cup has been on; step 1 advisory, step 2 limit.
        r, c, new, old, last_level = self._dwell(t, applied, applied_start)
        if r.size:
            rows_all.append(r)
            cols_all.append(c)
            cond_all.append(np.full(r.shape, _ORDER[C.DWELL_EXCEEDED]))
            act_all.append(new > 0)
            lvl_all.append(np.where(new > 0, new, old))

        if rows_all:
            rows = np.concatenate(rows_all)
            cols = np.concatenate(cols_all)
            cond = np.concatenate(cond_all)
            act = np.concatenate(act_all)
            lvl = np.concatenate(lvl_all)
            order = np.lexsort((act, cond, cols, rows))
            for i in order:
                r_, c_ = int(rows[i]), int(cols[i])
                dets.append(Detection(float(t[r_]), c_ + 1, C.CONDITIONS[int(cond[i])],
                                      bool(act[i]), int(lvl[i]), _suction(s[r_, c_])))
        dets.sort(key=lambda d: (d.t, -1 if d.cup is None else d.cup, _ORDER[d.condition], d.active))

        # Carry state to the next block.
        self._applied = applied[-1].copy()
        self._reached = reached[-1].copy()
        self._dwell_level = last_level
        self._prev_s = s32[-1].copy()
        self._last_change = last_change
        self.last_t = float(t[-1])
        # An invalid reading (no reading, out of range, flagged) is never shown as a value.
        self.last_suction = np.where(valid[-1], s[-1], np.nan)
        self.last_status = st[-1].copy()
        self.applied = applied[-1].copy()
        self.applied_since = np.where(self.applied, applied_start[-1], np.nan)
        self.active = active[-1].copy()
        self.pumped_down = pumped[-1].copy()
        self.blocks += 1
        self.last_masks = {"t": t, "suction": s, "valid": valid, "applied": applied,
                           "checked": pumped, "active": active}
        return dets

    def _stuck(self, changed: np.ndarray, t: np.ndarray, watched: np.ndarray,
               active_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stuck-sensor rows (n, cups) and each cup's last change time at the block's
        end (cups,) s, from ``changed`` (n, cups): reading differs from the one before.

        A row is stuck when the readings have not changed for ``stuck_s`` while the
        cup is ``watched`` (regulated). The exact per-row test needs a running
        "last change" per cup; it is skipped when a bound proves no row can be
        stuck: an unchanged run within a cup is at most its unchanged rows times
        the largest row spacing, plus the run carried in."""
        p, lc0 = self.p, self._last_change
        if changed[-1].all():
            last = np.full(self.cups, t[-1])
        else:  # the last changed row per cup: the first True counting from the end
            back = np.argmax(changed[::-1], axis=0)
            found = changed[changed.shape[0] - 1 - back, np.arange(self.cups)]
            last = np.where(found, t[changed.shape[0] - 1 - back], lc0)
        if not (p.stuck_on.any() and watched.any()):
            return np.zeros(changed.shape, bool), last
        if not np.isnan(lc0).any():
            unchanged = (np.ones(t.size) @ ~changed)  # per cup
            step = max(float(np.diff(t).max()), 0.0) if t.size > 1 else 0.0  # row spacing, s
            longest = np.maximum(t[0] - lc0, 0.0) + unchanged * step
            # 1 ms margin for the rounding of device-time differences.
            if (longest + 1e-3 < p.stuck_s).all():
                return np.zeros(changed.shape, bool), last
        last_change = _last_time(changed, t, lc0)
        stuck_since = np.fmax(last_change, active_start)
        with np.errstate(invalid="ignore"):
            stuck = watched & p.b.stuck_on & (t[:, None] - stuck_since >= p.b.stuck_s)
        return stuck, last

    def _dwell(self, t: np.ndarray, applied: np.ndarray, applied_start: np.ndarray
               ) -> tuple[np.ndarray, ...]:
        """Dwell steps (0 none, 1 advisory, 2 limit) from time on the skin: the
        (rows, cols) where a cup's step changes, its new and previous step there,
        and every cup's step at the last row (cups,).

        Cups on since an earlier block and throughout this one, whose step is
        the same at both ends (steps only rise with time on the skin), and cups
        off throughout, cannot change: only the others are computed per row."""
        p = self.p
        prev = self._dwell_level
        last = np.zeros(self.cups, np.int64)
        busy = np.arange(self.cups)
        if t.size < 2 or not (np.diff(t) < 0).any():
            held, idle = self._applied_clock.held, self._applied_clock.idle
            with np.errstate(invalid="ignore"):
                ends = np.array([t[0], t[-1]])[:, None] - applied_start[-1]
                lv = (ends >= p.dwell_advisory_s).astype(np.int64) + (ends >= p.dwell_limit_s)
            same = held & (lv[0] == prev) & (lv[1] == lv[0])
            off = idle & (prev == 0)
            last = np.where(same, lv[1], 0)
            busy = np.flatnonzero(~(same | off))
        if busy.size == 0:
            empty = np.empty(0, np.int64)
            return empty, empty, empty, empty, last
        on_for = t[:, None] - applied_start[:, busy]
        level = np.where(applied[:, busy], (on_for >= p.dwell_advisory_s[busy]).astype(np.int64)
                         + (on_for >= p.dwell_limit_s[busy]), 0)
        r, c = changes(level, prev[busy])
        last[busy] = level[-1]
        return r, busy[c], level[r, c], prev_rows(level, prev[busy])[r, c], last

    def alarm_state(self, condition: str) -> np.ndarray:
        """Per-cup bool (cups,): the condition's alarm is on after the last block."""
        if condition == C.DWELL_EXCEEDED:
            return self._dwell_level > 0
        return self._delays[condition].alarm.copy()

    @property
    def dwell_level(self) -> np.ndarray:
        """Per-cup dwell step (cups,): 0 none, 1 advisory, 2 limit."""
        return self._dwell_level.copy()


def _pick(cond: np.ndarray | np.bool_, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.where(cond, a, b)``, without the pass when ``cond`` is a scalar."""
    if np.ndim(cond) == 0:
        return a if cond else b
    return np.where(cond, a, b)


def _last_time(mask: np.ndarray, t: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row and column of (n, cups) ``mask``, the time ``t`` (n,) of the last True
    row at or before it; ``first`` (cups,) before any."""
    li = last_index(mask)
    return np.where(li >= 0, t[np.maximum(li, 0)], first[None, :])
