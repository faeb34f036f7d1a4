"""Reviewing a stored session in the window (offscreen, a real window and a
real SQLite file): the bands set during the recording are re-applied where
they happened (tiles and traces show the band of the moment, the timeline
marks the changes), and the statistics say what they cover: the tiles'
"% in band" counts from a seek's pre-roll, the replay bar says so, and
*Summary…* gives the whole session (stored, or computed from the samples
when no summary was stored). Also: a band set from the window while
recording lands in the database."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from firmware_bridge.messages import DeviceInfo, SampleBlock
from firmware_bridge.protocol import Status
from monitor.gui.main_window import MainWindow
from monitor.gui.tiles import clock
from monitor.pipeline import MonitorPipeline
from monitor.recorder import Recorder
from monitor.store import Store

pytestmark = pytest.mark.gui

WAIT_MS = 20000
RATE, CUPS, SECONDS = 100, 2, 60.0
START_BAND, NEW_BAND = (19.5, 24.5), (15.0, 19.0)   # neither is the default
INFO = DeviceInfo(serial="SN-R", firmware=(1, 0, 0), cups=CUPS, rate_hz=RATE,
                  hard_limit_kpa=30.0)


def _recorded_session(db) -> tuple[int, float, float]:
    """60 s of two cups regulating at 22.5 kPa, recorded by a real pipeline
    and recorder; cup 1's band is set to 15-19 kPa half way, so cup 1 is in
    band for the first half only. Returns (session id, t0, time of the change)."""
    n = int(SECONDS * RATE)
    t = 1.0 + np.arange(n) / RATE
    s = np.full((n, CUPS), 22.5, np.float32)
    st = np.full((n, CUPS), int(Status.REGULATING), np.uint8)
    cfg = MonitorPipeline().config
    pipe = MonitorPipeline(cfg, clock=lambda: 0.0)
    rec = Recorder(db, source="test", patient="P-9",
                   targets={str(c): list(START_BAND) for c in range(1, CUPS + 1)}, info=INFO)
    sid = rec.start_session()
    pipe.add_event_sink(rec.record_event)
    pipe.add_band_sink(rec.record_band_change)
    for lst in (pipe, rec):
        lst.on_message(INFO)
    for i in range(0, n, 50):
        if i == n // 2:
            pipe.set_band(1, *NEW_BAND)
        b = SampleBlock(t[i:i + 50], s[i:i + 50], st[i:i + 50], 0.0)
        pipe.on_block(b)
        rec.on_block(b)
    rec.set_summary(pipe.stats_summary())
    rec.stop()
    with Store(db, create=False) as store:
        (change,) = store.band_changes(sid)
    return sid, float(t[0]), float(change["t"])


def _pct(win: MainWindow, cup: int) -> float | None:
    snap = win.pipeline.snapshot() if win.pipeline is not None else None
    if snap is None or len(snap.cups) < cup:
        return None
    return snap.cups[cup - 1].time_in_target_pct


def _summary_pct(win: MainWindow, row: int) -> float:
    return float(win.summary_dialog.table.item(row, 2).text().split("%")[0])


def test_review_follows_the_recorded_bands_and_says_what_the_statistics_cover(
        qtbot, make_window, tmp_path):
    db = tmp_path / "sessions.db"
    sid, t0, t_change = _recorded_session(db)
    win = make_window()
    win.open_session(sid, speed=None)                         # as fast as possible
    qtbot.waitUntil(lambda: win.replay is not None and win.replay.ended, timeout=WAIT_MS)
    bar = win.replay_bar
    assert bar.timeline.band_marks == [t_change]
    assert "band changes" in bar.timeline.toolTip() and "cup 1 15–19 kPa" in \
        bar.timeline.toolTip()
    assert f"band set at {clock(t_change - t0)}: cup 1 15–19 kPa" in bar.title.toolTip()
    # Played from the start: the statistics cover the whole session, and at
    # the end cup 1 is checked against the band set half way.
    assert bar.stats_label.text() == "% in band: whole session"
    # (At the end the tiles keep the last view shown while playing; the
    # pipeline holds the final state.)
    bands = [c.band for c in win.pipeline.snapshot().cups]
    assert bands == [NEW_BAND, START_BAND]
    assert abs(_pct(win, 1) - 50.0) < 3.0 and _pct(win, 2) == 100.0
    # The recorded alarm (over suction once the band was lowered) is replayed.
    assert any(a.cup == 1 for a in win.pipeline.snapshot().alarms)

    # Seek near the end: the replay restarts one trace window earlier, so the
    # tiles' "% in band" only covers that stretch, and the bar says from when.
    win.set_replay_speed(1.0)
    target = t0 + SECONDS - 2.0
    before = win.pipeline
    win.seek_replay(target)
    preroll = win._preroll_s(win.replay)
    since = target - preroll
    assert since > t0
    expected = f"% in band: from {clock(since - t0)} only"
    assert bar.stats_label.text() == expected
    assert "Summary" in bar.stats_label.toolTip()
    qtbot.waitUntil(lambda: win.source is not None and win.pipeline is not before
                    and _pct(win, 1) is not None and _device_t(win) >= target,
                    timeout=WAIT_MS)
    # Cup 1 was in band only up to the change, 2 s into the pre-roll: from
    # there on that is a small share, not the session's half.
    assert t_change - since < 3.0
    assert _pct(win, 1) < 30.0 and _pct(win, 2) == 100.0
    def tile_pct() -> float:                             # "Band 15.0–19.0 · 7%"
        text = win.tiles.tiles[0].band_label.text() if win.tiles.tiles else ""
        return float(text.split("·")[1].strip(" %")) if text.endswith("%") else 100.0

    qtbot.waitUntil(lambda: tile_pct() < 30.0, timeout=WAIT_MS)   # the tile shows it
    # The change lies before the pre-roll: applied before its first sample.
    assert win.traces.band(1) == NEW_BAND and win.traces.band(2) == START_BAND
    assert win.tiles.tiles[0].band_label.text().startswith("Band 15.0–19.0")

    # Summary… : the whole session, as stored when the recording ended.
    bar.summary_button.click()
    qtbot.waitUntil(lambda: win.summary_dialog is not None and win.summary_dialog.isVisible(),
                    timeout=WAIT_MS)
    assert abs(_summary_pct(win, 0) - 50.0) < 3.0 and _summary_pct(win, 1) == 100.0
    assert win.summary_dialog.result_label.text() == ""
    win.summary_dialog.close()

    # Seek before the change: the band of that moment, the whole session again.
    before = win.pipeline
    win.seek_replay(t0 + 10.0)
    assert bar.stats_label.text() == "% in band: whole session"
    qtbot.waitUntil(lambda: win.source is not None and win.pipeline is not before
                    and _device_t(win) >= t0 + 10.0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.traces.band(1) == START_BAND and len(win.tiles.tiles) == CUPS
                    and win.tiles.tiles[0].band_label.text().startswith("Band 19.5–24.5"),
                    timeout=WAIT_MS)
    assert win.pipeline.config.cup(1).band_low_kpa == START_BAND[0]
    win.replay_bar.play_button.click()                         # pause


def test_summary_of_a_session_without_one_is_computed_from_its_samples(
        qtbot, make_window, tmp_path):
    db = tmp_path / "sessions.db"
    sid, _t0, _t_change = _recorded_session(db)
    with sqlite3.connect(db) as c:                    # as an interrupted recording leaves it
        c.execute("DELETE FROM cup_summaries")
    c.close()
    win = make_window()
    win.open_session(sid, speed=1.0)
    qtbot.waitUntil(lambda: win.replay is not None and win.source is not None, timeout=WAIT_MS)
    win.replay_bar.summary_button.click()
    qtbot.waitUntil(lambda: win.summary_dialog is not None and win.summary_dialog.isVisible(),
                    timeout=WAIT_MS)
    dlg = win.summary_dialog
    assert dlg.table.rowCount() == CUPS
    # The recomputation applies the band change: half the time in band for cup 1.
    assert abs(_summary_pct(win, 0) - 50.0) < 3.0 and _summary_pct(win, 1) == 100.0
    assert "computed from its stored samples" in dlg.result_label.text()


def _device_t(win: MainWindow) -> float:
    snap = win.pipeline.snapshot() if win.pipeline is not None else None
    return snap.t if snap is not None and snap.t is not None else -1.0


def test_a_band_set_from_the_window_while_recording_is_stored(qtbot, make_window, tmp_path):
    win = make_window()
    win.connect_url("sim://normal?cups=2&speed=8")
    qtbot.waitUntil(lambda: _device_t(win) > 1.0, timeout=WAIT_MS)
    assert win.start_recording(therapist="AB", patient="P-1")
    qtbot.waitUntil(lambda: win.recording_state == "recording", timeout=WAIT_MS)
    sid = win.recording_id
    qtbot.waitUntil(lambda: _device_t(win) > 3.0, timeout=WAIT_MS)
    rec = win.send_band(2, 18.0, 23.0)
    assert rec is not None
    qtbot.waitUntil(lambda: win.pipeline.config.cup(2).band_low_kpa == 18.0, timeout=WAIT_MS)
    t_set = _device_t(win)
    qtbot.waitUntil(lambda: _device_t(win) > t_set + 1.0, timeout=WAIT_MS)
    win.stop_recording(show_summary=False)
    qtbot.waitUntil(lambda: win.recording_state == "idle", timeout=WAIT_MS)
    with Store(tmp_path / "sessions.db", create=False) as store:
        changes = store.band_changes(sid)
        data = store.data_stats(sid)
        targets = store.get_session(sid)["targets"]
    assert [(c["cup"], c["low_kpa"], c["high_kpa"]) for c in changes] == [(2, 18.0, 23.0)]
    assert data["t_min"] <= changes[0]["t"] <= t_set <= data["t_max"]
    assert targets["2"] != [18.0, 23.0]               # the session started with the old one
