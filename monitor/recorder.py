"""Recording a session into the store without ever stalling the data path.

:class:`Recorder` is a :class:`~firmware_bridge.listener.Listener`. Its
``on_block`` / ``on_message`` / :meth:`Recorder.record_event` only append to an
in-memory queue; one writer thread owns the only SQLite connection and does
all encoding and disk work. Every ``commit_interval`` (0.5 s) of wall time the
writer stores what arrived, refreshes the session's heartbeat and commits, so
after a crash (even ``kill -9``) the database holds everything up to about
half a second before it, and the session shows as interrupted when next opened
(its writer pid is gone). See docs/sessions.md.

If the disk is slower than the data, the queue fills up to ``max_queued_values``
(samples x cups); further blocks are dropped, counted in :meth:`Recorder.stats`
and in the session row, and the next stored block is marked ``gap_before`` with
the dropped samples in ``lost_before``: a loss is never hidden. A source that
can wait (a capture replayed as fast as possible, an import) passes
``backpressure=True`` instead: ``on_block`` then waits for room, so the
recording is complete and the source runs at the writer's speed.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, SampleBlock

from .store import Store, StoreError, band_change_dict, event_dict

log = logging.getLogger(__name__)

#: Contiguous blocks are stored together, up to this many samples per row.
MAX_ROW_SAMPLES = 4096


class Recorder(Listener):
    """Record blocks, device info, alarm events and summaries of one session.

    ``db`` is a path (default: the user's database) or a :class:`Store` (only
    its path is used: the writer thread opens its own connection). Session
    fields (``source``, ``therapist``, ``patient``, ``notes``, ``targets``) are
    stored when the session starts: explicitly with :meth:`start_session`, or
    lazily on the first data.
    """

    # The writer keeps its own clock; the dispatch thread needs no idle ticks.
    idle_interval = None

    def __init__(self, db: str | Path | Store | None = None, *, source: str = "",
                 therapist: str = "", patient: str = "", notes: str = "",
                 targets: Any = None, info: DeviceInfo | None = None,
                 commit_interval: float = 0.5, max_queued_values: int = 4_000_000,
                 backpressure: bool = False) -> None:
        if isinstance(db, Store):
            self.path = db.path
        else:
            self.path = Path(db) if db is not None else None
        self._fields: dict[str, Any] = dict(source=source, therapist=therapist,
                                            patient=patient, notes=notes, targets=targets,
                                            info=info)
        self.commit_interval = float(commit_interval)
        self.max_queued_values = int(max_queued_values)
        self.backpressure = bool(backpressure)
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._queued_values = 0
        self._pending_drop = 0          # samples dropped since the last queued block
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._session_id: int | None = None
        self._error: StoreError | None = None
        self._stats = dict(blocks_in=0, samples_in=0, dropped_blocks=0, dropped_samples=0,
                           rows=0, samples_written=0, bytes_written=0, events=0, commits=0,
                           write_errors=0)
        self.last_error = ""

    # -- lifecycle -----------------------------------------------------------
    def start_session(self, timeout: float = 10.0, **fields: Any) -> int:
        """Open the database and create the session row (fields override the
        constructor's). Returns the session id; raises :class:`StoreError`
        (one line) if the database cannot be used."""
        with self._cond:
            if self._thread is None:
                self._fields.update(fields)
                self._start_thread()
            elif fields:
                raise RuntimeError("the session has already started")
        if not self._ready.wait(timeout):
            raise StoreError(f"{self.path}: timed out opening the session database")
        if self._error is not None:
            raise self._error
        assert self._session_id is not None
        return self._session_id

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    @property
    def session_id(self) -> int | None:
        """The session's id once the writer created it (else None)."""
        return self._session_id

    @property
    def error(self) -> StoreError | None:
        """Why the database could not be opened, if it could not."""
        return self._error

    def stop(self, timeout: float = 30.0) -> None:
        """Store everything queued, end the session as completed and close.
        Called by the Notifier when the source stops; idempotent."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("recorder: the writer did not finish within %.0f s", timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed. False on timeout
        or if the writer is not running."""
        done = threading.Event()
        with self._cond:
            if self._thread is None or self._finished.is_set():
                return False
            self._queue.append(("flush", done))
            self._cond.notify_all()
        return done.wait(timeout)

    def stats(self) -> dict[str, int]:
        """Counters: blocks/samples in, dropped (queue full), rows, samples and
        payload bytes written, events, commits, write errors."""
        with self._cond:
            return dict(self._stats)

    # -- producer side (any thread, never blocks on disk) ------------------
    def _put(self, kind: str, item: Any) -> None:
        # Caller holds self._cond.
        if self._thread is None and not self._closing:
            self._start_thread()
        self._queue.append((kind, item))
        self._cond.notify_all()

    def on_block(self, block: SampleBlock) -> None:
        """Queue a block for the writer (O(1); if full: drops and counts, or
        with ``backpressure`` waits for room)."""
        values = block.n * max(1, block.cups)
        with self._cond:
            st = self._stats
            st["blocks_in"] += 1
            st["samples_in"] += block.n
            if self.backpressure:
                # A block larger than the whole bound goes alone into an empty queue.
                while (self._queued_values and not self._closing and not self._finished.is_set()
                       and self._queued_values + values > self.max_queued_values):
                    self._cond.wait(0.25)
            if self._closing or self._finished.is_set():
                return
            if self._queued_values + values > self.max_queued_values:
                st["dropped_blocks"] += 1
                st["dropped_samples"] += block.n
                self._pending_drop += block.n
                return
            if self._pending_drop:
                block = SampleBlock(block.t, block.suction, block.status, block.host_time,
                                    block.lost_before + self._pending_drop, True)
                self._pending_drop = 0
            self._queued_values += values
            self._put("block", block)

    def on_message(self, msg: Any) -> None:
        """Keep the device's INFO (serial, firmware, cups, rate) with the session."""
        info = msg if isinstance(msg, DeviceInfo) else (
            msg.info if isinstance(msg, LinkEvent) else None)
        if info is None:
            return
        with self._cond:
            if not self._closing:
                self._put("info", info)

    def record_event(self, ev: Any) -> None:
        """Record an alarm event (``AlarmEvent`` or dict). Thread-safe; after
        the recorder has stopped it is written directly."""
        d = event_dict(ev)
        with self._cond:
            if not self._finished.is_set() and not self._closing:
                self._put("event", d)
                return
        self._write_late(lambda s, sid: s.add_events(sid, [d]))

    def record_band_change(self, change: Any) -> None:
        """Record a band set during the session: a ``BandChange`` (the
        pipeline's band sink: ``pipeline.add_band_sink(rec.record_band_change)``)
        or a dict with ``t``, ``cup``, ``low_kpa``, ``high_kpa`` (``wall``).
        Thread-safe, never blocks on the disk; after the recorder has stopped
        it is written directly."""
        d = band_change_dict(change)
        with self._cond:
            if not self._finished.is_set() and not self._closing:
                self._put("band", d)
                return
        self._write_late(lambda s, sid: s.add_band_changes(sid, [d]))

    def set_summary(self, cup_or_summary: int | Mapping[Any, Any],
                    summary: Mapping[str, Any] | None = None) -> None:
        """Store summaries, as given, in three forms:

        * ``set_summary(cup, dict)``: one cup (0 = the whole session);
        * ``set_summary({cup: dict, ...})``: several, keyed by cup number;
        * ``set_summary(session_dict)``: a whole-session summary such as
          ``MonitorPipeline.stats_summary()``; stored as cup 0, and each entry
          of its ``"cups"`` list that names its ``"cup"`` also under that cup.

        Thread-safe; also works after the recorder has stopped (written directly).
        """
        items = summary_items(cup_or_summary, summary)
        with self._cond:
            if not self._finished.is_set() and not self._closing:
                for it in items:
                    self._put("summary", it)
                return

        def write(s: Store, sid: int) -> None:
            for cup, summ in items:
                s.set_summary(sid, cup, summ)
        self._write_late(write)

    def _write_late(self, fn: Any) -> None:
        # The writer is done (or never started): the caller's thread writes.
        if self._thread is not None:
            self._thread.join(30.0)
        if self._session_id is None:
            log.warning("recorder: no session to write to (%s)", self._error or "not started")
            return
        try:
            with Store(self.path) as s:
                fn(s, self._session_id)
        except StoreError as exc:
            self.last_error = str(exc)
            log.error("recorder: %s", exc)

    # -- the writer thread ---------------------------------------------------
    def _run(self) -> None:
        store: Store | None = None
        try:
            try:
                store = Store(self.path)
                f = self._fields
                info: DeviceInfo | None = f.get("info")
                self._session_id = store.create_session(
                    source=f["source"], therapist=f["therapist"], patient=f["patient"],
                    notes=f["notes"], targets=f["targets"], info=info, writer_pid=os.getpid())
            except StoreError as exc:
                self._error = exc
                self.last_error = str(exc)
                log.error("recorder: %s", exc)
                with self._cond:
                    self._closing = True
                    self._queue.clear()
                    self._queued_values = 0
                return
            finally:
                self._ready.set()
            _Writer(self, store, self._session_id, info is not None).loop()
        finally:
            if store is not None:
                store.close()
            self._finished.set()


class _Writer:
    """State of the writer thread between commits."""

    def __init__(self, rec: Recorder, store: Store, session_id: int, have_info: bool) -> None:
        self.rec, self.store, self.sid = rec, store, session_id
        self.have_shape = have_info
        self.seq = store.next_block_seq(session_id)
        self.run: list[SampleBlock] = []       # contiguous blocks for the next row
        self.run_samples = 0
        self.rows: list[list[SampleBlock]] = []  # finished runs awaiting the commit
        self.events: list[dict] = []
        self.summaries: list[tuple[int, dict]] = []
        self.bands: list[dict] = []
        self.info: DeviceInfo | None = None
        self.flushes: list[threading.Event] = []
        self.reported: dict[str, int] = {}
        self.lost_samples = 0                  # in a failed commit, for the next gap

    def loop(self) -> None:
        rec = self.rec
        interval = rec.commit_interval
        next_commit = time.monotonic() + interval
        while True:
            with rec._cond:
                while not rec._queue and not rec._closing:
                    left = next_commit - time.monotonic()
                    if left <= 0:
                        break
                    rec._cond.wait(left)
                items = list(rec._queue)
                rec._queue.clear()
                closing = rec._closing
            for kind, item in items:
                self.take(kind, item)
            now = time.monotonic()
            if now >= next_commit or self.flushes or closing:
                self.commit(final=closing and not items)
                next_commit = now + interval
                if closing and not items:
                    return

    def take(self, kind: str, item: Any) -> None:
        if kind == "block":
            b: SampleBlock = item
            with self.rec._cond:
                self.rec._queued_values -= b.n * max(1, b.cups)
                self.rec._cond.notify_all()  # room for a waiting on_block (backpressure)
            if b.n == 0:
                return
            if self.lost_samples:
                b = SampleBlock(b.t, b.suction, b.status, b.host_time,
                                b.lost_before + self.lost_samples, True)
                self.lost_samples = 0
            if self.run and (b.gap_before or b.cups != self.run[0].cups
                             or self.run_samples + b.n > MAX_ROW_SAMPLES):
                self.end_run()
            self.run.append(b)
            self.run_samples += b.n
        elif kind == "event":
            self.events.append(item)
        elif kind == "summary":
            self.summaries.append(item)
        elif kind == "band":
            self.bands.append(item)
        elif kind == "info":
            self.info = item
        elif kind == "flush":
            self.flushes.append(item)

    def end_run(self) -> None:
        if self.run:
            self.rows.append(self.run)
            self.run, self.run_samples = [], 0

    def commit(self, final: bool) -> None:
        rec, store, sid = self.rec, self.store, self.sid
        self.end_run()
        rows, events, summaries, bands = self.rows, self.events, self.summaries, self.bands
        written = nbytes = 0
        try:
            store.begin()
            if self.info is not None:
                store.set_device_info(sid, self.info)
                self.have_shape = True
                self.info = None
            if not self.have_shape and rows:
                store.update_session(sid, cups=rows[0][0].cups, rate_hz=_rate_of(rows))
                self.have_shape = True
            for run in rows:
                nbytes += store.add_run(sid, self.seq, run)
                self.seq += 1
                written += sum(b.n for b in run)
            store.add_events(sid, events)
            store.add_band_changes(sid, bands)
            for cup, summ in summaries:
                store.set_summary(sid, cup, summ)
            counters = rec.stats()
            losses = {k: counters[k] for k in ("dropped_blocks", "dropped_samples",
                                                "write_errors")}
            if final or losses != self.reported:
                store.update_session(sid, recorder=counters)
                self.reported = losses
            if final:
                store.end_session(sid, "completed")
            else:
                store.heartbeat(sid)
            store.commit()
        except StoreError as exc:
            # Disk full, file removed...: keep going (the caller never waits on
            # us) but say so; what failed is counted, not retried forever.
            try:
                store.conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone too
                pass
            with rec._cond:
                rec._stats["write_errors"] += 1
            # Those samples are gone: the next stored block must show a gap.
            self.lost_samples += sum(b.n for run in rows for b in run)
            rec.last_error = str(exc)
            log.error("recorder: %s", exc)
        else:
            with rec._cond:
                st = rec._stats
                st["rows"] += len(rows)
                st["samples_written"] += written
                st["bytes_written"] += nbytes
                st["events"] += len(events)
                st["commits"] += 1
        finally:
            self.rows, self.events, self.summaries, self.bands = [], [], [], []
            for ev in self.flushes:
                ev.set()
            self.flushes = []


def _rate_of(rows: list[list[SampleBlock]]) -> float | None:
    """Sample rate (Hz) estimated from the median time step, for devices
    that never sent INFO (text format)."""
    for run in rows:
        t = np.concatenate([b.t for b in run])
        if t.size > 2:
            dt = float(np.median(np.diff(t)))
            if dt > 0:
                return round(1.0 / dt, 3)
    return None


def summary_items(cup_or_summary: int | Mapping[Any, Any],
                  summary: Mapping[str, Any] | None = None) -> list[tuple[int, dict]]:
    """(cup, summary dict) pairs for :meth:`Recorder.set_summary`'s three forms."""
    if summary is not None:
        return [(int(cup_or_summary), dict(summary))]  # type: ignore[arg-type]
    if not isinstance(cup_or_summary, Mapping):
        raise TypeError("set_summary takes (cup, dict), {cup: dict} or a session summary dict")
    keys = list(cup_or_summary)
    if keys and all(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in keys):
        return [(int(c), dict(v)) for c, v in cup_or_summary.items()]
    whole = dict(cup_or_summary)
    items = []
    per_cup = whole.get("cups")
    if isinstance(per_cup, list) and per_cup and all(
            isinstance(c, Mapping) and isinstance(c.get("cup"), int) for c in per_cup):
        whole.pop("cups")
        items = [(int(c["cup"]), dict(c)) for c in per_cup]
    return [(0, whole), *items]
