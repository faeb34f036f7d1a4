"""Reviewing a stored session: replay through the same window with a
timeline (a part of :class:`~monitor.gui.main_window.MainWindow`, kept apart
for size). docs/gui.md, "Replay and the timeline".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.source import Source
from monitor.config import ConfigError, MonitorConfig
from monitor.errors import user_message

from .tiles import clock

#: A replay's pre-roll (the unpaced stretch before a seek point) is at most one
#: trace window and at most this many values (samples x cups): ~2 min at 16
#: cups x 1 kHz, the whole 10-min window at 4 cups x 100 Hz.
PREROLL_VALUES = 2_000_000
MIN_PREROLL_S = 5.0
REPLAY_PREFIX = "replay:"


def is_replay_source(source: Source | None) -> bool:
    """A replay of a stored session or a capture file (it takes no commands)."""
    from monitor.replay import CaptureReplaySource, SessionReplaySource

    return isinstance(source, SessionReplaySource | CaptureReplaySource)


@dataclass
class ReplayState:
    """The stored session being reviewed (see :meth:`MainWindow.open_session`)."""

    session_id: int
    db: Path
    session: dict[str, Any]
    t0: float
    t1: float
    events: list[dict[str, Any]] = field(default_factory=list)
    speed: float | None = 1.0
    #: Bands set during the recording (``Store.band_changes``), in order.
    band_changes: list[dict[str, Any]] = field(default_factory=list)
    #: Device time the replay's statistics count from (the start, or a seek's pre-roll).
    stats_from: float = 0.0
    playing: bool = False
    ended: bool = False
    position: float = 0.0
    generation: int = 0

    @property
    def title(self) -> str:
        """"Session 7 · P-0042" (the replay bar's label)."""
        who = self.session.get("patient") or self.session.get("therapist") or ""
        return f"Session {self.session_id}" + (f" · {who}" if who else "")

    @property
    def description(self) -> str:
        """Everything known about the session, for the label's tooltip."""
        s = self.session
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.get("started_wall") or 0))
        parts = [f"Replay of session {self.session_id}, recorded {started}"]
        for key in ("therapist", "patient", "notes", "source"):
            if s.get(key):
                parts.append(f"{key}: {s[key]}")
        targets = s.get("targets")
        if isinstance(targets, dict) and targets:
            parts.append("bands at the start: " + ", ".join(
                f"cup {k} {_band_text(v)}" for k, v in sorted(targets.items(), key=_cup_key)))
        for text in self.band_change_texts():
            parts.append(f"band set at {text[0]}: {text[1]}")
        return "\n".join(parts)

    def band_change_texts(self) -> list[tuple[str, str]]:
        """("m:ss" into the session, "cup 2 18–23 kPa") per band change."""
        out = []
        for ch in self.band_changes:
            t = ch.get("t")
            when_ = "start" if t is None else clock(max(0.0, float(t) - self.t0))
            out.append((when_, f"cup {ch['cup']} "
                               f"{_band_text((ch['low_kpa'], ch['high_kpa']))}"))
        return out


def _band_text(band: Any) -> str:
    try:
        return f"{float(band[0]):g}–{float(band[1]):g} kPa"
    except (TypeError, ValueError, IndexError):
        return str(band)


def _cup_key(item: tuple[Any, Any]) -> tuple[int, str]:
    k = str(item[0])
    return (int(k), k) if k.isdigit() else (1 << 30, k)


def summary_from_store(db: Path, session_id: int, config: MonitorConfig) -> dict[str, Any]:
    """The whole session's statistics recomputed from its stored samples (for
    a session whose recording ended without storing one, e.g. interrupted):
    the session replayed as fast as possible, with the bands that applied,
    into a pipeline that judges no host-clock silences. Runs on a worker."""
    from monitor.pipeline import MonitorPipeline
    from monitor.replay import SessionReplaySource

    pipe = MonitorPipeline(config, clock=lambda: 0.0)
    src = SessionReplaySource(db, session_id, speed=None)
    src.add_listener(pipe)
    src.start()
    try:
        if not src.wait_done(600.0):
            raise TimeoutError(f"session {session_id}: the statistics took too long")
    finally:
        src.stop()
    return pipe.stats_summary()


class ReviewActions:
    """Open / play / pause / seek / speed / close a review (mixed into MainWindow)."""

    # --------------------------------------------------------------- replay
    def open_session(self, session_id: int, speed: float | None = 1.0) -> None:
        """Review a stored session: the same window plays it (tiles, banner,
        traces), the alarm log lists its recorded events and the replay bar
        gives a timeline over its whole span. The database is read on a worker."""
        db = self.db_path

        def work() -> tuple[dict, dict, list, list]:
            from monitor.store import Store

            with Store(db, create=False) as store:
                return (store.get_session(session_id), store.data_stats(session_id),
                        store.events(session_id), store.band_changes(session_id))

        def done(res: tuple[dict, dict, list, list] | None, exc: BaseException | None) -> None:
            if exc is not None:
                msg = user_message(exc)
                self.sessions.show_message(msg, bad=True)
                self.connection.show_error(msg)
                self.statusBar().showMessage(msg)
                self.last_error, self.last_exception = msg, exc
                return
            assert res is not None
            session, data, events, bands = res
            if data.get("t_min") is None:
                msg = f"session {session_id} holds no samples to replay"
                self.sessions.show_message(msg, bad=True)
                self.statusBar().showMessage(msg)
                return
            self._enter_replay(ReplayState(session_id, db, session, float(data["t_min"]),
                                           float(data["t_max"]), events, speed,
                                           band_changes=bands,
                                           position=float(data["t_min"])))

        self.statusBar().showMessage(f"Opening session {session_id}…")
        self.io.submit(work, done)

    def _enter_replay(self, state: ReplayState) -> None:
        self.disconnect_source()       # ends any live connection (and its recording)
        self.replay = state
        self.alarm_log.model.set_events(state.events)
        self.alarm_log.set_title(f"Recorded alarm events of session {state.session_id}, newest "
                                 "first. Double-click one to jump there.")
        self._update_log_tab()
        marks = [(float(e["t"]), str(e.get("priority") or "low")) for e in state.events
                 if e.get("event") == "raised" and isinstance(e.get("t"), int | float)]
        self.replay_bar.set_session(state.title, state.t0, state.t1, marks)
        self.replay_bar.set_band_changes(
            (state.t0 if ch.get("t") is None else float(ch["t"]), text)
            for ch, (_when, text) in zip(state.band_changes, state.band_change_texts(),
                                         strict=True))
        self.replay_bar.title.setToolTip(state.description)
        self.replay_bar.set_speed(state.speed)
        self.replay_bar.show()
        self.banner.set_audio_note("Replay: alarms are shown, not sounded")
        self.connection.choose_url(f"{REPLAY_PREFIX}{state.session_id}")
        self.tabs.setCurrentWidget(self.monitor_page)
        self._update_command_state()
        self._play_from(state.t0)

    def _leave_replay(self) -> None:
        if self.replay is None:
            return
        self.replay = None
        self.replay_bar.hide()
        self.banner.set_audio_note("" if self.sound.available else self.sound.note)
        self.alarm_log.model.set_events([])
        self.alarm_log.set_title("Alarm events of this connection, newest first.")
        self._update_log_tab()
        self._update_command_state()

    def _preroll_s(self, r: ReplayState) -> float:
        s = r.session
        values_per_s = max(1.0, float(s.get("rate_hz") or 100.0) * float(s.get("cups") or 4))
        return max(MIN_PREROLL_S, min(self.traces.window_s, PREROLL_VALUES / values_per_s))

    def _replay_config(self, r: ReplayState) -> MonitorConfig:
        """The window's thresholds with the bands the session was recorded with."""
        cfg = self.config
        targets = r.session.get("targets")
        if isinstance(targets, dict):
            for k, band in targets.items():
                try:
                    cfg = cfg.with_cup(int(k), band_low_kpa=float(band[0]),
                                       band_high_kpa=float(band[1]))
                except (ConfigError, ValueError, TypeError, IndexError):
                    pass
        return cfg

    def _play_from(self, t: float) -> None:
        """(Re)start the replay at device time ``t``: the pre-roll before it is
        published at once, then it plays at the chosen speed."""
        r = self.replay
        if r is None:
            return
        r.generation += 1
        gen = r.generation
        t = min(max(t, r.t0), r.t1)
        r.position, r.playing, r.ended = t, True, False
        self.replay_bar.set_playing(True)
        self.replay_bar.show_position(t)
        preroll = self._preroll_s(r)
        speed = r.speed
        # The replay's pipeline (tiles' "% in band", time on, dwell) starts
        # where the replay does: the bar says so.
        r.stats_from = r.t0 if t - preroll <= r.t0 else t - preroll
        self.replay_bar.show_stats_window(None if r.stats_from <= r.t0 else r.stats_from)

        def work() -> Source:
            from monitor.replay import SessionReplaySource

            return SessionReplaySource(r.db, r.session_id, speed=speed, start_t=t,
                                       preroll_s=preroll)

        def done(source: Source | None, exc: BaseException | None) -> None:
            if self.replay is not r or r.generation != gen:
                return   # the user moved on meanwhile
            if exc is not None:
                self.show_failure(f"session {r.session_id}", exc)
                r.playing = False
                self.replay_bar.set_playing(False)
                return
            assert source is not None
            self.attach_source(source, f"{REPLAY_PREFIX}{r.session_id}", replay=True,
                               config=self._replay_config(r))

        self.io.submit(work, done)

    def seek_replay(self, t: float) -> None:
        """Show the session at device time ``t``: traces hold the window up to
        it, then it plays on (see docs/gui.md on seeking)."""
        if self.replay is not None:
            self._play_from(t)

    def set_replay_speed(self, speed: float | None) -> None:
        """1.0, 10.0 or None (as fast as possible); takes effect at once."""
        r = self.replay
        if r is None:
            return
        r.speed = speed
        self.replay_bar.set_speed(speed)
        src = self.source
        if is_replay_source(src) and hasattr(src, "set_speed"):
            src.set_speed(speed)  # type: ignore[union-attr]

    def toggle_replay(self) -> None:
        """Pause (the view stays as it is) or play on from where it stopped."""
        r = self.replay
        if r is None:
            return
        if r.playing:
            r.playing = False
            span = self.buffer.span()
            if span is not None:
                r.position = span[1]
            self.disconnect_source(keep_replay=True)
            self.replay_bar.set_playing(False)
            self.replay_bar.show_position(r.position)
        else:
            self._play_from(r.t0 if r.ended else r.position)

    def show_replay_summary(self) -> None:
        """The whole session's statistics (the replay bar's *Summary…*): the
        summary stored when the recording ended, or, if none was (an
        interrupted recording), computed from the stored samples on a worker."""
        r = self.replay
        if r is None:
            return
        config = self._replay_config(r)

        def work() -> tuple[dict, dict, bool]:
            from monitor.recorder import summary_items
            from monitor.store import Store

            with Store(r.db, create=False) as store:
                session, stored = store.get_session(r.session_id), store.summaries(r.session_id)
            if any(c > 0 for c in stored):
                return session, stored, False
            return session, dict(summary_items(summary_from_store(
                r.db, r.session_id, config))), True

        def done(res: tuple[dict, dict, bool] | None, exc: BaseException | None) -> None:
            if exc is not None:
                self.statusBar().showMessage(f"Summary: {user_message(exc)}", 30000)
                return
            assert res is not None
            session, summaries, computed = res
            dlg = self.show_summary(session, summaries)
            if computed:
                dlg.show_export_result("No summary was stored with this session (the "
                                       "recording did not end normally): computed from "
                                       "its stored samples.", True)

        self.statusBar().showMessage(f"Reading the summary of session {r.session_id}…")
        self.io.submit(work, done)

    def close_replay(self) -> None:
        """Leave the review: stop the replay, back to an empty live view."""
        self.disconnect_source()

    def _log_event_activated(self, t: float) -> None:
        r = self.replay
        if r is not None:
            self.tabs.setCurrentWidget(self.monitor_page)
            self.seek_replay(min(r.t1, t + 0.25 * self.traces.window_s))

