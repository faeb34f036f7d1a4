"""Recorder: everything that reaches it is stored as it came, the caller is
never held up by the disk, and losses are counted and marked as gaps."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest
from test_store_helpers import gap_positions, same_samples, wire_blocks

from firmware_bridge.listener import Notifier
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState
from monitor.recorder import Recorder
from monitor.store import Store, StoreError

INFO = DeviceInfo("SN-42", (2, 1, 0), 4, 1000, sensor_model=1)


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_session_recorded_through_the_notifier_comes_back_as_it_was(tmp_path):
    path = tmp_path / "c.db"
    blocks = wire_blocks(300, size=20, gaps_at=(50, 120, 121))
    rec = Recorder(path, source="sim://normal", therapist="T", patient="P-1",
                   targets={str(c): [20.0, 25.0] for c in range(1, 5)})
    sid = rec.start_session()
    notifier = Notifier([rec], backpressure=True)
    notifier.publish_message(LinkEvent(LinkState.CONNECTED, 0.0, "connected", INFO))
    events = [{"t": float(i), "cup": 1 + i % 4, "event": "raised", "condition": "leak",
               "priority": "medium", "suction_kpa": 10.0 + i, "message": f"e{i}"}
              for i in range(40)]
    # Events come from the pipeline's thread while blocks flow on the notifier's.
    sink = threading.Thread(target=lambda: [rec.record_event(e) for e in events])
    sink.start()
    for b in blocks:
        notifier.publish_block(b)
    sink.join()
    rec.set_summary({1: {"mean_kpa": 22.5}, 0: {"duration_s": 0.3}})
    notifier.stop()                                   # calls rec.stop()

    with Store(path) as s:
        row = s.get_session(sid)
        out = list(s.iter_blocks(sid))
        assert s.events(sid) == events
        assert s.summaries(sid) == {0: {"duration_s": 0.3}, 1: {"mean_kpa": 22.5}}
        assert s.device_info(sid) == INFO
        rows = s.data_stats(sid)["rows"]
    assert row["status"] == "completed" and row["ended_wall"] is not None
    assert (row["source"], row["therapist"], row["patient"]) == ("sim://normal", "T", "P-1")
    assert row["recorder"]["dropped_blocks"] == 0
    assert [b.n for b in out] == [b.n for b in blocks]        # block boundaries kept
    assert same_samples(out, blocks)
    assert gap_positions(out) == gap_positions(blocks)
    assert rows < len(blocks) // 4                           # contiguous blocks share rows


def test_lazy_start_takes_cups_and_rate_from_the_data(tmp_path):
    path = tmp_path / "c.db"
    rec = Recorder(path, source="text device")
    blocks = wire_blocks(10, cups=3, rate_hz=250, gaps_at=())
    for b in blocks:
        rec.on_block(b)
    rec.stop()
    with Store(path) as s:
        (row,) = s.list_sessions()
        assert (row["cups"], row["rate_hz"], row["device_serial"]) == (3, 250.0, "")
        assert same_samples(list(s.iter_blocks(row["id"])), blocks)


def test_heartbeat_advances_without_data(tmp_path):
    path = tmp_path / "c.db"
    rec = Recorder(path, commit_interval=0.05)
    sid = rec.start_session()

    def beat():
        with Store(path) as s:
            return s.get_session(sid)["heartbeat_wall"]

    first = beat()
    assert _wait_for(lambda: beat() > first)
    rec.stop()
    with Store(path) as s:
        assert s.get_session(sid)["status"] == "completed"


def test_a_stalled_disk_never_blocks_the_caller_and_losses_become_a_gap(tmp_path):
    path = tmp_path / "c.db"
    rec = Recorder(path, max_queued_values=400)       # 5 blocks of 20 x 4
    sid = rec.start_session()
    blocks = wire_blocks(400, size=20, gaps_at=())
    # Another program holds the write lock: the writer's next commit must wait.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        rec.flush(timeout=0)                          # make the writer commit now
        fed = 0
        while rec.stats()["dropped_blocks"] == 0:
            assert fed < 300, "the queue never filled while the disk was stalled"
            rec.on_block(blocks[fed])                 # must return although the disk hangs
            fed += 1
        for b in blocks[fed:fed + 20]:                # more losses, still no waiting
            rec.on_block(b)
        fed += 20
    finally:
        other.execute("COMMIT")
        other.close()
    assert rec.flush(timeout=10)
    rec.max_queued_values = 10**9                     # the rest must all fit
    for b in blocks[fed:]:
        rec.on_block(b)
    rec.stop()
    stats = rec.stats()
    with Store(path) as s:
        out = list(s.iter_blocks(sid))
        row = s.get_session(sid)
    assert stats["dropped_blocks"] > 0
    assert stats["samples_written"] + stats["dropped_samples"] == 400 * 20
    assert sum(b.n for b in out) == stats["samples_written"]
    (gap,) = [b for b in out if b.gap_before]
    assert gap.lost_before == stats["dropped_samples"]
    assert row["recorder"]["dropped_samples"] == stats["dropped_samples"]
    kept = [b for b in blocks if any(np.array_equal(b.t, o.t) for o in out)]
    assert same_samples(out, kept)                    # what was kept is exact


def test_with_backpressure_a_stalled_disk_holds_the_source_and_nothing_is_lost(tmp_path):
    # A replay can wait: while the disk hangs, on_block waits once the queue is
    # full (instead of dropping), and afterwards every sample is stored, no gap.
    path = tmp_path / "bp.db"
    rec = Recorder(path, max_queued_values=400, backpressure=True)   # 5 blocks of 20 x 4
    sid = rec.start_session()
    blocks = wire_blocks(200, size=20, gaps_at=())
    fed = []
    feeder = threading.Thread(target=lambda: [rec.on_block(b) or fed.append(1) for b in blocks])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        rec.flush(timeout=0)                          # make the writer commit now: it hangs
        feeder.start()
        # The feeder stops short of the end and stays there while the disk hangs.
        assert _wait_for(lambda: len(fed) > 0 and rec.stats()["blocks_in"] > len(fed))
        held = len(fed)
        assert held < len(blocks) and feeder.is_alive()
        assert rec.stats()["dropped_blocks"] == 0
    finally:
        other.execute("COMMIT")
        other.close()
    feeder.join(30)
    assert not feeder.is_alive() and len(fed) == len(blocks)
    rec.stop()
    stats = rec.stats()
    with Store(path) as s:
        out = list(s.iter_blocks(sid))
    assert stats["dropped_blocks"] == 0 and stats["dropped_samples"] == 0
    assert stats["samples_written"] == 200 * 20
    assert not any(b.gap_before for b in out)
    assert same_samples(out, blocks)


def test_events_and_summaries_after_stop_are_still_written(tmp_path):
    path = tmp_path / "c.db"
    rec = Recorder(path)
    sid = rec.start_session()
    rec.stop()
    rec.record_event({"t": 1.0, "event": "raised", "condition": "detached"})
    rec.set_summary(5, {"max_kpa": 24.0})
    # The shape of MonitorPipeline.stats_summary(): whole session + a list per cup.
    rec.set_summary({"duration_s": 12.5, "cups": [{"cup": 1, "mean_kpa": 22.4},
                                                  {"cup": 2, "mean_kpa": 21.9}]})
    with Store(path) as s:
        assert [e["condition"] for e in s.events(sid)] == ["detached"]
        assert s.summaries(sid) == {0: {"duration_s": 12.5}, 1: {"cup": 1, "mean_kpa": 22.4},
                                    2: {"cup": 2, "mean_kpa": 21.9}, 5: {"max_kpa": 24.0}}


def test_an_unusable_database_fails_start_in_one_line_and_later_data_is_dropped(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    rec = Recorder(path)
    with pytest.raises(StoreError, match="not a cupmon database") as info:
        rec.start_session()
    assert "\n" not in str(info.value)
    rec.on_block(wire_blocks(1)[0])                   # no exception on the data path
    rec.stop()
    assert path.read_text() == "not a database\n"
