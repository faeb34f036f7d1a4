"""A band changed during a recording is stored with its device time and cup
(schema 2, ``band_changes``), and the stored session is reviewed against the
band that applied at each time: ``cupmon sessions show/export`` list the
changes, :func:`monitor.store.session_bands` gives the bands as steps, and a
replay re-applies them where they happened, so the replayed alarms are the
live ones. A database written before (schema 1) still opens and is migrated.
All with real SQLite files in tmp_path, a real pipeline and a real recorder."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from firmware_bridge import conditions as C
from firmware_bridge.messages import DeviceInfo, SampleBlock
from firmware_bridge.protocol import Status
from monitor import sessions_cli
from monitor.pipeline import BandChange, MonitorPipeline
from monitor.recorder import Recorder
from monitor.replay import SessionReplaySource
from monitor.store import APPLICATION_ID, SCHEMA_VERSION, Store, StoreError, band_at, session_bands

RATE = 100
CUPS = 2
INFO = DeviceInfo(serial="SN-B", firmware=(1, 2, 3), cups=CUPS, rate_hz=RATE,
                  hard_limit_kpa=30.0)
START_BAND = (20.0, 25.0)
NEW_BAND = (15.0, 19.0)          # 22.5 kPa is over-suction against this band


def _blocks(seconds: float, size: int = 37) -> list[SampleBlock]:
    """Both cups regulating at 22.5 kPa (in the start band), odd-sized blocks."""
    n = int(seconds * RATE)
    t = 1.0 + np.arange(n) / RATE
    s = np.full((n, CUPS), 22.5, np.float32)
    s += np.float32(0.01) * (np.arange(n) % 3)[:, None].astype(np.float32)
    st = np.full((n, CUPS), int(Status.REGULATING), np.uint8)
    return [SampleBlock(t[i:i + size], s[i:i + size], st[i:i + size], 0.0)
            for i in range(0, n, size)]


def _key(events) -> list[tuple]:
    out = []
    for e in events:
        d = e if isinstance(e, dict) else e.to_dict()
        out.append((round(float(d["t"]), 6), d.get("cup"), d.get("event"), d.get("condition")))
    return out


def _record_with_a_band_change(db, change_after_block: int = 40):
    """Live: a pipeline and a recorder take the same blocks; cup 1's band is
    set to NEW_BAND after ``change_after_block`` blocks. Returns (session id,
    the live pipeline's events, the change the pipeline reported)."""
    cfg = MonitorPipeline().config.with_cup(1, band_low_kpa=START_BAND[0],
                                            band_high_kpa=START_BAND[1])
    pipe = MonitorPipeline(cfg, clock=lambda: 0.0)       # no host-clock silences
    rec = Recorder(db, source="test", targets={"1": list(START_BAND), "2": list(START_BAND)},
                   info=INFO)
    sid = rec.start_session()
    pipe.add_event_sink(rec.record_event)
    pipe.add_band_sink(rec.record_band_change)
    told: list[BandChange] = []
    pipe.add_band_sink(told.append)
    pipe.on_message(INFO)
    rec.on_message(INFO)
    blocks = _blocks(30.0)
    for i, b in enumerate(blocks):
        if i == change_after_block:
            pipe.set_band(1, *NEW_BAND)
        pipe.on_block(b)
        rec.on_block(b)
    pipe.flush()
    rec.set_summary(pipe.stats_summary())
    rec.stop()
    return sid, pipe.events(), told, blocks


def test_a_band_changed_mid_recording_is_stored_and_replayed_where_it_happened(tmp_path):
    db = tmp_path / "s.db"
    sid, live, told, blocks = _record_with_a_band_change(db)
    # The pipeline reports the change once, for cup 1, at the last sample it
    # checked with the old band: the end of block 39.
    t_change = float(blocks[39].t[-1])
    assert [(c.t, c.cup, c.low_kpa, c.high_kpa) for c in told] == [(t_change, 1, *NEW_BAND)]
    raised = [k for k in _key(live) if k[2] == "raised"]
    assert raised and all(k[1] == 1 and k[3] == C.OVER_SUCTION and k[0] > t_change
                          for k in raised)

    # Reopen the file: the change is there with its device time and cup.
    with Store(db, create=False) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        changes = s.band_changes(sid)
        session = s.get_session(sid)
    assert [(c["t"], c["cup"], c["low_kpa"], c["high_kpa"]) for c in changes] == [
        (t_change, 1, *NEW_BAND)]
    assert isinstance(changes[0]["wall"], float)
    assert session["targets"] == {"1": list(START_BAND), "2": list(START_BAND)}  # the start

    # The bands over the session, as steps.
    steps = session_bands(session["targets"], changes, cups=CUPS)
    assert steps == {1: [(None, *START_BAND), (t_change, *NEW_BAND)], 2: [(None, *START_BAND)]}
    assert band_at(steps[1], t_change) == START_BAND           # the last old sample
    assert band_at(steps[1], t_change + 0.01) == NEW_BAND
    assert band_at(steps[2], 1e9) == START_BAND

    # Replay into a fresh pipeline set up with the stored start bands: the
    # change is re-applied at its time, so the alarms are the live ones.
    replayed = _replay_events(db, sid)
    assert replayed == _key(live)
    # Without the change (what a replay did before) there is no alarm at all.
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM band_changes")
    assert not [k for k in _replay_events(db, sid) if k[2] == "raised"]


def _replay_events(db, sid, **kw) -> list[tuple]:
    with Store(db, create=False) as s:
        targets = s.get_session(sid)["targets"]
    cfg = MonitorPipeline().config
    for k, (lo, hi) in targets.items():
        cfg = cfg.with_cup(int(k), band_low_kpa=lo, band_high_kpa=hi)
    pipe = MonitorPipeline(cfg, clock=lambda: 0.0)
    src = SessionReplaySource(db, sid, **kw)
    src.add_listener(pipe)
    src.start()
    assert src.wait_done(60.0)
    src.stop()
    return _key(pipe.events())


def test_a_replay_splits_a_block_at_the_change_and_a_seek_applies_earlier_changes(tmp_path):
    db = tmp_path / "s.db"
    blocks = _blocks(20.0, size=200)                     # 2 s per stored block
    with Store(db) as s:
        sid = s.create_session(source="t", targets={"1": list(START_BAND)}, info=INFO)
        s.add_blocks(sid, blocks)
        t_mid = float(blocks[3].t[57])                   # inside block 3
        s.add_band_changes(sid, [
            {"t": None, "cup": 2, "low_kpa": 18.0, "high_kpa": 23.0},
            BandChange(t_mid, 1, *NEW_BAND),
            {"t": float(blocks[-1].t[-1]) + 5.0, "cup": 1, "low_kpa": 19.0, "high_kpa": 24.0},
        ])
        s.end_session(sid)

    class Order:
        idle_interval = None

        def __init__(self):
            self.items = []

        def on_block(self, b):
            self.items.append(("block", float(b.t[0]), float(b.t[-1]), b.n))

        def on_message(self, m):
            if isinstance(m, BandChange):
                self.items.append(("band", m.t, m.cup))

        def on_idle(self, h):
            pass

        def stop(self):
            pass

    out = Order()
    src = SessionReplaySource(db, sid)
    src.add_listener(out)
    src.start()
    assert src.wait_done(30.0)
    src.stop()
    kinds = [i[0] for i in out.items]
    assert out.items[0] == ("band", None, 2)             # before any sample
    i = out.items.index(("band", t_mid, 1))
    assert out.items[i - 1][0] == "block" and out.items[i - 1][2] == t_mid   # ends at it
    assert out.items[i + 1][0] == "block" and out.items[i + 1][1] > t_mid    # then the rest
    assert out.items[i - 1][3] + out.items[i + 1][3] == blocks[3].n
    assert out.items[-1] == ("band", float(blocks[-1].t[-1]) + 5.0, 1)  # after the last
    assert sum(i[3] for i in out.items if i[0] == "block") == sum(b.n for b in blocks)
    assert kinds.count("band") == 3

    # A seek past the change: it is applied before the pre-roll's first block.
    out = Order()
    src = SessionReplaySource(db, sid, start_t=float(blocks[6].t[0]), preroll_s=1.0)
    src.add_listener(out)
    src.start()
    assert src.wait_done(30.0)
    src.stop()
    assert [i for i in out.items[:2]] == [("band", None, 2), ("band", t_mid, 1)]
    assert out.items[2][0] == "block" and out.items[2][1] >= float(blocks[6].t[0]) - 1.0


def test_show_and_export_list_the_band_changes(tmp_path, capsys):
    db = tmp_path / "s.db"
    sid, _live, _told, blocks = _record_with_a_band_change(db)
    t_change = float(blocks[39].t[-1])
    assert sessions_cli.main(["show", str(sid), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "band changes (1;" in out
    assert f"t={t_change:.3f} s  cup 1  15-19 kPa" in out
    assert sessions_cli.main(["export", str(sid), "--json", str(tmp_path / "s.json"),
                              "--db", str(db)]) == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert [(b["t"], b["cup"], b["low_kpa"], b["high_kpa"]) for b in doc["band_changes"]] == [
        (t_change, 1, 15.0, 19.0)]
    assert doc["session"]["targets"] == {"1": [20.0, 25.0], "2": [20.0, 25.0]}


def test_a_band_set_after_the_recorder_stopped_is_still_written(tmp_path):
    db = tmp_path / "s.db"
    rec = Recorder(db, source="t")
    sid = rec.start_session()
    rec.stop()
    rec.record_band_change({"t": 3.5, "cup": 2, "low_kpa": 18.0, "high_kpa": 22.0})
    with Store(db, create=False) as s:
        assert [(b["t"], b["cup"]) for b in s.band_changes(sid)] == [(3.5, 2)]


# -- files written before band changes were stored --------------------------

_V1_TABLES = ("sessions", "events", "sample_blocks", "cup_summaries", "calibrations")


def _v1_database(path, insert_session: str):
    """A cupmon file as written before band changes were stored (schema 1),
    holding the one session that ``insert_session`` adds."""
    import monitor.store as store_mod

    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for stmt in store_mod._SCHEMA_V1.split(";"):
            if stmt.strip():
                c.execute(stmt)
        c.execute("PRAGMA user_version = 1")
        c.execute(insert_session)
    c.close()
    return path


def test_a_database_from_before_the_change_opens_and_is_migrated(tmp_path, capsys):
    path = _v1_database(tmp_path / "old.db",
                        "INSERT INTO sessions (started_wall, targets, status, source, cups) "
                        "VALUES (1735722000.0, '{\"1\": [20.0, 25.0]}', 'completed', 'old', 2)")
    with sqlite3.connect(path) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    c.close()
    assert tables == set(_V1_TABLES)
    with Store(path, create=False) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert s.get_session(1)["targets"] == {"1": [20.0, 25.0]}
        assert s.band_changes(1) == []
        s.add_blocks(1, _blocks(1.0))
        s.add_band_changes(1, [{"t": 1.5, "cup": 1, "low_kpa": 18.0, "high_kpa": 22.0}])
    with Store(path, create=False) as s:                 # and stays usable
        assert [b["t"] for b in s.band_changes(1)] == [1.5]
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sessions_cli.main(["show", "1", "--db", str(path)]) == 0
    assert "band changes (1;" in capsys.readouterr().out


def test_a_read_only_old_database_still_reads(tmp_path, monkeypatch):
    path = _v1_database(tmp_path / "old.db",
                        "INSERT INTO sessions (started_wall, status) VALUES (1.0, 'completed')")
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode = WAL")        # as every cupmon file is
    c.close()
    before = path.read_bytes()
    # Read-only as SQLite sees it (the tests may run as root, who can write
    # a 0400 file): the connection is opened with mode=ro.
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda p, **kw: connect(
        f"file:{p}?mode=ro", uri=True, **kw))
    with Store(path, create=False) as s:
        assert s.schema_version == 1                  # not migrated: cannot write
        assert s.get_session(1)["status"] == "completed"
        assert s.band_changes(1) == []
    assert path.read_bytes() == before


def test_a_corrupt_file_is_still_a_clear_error(tmp_path):
    path = tmp_path / "bad.db"
    with Store(path) as s:
        sid = s.create_session(source="x")
        s.add_band_changes(sid, [{"t": 1.0, "cup": 1, "low_kpa": 18.0, "high_kpa": 22.0}])
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)          # the schema page
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(StoreError) as err:
        with Store(path, create=False) as s:
            s.band_changes(sid)
    msg = str(err.value)
    assert "corrupt" in msg and "\n" not in msg
    assert path.read_bytes() == before
