"""Session store: schema, permissions, lossless compact blocks, events,
summaries, calibrations, and refusing corrupt or foreign files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_store_helpers import gap_positions, same_samples, wire_blocks, wire_suction

import monitor.store as store_mod
from firmware_bridge.messages import DeviceInfo, SampleBlock
from monitor.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    NoSuchSession,
    Store,
    StoreError,
    decode_block,
    default_db_path,
    encode_block,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_database_is_private_versioned_and_wal(tmp_path):
    path = tmp_path / "data" / "cupmon" / "cupmon.db"
    with Store(path) as s:
        sid = s.create_session(source="test")
        s.add_blocks(sid, wire_blocks(2))
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
        for side in ("-wal", "-shm"):  # SQLite gives them the database file's mode
            assert _mode(str(path) + side) == 0o600
        c = s.conn
        assert c.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "events", "sample_blocks", "cup_summaries",
                "calibrations"} <= tables
        cols = {r[1] for r in c.execute("PRAGMA table_info(sessions)")}
        assert {"started_wall", "ended_wall", "device_serial", "firmware", "cups", "rate_hz",
                "targets", "therapist", "patient", "notes", "status", "source",
                "heartbeat_wall", "writer_pid"} <= cols


def test_default_path_follows_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "cupmon" / "cupmon.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "cupmon" / "cupmon.db"


def test_blocks_round_trip_bit_exact_with_gaps_and_compact_codecs(tmp_path):
    blocks = wire_blocks(20, gaps_at=(7, 13))
    with Store(tmp_path / "c.db") as s:
        sid = s.create_session()
        s.add_blocks(sid, blocks[:10])
        s.add_run(sid, 10, blocks[10:13])   # contiguous: one row, boundaries remembered
        s.add_run(sid, 11, blocks[13:])
        out = list(s.iter_blocks(sid))
        codecs = s.conn.execute("SELECT DISTINCT t_codec, suction_codec FROM sample_blocks"
                                ).fetchall()
        rows = s.conn.execute("SELECT count(*) FROM sample_blocks").fetchone()[0]
        merged = list(s.iter_blocks(sid, split=False))
    assert [b.n for b in out] == [b.n for b in blocks]
    assert same_samples(out, blocks)
    assert all(same_samples([a], [b]) for a, b in zip(out, blocks, strict=True))
    assert gap_positions(out) == gap_positions(blocks) and len(gap_positions(out)) == 2
    assert rows == 12 and len(merged) == 12 and same_samples(merged, blocks)
    # Wire-resolution data took the integer encodings, not the raw-float fallback.
    assert all(tc != 0 and sc != 0 for tc, sc in codecs)


def test_data_that_is_not_wire_resolution_is_kept_exactly(tmp_path):
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.0005, 0.002, 300)) + 1e5 / 3   # not whole µs
    s = rng.normal(22.5, 3, (300, 2)).astype(np.float32)        # not 0.01 kPa steps
    s[0, 0] = -0.0
    st16 = rng.integers(0, 2**16, (300, 2)).astype(np.uint16)
    with Store(tmp_path / "c.db") as db:
        sid = db.create_session()
        db.add_blocks(sid, [SampleBlock(t, s, st16)])
        (out,) = db.iter_blocks(sid)
    assert same_samples([out], [SampleBlock(t, s, st16)])


finite_or_not = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), cups=st.integers(1, 16), data=st.data())
def test_block_encoding_is_lossless_for_any_values(n, cups, data):
    t = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-1e9, 1e9)))
    kind = data.draw(st.sampled_from(["wire", "any"]))
    if kind == "wire":
        q = data.draw(hnp.arrays(np.int16, (n, cups)))
        s = q.astype(np.float32) / np.float32(100.0)
        s[q == -32768] = np.nan
    else:
        s = data.draw(hnp.arrays(np.float32, (n, cups), elements=finite_or_not))
    status = data.draw(hnp.arrays(np.uint8, (n, cups)))
    enc = encode_block(t, s, status)
    t2, s2, st2 = decode_block(enc, n, cups)
    assert same_samples([SampleBlock(t2, s2, st2)], [SampleBlock(t, s, status)])


def test_sixteen_cups_at_1khz_store_in_well_under_the_int16_size():
    # One minute of 16 cups at 1 kHz, regulated near 22.5 kPa with 0.05 kPa noise.
    rng = np.random.default_rng(0)
    n, cups = 60_000, 16
    t = (np.arange(n, dtype=np.int64) * 1000) / 1e6
    s = wire_suction(rng, n, cups)
    status = np.full((n, cups), 8, np.uint8)
    size = sum(encode_block(t[i:i + 500], s[i:i + 500], status[i:i + 500]).nbytes
               for i in range(0, n, 500))
    int16_size = n * cups * 2
    assert size < 0.4 * int16_size     # measured ~0.33: ~38 MB per hour


class FakeAlarmEvent:
    def __init__(self, **kw):
        self.kw = kw

    def to_dict(self):
        return dict(self.kw)


def test_events_and_summaries_are_kept_as_given(tmp_path):
    ev1 = {"t": 1.5, "wall": 1.7e9, "cup": 2, "event": "raised", "condition": "leak",
           "priority": "medium", "suction_kpa": np.float32(12.5), "message": "Cup 2 leak",
           "extra": {"rate": 1.0}}
    ev2 = FakeAlarmEvent(t=3.0, wall=1.7e9 + 2, cup=None, event="raised",
                         condition="signal_loss", priority="high", suction_kpa=None,
                         message="no data")
    with Store(tmp_path / "c.db") as s:
        sid = s.create_session()
        assert s.add_events(sid, [ev1, ev2]) == 2
        s.set_summary(sid, 1, {"mean_kpa": 22.4, "in_band_fraction": 0.97})
        s.set_summary(sid, 1, {"mean_kpa": 22.5})        # replaces
        s.set_summary(sid, 0, {"duration_s": 600.0})
        events = s.events(sid)
        summaries = s.summaries(sid)
        cols = s.conn.execute("SELECT cup, condition, priority, suction_kpa FROM events "
                              "ORDER BY id").fetchall()
    assert events[0] == {**ev1, "suction_kpa": 12.5}
    assert events[1] == ev2.to_dict()
    assert cols == [(2, "leak", "medium", 12.5), (None, "signal_loss", "high", None)]
    assert summaries == {0: {"duration_s": 600.0}, 1: {"mean_kpa": 22.5}}


def test_session_row_info_and_end(tmp_path):
    info = DeviceInfo("SN-7", (1, 4, 2), 8, 250, sensor_model=1, flags=2, adc_bits=12,
                      hard_limit_kpa=28.0)
    with Store(tmp_path / "c.db") as s:
        sid = s.create_session(source="/dev/ttyACM0", therapist="T1", patient="P-0042",
                               notes="ünïcode", targets={"1": [20.0, 25.0]}, info=info)
        s.end_session(sid, "completed")
        row = s.get_session(sid)
        assert s.device_info(sid) == info
        with pytest.raises(NoSuchSession, match="no session 99"):
            s.get_session(99)
        listed = s.list_sessions()
    assert row["status"] == "completed" and row["ended_wall"] >= row["started_wall"]
    assert (row["device_serial"], row["firmware"], row["cups"], row["rate_hz"]) == \
        ("SN-7", "1.4.2", 8, 250)
    assert row["targets"] == {"1": [20.0, 25.0]} and row["notes"] == "ünïcode"
    assert row["writer_pid"] == os.getpid()
    assert [r["id"] for r in listed] == [sid] and listed[0]["samples"] == 0


def test_calibration_helpers(tmp_path):
    now = time.time()
    with Store(tmp_path / "c.db") as s:
        old = s.add_calibration("SN1", 1, (0.1, 1.01, 0.0), technician="A", created_wall=now - 100,
                                as_found={"max_err_kpa": 0.4}, result="adjusted")
        new = s.add_calibration("SN1", 1, (0.05, 1.0, 1e-4), created_wall=now - 10,
                                due_wall=now + 86400, certificate_id="C-2")
        overdue = s.add_calibration("SN1", 2, (0, 1, 0), created_wall=now - 5, due_wall=now - 1)
        assert s.latest_valid_calibration("SN1", 1)["id"] == new
        s.invalidate_calibration(new)
        latest = s.latest_valid_calibration("SN1", 1)
        assert latest["id"] == old and latest["as_found"] == {"max_err_kpa": 0.4}
        assert (latest["c0"], latest["c1"], latest["c2"]) == (0.1, 1.01, 0.0)
        assert s.latest_valid_calibration("SN1", 2) is None        # overdue
        assert [c["id"] for c in s.list_calibrations("SN1")] == [overdue, new, old]
        assert [c["valid"] for c in s.list_calibrations("SN1", 1)] == [False, True]


def _one_line_error(path, **kw) -> str:
    with pytest.raises(StoreError) as info:
        Store(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_a_text_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n" * 50)
    before = _digest(path)
    assert "not a cupmon database" in _one_line_error(path)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_another_programs_sqlite_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE sessions (id INTEGER, x TEXT)")
    c.commit()
    c.close()
    before = _digest(path)
    assert "another program" in _one_line_error(path)
    assert _digest(path) == before


def _recorded_db(path, n_blocks=200):
    with Store(path) as s:
        sid = s.create_session()
        s.add_blocks(sid, wire_blocks(n_blocks, cups=8))
    return sid


@pytest.mark.parametrize("damage", ["schema_page", "truncated", "data_pages"])
def test_a_corrupt_database_gives_one_line_and_is_not_repaired(tmp_path, damage):
    path = tmp_path / "c.db"
    sid = _recorded_db(path)
    data = bytearray(path.read_bytes())
    if damage == "schema_page":
        data[100:4096] = bytes(range(256)) * 15 + bytes(156)  # header kept, schema broken
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:  # every page after the first two: opens, then the sample rows are garbage
        page = int.from_bytes(data[16:18], "big")
        tail = len(data) - 2 * page
        data[2 * page:] = np.random.default_rng(0).integers(0, 256, tail, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    before = _digest(path)
    try:
        with Store(path) as s:                    # may open: then reading must fail cleanly
            list(s.iter_blocks(sid))
            s.list_sessions()
            pytest.fail("a damaged database read without error")
    except StoreError as exc:
        msg = str(exc)
    assert "\n" not in msg and str(path) in msg
    assert _digest(path) == before


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.db"
    Store(path).close()
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    assert "newer cupmon" in _one_line_error(path)


def test_missing_file_with_create_false(tmp_path):
    assert "no cupmon database" in _one_line_error(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_migration_hook_runs_on_open(tmp_path, monkeypatch):
    path = tmp_path / "c.db"
    with Store(path) as s:
        sid = s.create_session(notes="kept")
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_mod.MIGRATIONS, SCHEMA_VERSION, lambda c: c.execute(
        "ALTER TABLE sessions ADD COLUMN room TEXT DEFAULT 'A'"))
    with Store(path) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert s.conn.execute("SELECT notes, room FROM sessions WHERE id = ?",
                              (sid,)).fetchone() == ("kept", "A")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_running_sessions_of_gone_writers_become_interrupted(tmp_path):
    path = tmp_path / "c.db"
    now = time.time()
    with Store(path) as s:
        dead = s.create_session(writer_pid=_dead_pid())
        live = s.create_session()                                  # this process, fresh
        stale = s.create_session(started_wall=now - 60)            # this process, stale
        s.conn.execute("UPDATE sessions SET heartbeat_wall = ? WHERE id = ?", (now - 60, stale))
        done = s.create_session(writer_pid=_dead_pid())
        s.end_session(done)
    with Store(path) as s:
        status = {r["id"]: r["status"] for r in s.list_sessions()}
        assert status == {dead: "interrupted", live: "running", stale: "interrupted",
                          done: "completed"}
        assert s.get_session(stale)["ended_wall"] == pytest.approx(now - 60)
        s.heartbeat(stale)     # the writer was only slow: it says it is alive again
        assert s.get_session(stale)["status"] == "running"
