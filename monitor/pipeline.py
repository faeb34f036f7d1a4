"""The monitor as one listener: checker + alarm manager + statistics.

A source's Notifier calls :meth:`MonitorPipeline.on_block`, ``on_message`` and
``on_idle`` on the pipeline's own dispatch thread. The GUI thread calls
:meth:`~MonitorPipeline.snapshot` (~30 Hz), :meth:`~MonitorPipeline.acknowledge`
and :meth:`~MonitorPipeline.pause_audio`; all are thread-safe. Alarm events
go, in order, to every sink added with :meth:`~MonitorPipeline.add_event_sink`
(recorder, terminal view, GUI, JSONL writer). A sink runs on the thread that
caused the event (usually the dispatch thread; the GUI thread for an
acknowledgement), so it must be quick and thread-safe: hand work to a queue.

Usage::

    pipe = MonitorPipeline(load_config("cupmon.toml"))
    pipe.add_event_sink(lambda ev: print(json.dumps(ev.to_dict())))
    notifier.add_listener(pipe)
    ...
    snap = pipe.snapshot()
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from firmware_bridge import conditions as C
from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import Status

from .alarms import AlarmEvent, AlarmManager
from .checker import Checker, Detection
from .config import ConfigError, MonitorConfig
from .snapshot import CupView, MonitorSnapshot
from .stats import Stats

log = logging.getLogger(__name__)

EventSink = Callable[[AlarmEvent], None]


@dataclass(frozen=True, slots=True)
class BandChange:
    """Cup ``cup``'s band became ``low_kpa``..``high_kpa`` for the samples after
    device time ``t`` (None: before any sample was checked). The pipeline
    gives one to its band sinks whenever a cup's band changes (a recorder
    stores them), and takes one as a message in stream order (a replay of a
    stored session re-applies them where they happened)."""

    t: float | None
    cup: int
    low_kpa: float
    high_kpa: float
    wall: float | None = None


BandSink = Callable[[BandChange], None]

#: State word shown for a cup's highest alarm.
_ALARM_WORDS = {
    C.OVER_SUCTION: "Over suction", C.UNDER_SUCTION: "Under suction", C.DETACHED: "Detached",
    C.LEAK: "Leak", C.BLOCKAGE: "Blocked", C.SENSOR_FAULT: "Sensor fault",
    C.INTERLOCK: "Vented by safety limit", C.DWELL_EXCEEDED: "Time on exceeded",
}
_LINK_DOWN = (LinkState.LOST, LinkState.RECONNECTING, LinkState.ERROR, LinkState.CLOSED)


#: Coalesce while the last check took more than 1/(1 + _BUSY) of the time since.
_BUSY = 4.0


class MonitorPipeline(Listener):
    """Checker, alarms and statistics behind the Listener interface (module doc).

    config: thresholds (defaults if None). cups: known cup count, else taken
    from the first DeviceInfo or block. clock: host monotonic clock (s).
    wall_clock: aware datetime "now" for event wall times. wall_anchor:
    (device t, datetime) fixing the wall time of a device time (replay);
    without it the anchor follows the host clock block by block.
    batch_s: blocks arriving within this many seconds (device span or host
    time since the last check) are checked together; a 1 kHz link delivering
    one frame per block would otherwise cost a whole check per sample. Events
    keep their device-time stamps; only their wall-clock delivery waits up to
    batch_s (or to the next idle tick, 50 ms, when data stops). 0 disables it.
    While checking takes more than a fifth of the time (the time since the
    last check ended is shorter than four times what that check took: a
    replay as fast as possible, a live reader catching up, a slow text
    decoder), a batch is not cut at batch_s of device span but waits for
    batch_s of host time since the last check, so fewer, larger checks catch
    up (a check's fixed cost is then shared by more samples: text replays
    decode + check ~40 % faster than with "more than half the time");
    delivery still waits at most batch_s.
    batch_values: whatever the time rule says, a batch never holds more than
    this many values (samples x cups: 2048 samples of 16 cups, 4096 of 8; a
    larger single block is checked alone). The checker's temporaries grow
    with the block it checks (~3.4 KB per 16-cup sample), so without this
    bound a fast source keeping a backlog waiting (a replay) makes each
    check, and the memory it needs, as big as that backlog. Per sample,
    checks of 16-32k values cost least (their temporaries stay in the CPU
    caches): 8 cups x 1 kHz, 1.16 us per frame at 32k values against 1.24 at
    16k and 1.39 at 64k; 64k-sample checks of 16 cups cost twice as much.
    """

    idle_interval = 0.05

    def __init__(self, config: MonitorConfig | None = None, cups: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], _dt.datetime] | None = None,
                 wall_anchor: tuple[float, _dt.datetime] | None = None,
                 batch_s: float = 0.02, batch_values: int = 1 << 15) -> None:
        self._config = config or MonitorConfig()
        self._clock = clock
        self._wall_clock = wall_clock or (lambda: _dt.datetime.now().astimezone())
        self._anchor = wall_anchor
        self._anchor_fixed = wall_anchor is not None
        self._lock = threading.RLock()
        self._emit_lock = threading.RLock()  # a sink may acknowledge (re-entry)
        self._pending: collections.deque[AlarmEvent] = collections.deque()
        self._sinks: list[EventSink] = []
        self._band_sinks: list[BandSink] = []
        self._history: collections.deque[AlarmEvent] = collections.deque(maxlen=self._config.history)
        self._count = 0
        self._alarms = AlarmManager(self._config, wall=self._wall)
        self._checker: Checker | None = None
        self._stats: Stats | None = None
        self._device: DeviceInfo | None = None
        self._link: LinkState | None = None
        self._last_proc: float | None = None  # host arrival time of the last checked block
        self._last_rx: float | None = None    # host arrival time of the last block
        self._last_proc_at = -math.inf        # host time of the last check
        self._last_cost = 0.0                 # host time the last check took, s
        self._batch_s = batch_s
        self._batch_values = max(1, int(batch_values))
        self._pending_blocks: list[SampleBlock] = []
        self._pending_values = 0              # samples x cups in _pending_blocks
        if cups:
            self._ensure(cups)

    # ---- wiring ---------------------------------------------------------------
    def add_event_sink(self, callback: EventSink) -> None:
        """Call ``callback(event)`` for every future alarm event, in order."""
        with self._emit_lock:
            self._sinks.append(callback)

    def remove_event_sink(self, callback: EventSink) -> None:
        with self._emit_lock:
            self._sinks = [s for s in self._sinks if s is not callback]

    @property
    def config(self) -> MonitorConfig:
        return self._config

    def add_band_sink(self, callback: BandSink) -> None:
        """Call ``callback(BandChange)`` whenever a cup's band changes (quick and
        thread-safe: it runs on the caller of set_config/set_band)."""
        with self._emit_lock:
            self._band_sinks.append(callback)

    def remove_band_sink(self, callback: BandSink) -> None:
        with self._emit_lock:
            self._band_sinks = [s for s in self._band_sinks if s is not callback]

    def set_config(self, config: MonitorConfig) -> None:
        """New thresholds from the next block on (alarm state is kept). Blocks
        received but not yet checked are checked with the old ones first, so
        the change has one device time (the band sinks get it)."""
        with self._lock:
            changes = self._apply_config(config)
        self._flush()
        self._tell_bands(changes)

    def set_band(self, cup: int, low_kpa: float, high_kpa: float) -> None:
        """Change one cup's band (kPa); call it when the GUI sends SET_BAND."""
        with self._lock:
            changes = self._apply_config(self._config.with_cup(
                cup, band_low_kpa=low_kpa, band_high_kpa=high_kpa))
        self._flush()
        self._tell_bands(changes)

    def _apply_config(self, config: MonitorConfig) -> list[BandChange]:
        # Caller holds self._lock.
        self._process_pending()
        old = self._config
        self._config = config
        self._alarms.config = config
        c = self._checker
        if c is not None:
            c.set_config(config)
        if not self._band_sinks:
            return []
        cups = range(1, c.cups + 1) if c is not None else sorted(set(old.cups) | set(config.cups))
        t = None if c is None else c.last_t
        wall = time.time()
        out = []
        for cup in cups:
            a, b = old.cup(cup), config.cup(cup)
            if (a.band_low_kpa, a.band_high_kpa) != (b.band_low_kpa, b.band_high_kpa):
                out.append(BandChange(t, cup, b.band_low_kpa, b.band_high_kpa, wall))
        return out

    def _tell_bands(self, changes: list[BandChange]) -> None:
        if not changes:
            return
        with self._emit_lock:
            sinks = list(self._band_sinks)
        for ch in changes:
            for sink in sinks:
                try:
                    sink(ch)
                except Exception:  # one bad sink must not stop the others
                    log.exception("band sink %r failed", sink)

    def _ensure(self, cups: int) -> None:
        if self._checker is None or self._checker.cups != cups:
            if self._checker is not None:
                log.warning("cup count changed from %d to %d: checker state reset",
                            self._checker.cups, cups)
            self._checker = Checker(self._config, cups)
            if self._device is not None and self._config.status_bits == "auto":
                self._checker.on_message(self._device)
            self._stats = Stats(cups, self._config.signal_loss_s)

    def _wall(self, t: float) -> str:
        if self._anchor is None:
            when = self._wall_clock()
        else:
            t0, w0 = self._anchor
            when = w0 + _dt.timedelta(seconds=t - t0)
        if when.tzinfo is None:
            when = when.astimezone()
        return when.isoformat(timespec="milliseconds")

    def _device_now(self, host: float) -> float | None:
        """Best estimate of the device clock at host time ``host`` (s)."""
        c = self._checker
        if c is None or c.last_t is None:
            return None
        if self._last_proc is None:
            return c.last_t
        return c.last_t + max(0.0, host - self._last_proc)

    # ---- Listener -------------------------------------------------------------
    def on_block(self, block: SampleBlock) -> None:
        if block.n == 0:
            return
        with self._lock:
            now = self._clock()
            pend = self._pending_blocks
            values = block.n * block.cups
            if pend and (block.gap_before or block.cups != pend[0].cups
                         or self._pending_values + values > self._batch_values):
                self._process_pending()
                # _process_pending starts a new list: append to that one, or the
                # block would go out with the old list and never be checked.
                pend = self._pending_blocks
            pend.append(block)
            self._pending_values += values
            self._last_rx = now
            span = float(block.t[-1] - pend[0].t[0])
            since = now - self._last_proc_at
            busy = since < _BUSY * self._last_cost  # checking > 1/5 of the time: coalesce
            if (since >= self._batch_s or (span >= self._batch_s and not busy)
                    or self._pending_values >= self._batch_values):
                self._process_pending()
        self._flush()

    def _process_pending(self) -> None:
        """Check the blocks received so far as one (identical detections: the checker
        is block-split invariant; only the CPU cost per sample falls)."""
        blocks, self._pending_blocks = self._pending_blocks, []
        self._pending_values = 0
        if not blocks:
            return
        if len(blocks) == 1:
            block = blocks[0]
        else:
            block = SampleBlock(np.concatenate([b.t for b in blocks]),
                                np.concatenate([b.suction for b in blocks]),
                                np.concatenate([b.status for b in blocks]),
                                max(b.host_time for b in blocks), blocks[0].lost_before,
                                blocks[0].gap_before)
        self._ensure(block.cups)
        checker, stats = self._checker, self._stats
        assert checker is not None and stats is not None
        began = self._clock()
        if not self._anchor_fixed:
            self._anchor = (float(block.t[-1]), self._wall_clock())
        dets = checker.process(block, host_now=self._last_rx)
        m = checker.last_masks
        stats.update(m["t"], m["suction"], m["valid"], m["applied"], m["checked"],
                     checker.p.band_low_kpa, checker.p.band_high_kpa)
        self._last_proc = self._last_rx
        self._last_proc_at = self._clock()
        self._last_cost = self._last_proc_at - began
        self._emit(self._alarms.feed(dets) + self._alarms.tick(float(block.t[-1])))

    def on_message(self, msg: object) -> None:
        if isinstance(msg, BandChange):  # a replayed session's band, in stream order
            try:
                self.set_band(msg.cup, msg.low_kpa, msg.high_kpa)
            except ConfigError as exc:
                log.warning("band of cup %d not applied: %s", msg.cup, exc)
            return
        with self._lock:
            self._process_pending()  # keep stream order: blocks before this message
            dets: list[Detection] = []
            if isinstance(msg, DeviceInfo):
                self._device = msg
                self._ensure(msg.cups)
            elif isinstance(msg, LinkEvent):
                self._link = msg.state
                if msg.info is not None:
                    self._device = msg.info
                    self._ensure(msg.info.cups)
            if self._checker is not None:
                dets = self._checker.on_message(msg, host_time=self._clock())
            self._emit(self._alarms.feed(dets))
        self._flush()

    def on_idle(self, host_time: float) -> None:
        with self._lock:
            self._process_pending()
            if self._checker is None:
                return
            dets = self._checker.on_idle(host_time)
            events = self._alarms.feed(dets)
            t = self._device_now(host_time)
            if t is not None:
                events += self._alarms.tick(t)
            self._emit(events)
        self._flush()

    def stop(self) -> None:
        with self._lock:
            self._process_pending()
        self._flush()

    # ---- user actions (any thread) ------------------------------------------------
    def acknowledge(self, cup: int | None = None, condition: str | None = None) -> list[AlarmEvent]:
        """Acknowledge alarms of a cup and/or condition (None: all). Returns the events."""
        with self._lock:
            t = self._device_now(self._clock()) or 0.0
            events = self._alarms.acknowledge(t, cup, condition)
            self._emit(events)
        self._flush()
        return events

    def pause_audio(self, seconds: float | None = None) -> list[AlarmEvent]:
        """Silence present alarms for ``seconds`` (default config.audio_pause_s)."""
        with self._lock:
            t = self._device_now(self._clock()) or 0.0
            events = self._alarms.pause_audio(t, seconds)
            self._emit(events)
        self._flush()
        return events

    # ---- events ---------------------------------------------------------------
    def _emit(self, events: list[AlarmEvent]) -> None:
        # Called under self._lock: history order == event order.
        for ev in events:
            self._history.append(ev)
            self._count += 1
            self._pending.append(ev)

    def _flush(self) -> None:
        with self._emit_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        return
                    ev = self._pending.popleft()
                for sink in self._sinks:
                    try:
                        sink(ev)
                    except Exception:  # one bad sink must not stop the others
                        log.exception("alarm event sink %r failed", sink)

    def flush(self) -> None:
        """Check any blocks still waiting to be coalesced (see ``batch_s``) now."""
        with self._lock:
            self._process_pending()
        self._flush()

    def events(self, since: int = 0) -> list[AlarmEvent]:
        """Alarm events numbered ``since`` and later (0 = oldest kept); checks any
        blocks still waiting first, so a replay read right after
        ``Notifier.join_idle`` is complete."""
        self.flush()
        with self._lock:
            first = self._count - len(self._history)
            skip = max(0, since - first)
            return list(self._history)[skip:]

    @property
    def event_count(self) -> int:
        """Events so far (pass to :meth:`events` to get only newer ones)."""
        return self._count

    def reset_stats(self) -> None:
        """Start the therapy statistics afresh from the next block (a recorded
        session starting on a running connection). Alarms are not touched."""
        with self._lock:
            self._process_pending()
            if self._stats is not None:
                self._stats = Stats(self._stats.cups, self._config.signal_loss_s)
        self._flush()

    def stats_summary(self) -> dict:
        """Per-cup therapy statistics (JSON-serialisable), empty before data."""
        self.flush()
        with self._lock:
            return self._stats.summary() if self._stats is not None else {"duration_s": 0.0, "cups": []}

    # ---- snapshot -------------------------------------------------------------
    def snapshot(self) -> MonitorSnapshot:
        """The state now, for a display (cheap: no array work beyond cups)."""
        with self._lock:
            now = self._clock()
            c = self._checker
            alarms = tuple(self._alarms.alarms())
            t_dev = self._device_now(now)
            audio = self._alarms.audio(t_dev)
            cups: tuple[CupView, ...] = ()
            live = False
            if c is not None and c.last_t is not None:
                stale = (self._last_rx is not None
                         and now - self._last_rx > self._config.signal_loss_s)
                live = not (c.signal_lost or stale or self._link in _LINK_DOWN)
                pct = self._stats.time_in_target_pct() if self._stats is not None else None
                cups = tuple(self._cup_view(c, i, live, alarms, pct) for i in range(c.cups))
            elif c is not None:
                cups = tuple(self._waiting_view(c, i) for i in range(c.cups))
            return MonitorSnapshot(
                t=c.last_t if c is not None else None, cups=cups, alarms=alarms,
                highest_priority=self._alarms.highest_priority, audio=audio, signal_ok=live,
                link=self._link, device=self._device,
                status_bits=bool(c is not None and c.status_bits), unit=self._config.unit,
                events=self._count)

    def _waiting_view(self, c: Checker, i: int) -> CupView:
        cfg = self._config.cup(i + 1)
        return CupView(i + 1, math.nan, "Waiting for data", "nosignal",
                       (cfg.band_low_kpa, cfg.band_high_kpa), None, None, None, (), False, False,
                       False, cfg.enabled)

    def _cup_view(self, c: Checker, i: int, live: bool, alarms: tuple,
                  pct: np.ndarray | None) -> CupView:
        cup = i + 1
        cfg = self._config.cup(cup)
        status = int(c.last_status[i])
        pump, valve = bool(status & Status.PUMP_ON), bool(status & Status.VALVE_OPEN)
        regulating = bool(status & Status.REGULATING)
        mine = [a for a in alarms if a.cup == cup]
        suction = float(c.last_suction[i]) if live else math.nan
        applied = bool(c.applied[i])
        on_for = c.last_t - float(c.applied_since[i]) if applied and c.last_t is not None else None
        remaining = cfg.dwell_limit_s - on_for if on_for is not None else None
        if not cfg.enabled:
            state, severity = "Off", "idle"
        elif not live:
            state, severity = "No signal", "nosignal"
        elif mine:
            top = mine[0]
            state = _ALARM_WORDS.get(top.condition, top.condition)
            if top.condition == C.DWELL_EXCEEDED and top.level < 2:
                state = "Time on: plan release"
            if not top.active:
                state += " (resolved)"
            severity = top.priority
        elif c.status_bits and valve:
            state, severity = "Released", "idle"
        elif c.status_bits and not regulating:
            state, severity = ("Holding", "ok") if applied else ("Idle", "idle")
        elif not c.active[i]:
            state, severity = "Idle", "idle"
        elif not c.pumped_down[i]:
            state, severity = "Pumping down", "ok"
        elif math.isfinite(suction) and cfg.band_low_kpa <= suction <= cfg.band_high_kpa:
            state, severity = "OK", "ok"
        else:
            state, severity = "Out of band", "ok"
        p = None if pct is None or not math.isfinite(pct[i]) else round(float(pct[i]), 1)
        return CupView(cup, suction, state, severity, (cfg.band_low_kpa, cfg.band_high_kpa), p,
                       on_for, remaining, tuple(a.condition for a in mine), pump, valve,
                       regulating, cfg.enabled)
