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
        return "\n".join(parts)


class ReviewActions:
    """Open / play / pause / seek / speed / close a review (mixed into MainWindow)."""

    # --------------------------------------------------------------- replay
    def open_session(self, session_id: int, speed: float | None = 1.0) -> None:
        """Review a stored session: the same window plays it (tiles, banner,
        traces), the alarm log lists its recorded events and the replay bar
        gives a timeline over its whole span. The database is read on a worker."""
        db = self.db_path

        def work() -> tuple[dict, dict, list]:
            from monitor.store import Store

            with Store(db, create=False) as store:
                return (store.get_session(session_id), store.data_stats(session_id),
                        store.events(session_id))

        def done(res: tuple[dict, dict, list] | None, exc: BaseException | None) -> None:
            if exc is not None:
                msg = user_message(exc)
                self.sessions.show_message(msg, bad=True)
                self.connection.show_error(msg)
                self.statusBar().showMessage(msg)
                self.last_error, self.last_exception = msg, exc
                return
            assert res is not None
            session, data, events = res
            if data.get("t_min") is None:
                msg = f"session {session_id} holds no samples to replay"
                self.sessions.show_message(msg, bad=True)
                self.statusBar().showMessage(msg)
                return
            self._enter_replay(ReplayState(session_id, db, session, float(data["t_min"]),
                                           float(data["t_max"]), events, speed,
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

    def close_replay(self) -> None:
        """Leave the review: stop the replay, back to an empty live view."""
        self.disconnect_source()

    def _log_event_activated(self, t: float) -> None:
        r = self.replay
        if r is not None:
            self.tabs.setCurrentWidget(self.monitor_page)
            self.seek_replay(min(r.t1, t + 0.25 * self.traces.window_s))

