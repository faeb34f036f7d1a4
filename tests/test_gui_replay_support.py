"""The small core additions the window's sessions and replay timeline use
(no Qt): ``Store.iter_blocks(t_from=)``, ``SessionReplaySource(start_t=,
preroll_s=)`` and ``set_speed()``, ``MonitorPipeline.reset_stats()``."""

from __future__ import annotations

import numpy as np
from test_replay import Collect, _stored_session
from test_store_helpers import same_samples, wire_blocks

from firmware_bridge.messages import SampleBlock
from firmware_bridge.protocol import Status
from monitor.pipeline import MonitorPipeline
from monitor.replay import SessionReplaySource
from monitor.store import Store


def _tail(blocks: list[SampleBlock], t_from: float) -> list[SampleBlock]:
    """The samples at or after ``t_from``, as blocks."""
    out = []
    for b in blocks:
        k = int(np.searchsorted(b.t, t_from))
        if k < b.n:
            out.append(SampleBlock(b.t[k:], b.suction[k:], b.status[k:], 0.0))
    return out


def test_iter_blocks_from_a_time_skips_the_rows_before_it(tmp_path):
    blocks = wire_blocks(40, size=50, gaps_at=(5,))        # 1000 Hz: 2 s of device time
    sid = _stored_session(tmp_path / "c.db", blocks)
    with Store(tmp_path / "c.db") as s:
        assert same_samples(list(s.iter_blocks(sid, t_from=None)), blocks)
        t_from = float(blocks[30].t[10])
        got = list(s.iter_blocks(sid, t_from=t_from))
        assert got[0].t[0] == blocks[30].t[0] and len(got) == 10    # from the row holding it
        assert same_samples(got, blocks[30:])
        assert list(s.iter_blocks(sid, t_from=1e9)) == []


def test_a_replay_from_a_chosen_time_prerolls_at_once_then_paces(tmp_path):
    blocks = wire_blocks(600, size=50, gaps_at=(100,))     # 30 s of device time
    sid = _stored_session(tmp_path / "c.db", blocks)
    t_end = float(blocks[-1].t[-1])
    start_t, preroll = t_end - 1.0, 20.0
    out = Collect()
    src = SessionReplaySource(tmp_path / "c.db", sid, speed=1.0, start_t=start_t,
                              preroll_s=preroll)
    src.add_listener(out)
    src.start()
    # 20 s of pre-roll are not paced: the whole replay is over long before.
    assert src.wait_done(12.0)
    src.stop()
    assert same_samples(out.blocks, _tail(blocks, start_t - preroll))
    assert not out.blocks[0].gap_before              # skipped on purpose, not lost
    assert out.blocks[0].t[0] >= start_t - preroll


def test_replay_speed_changes_while_it_plays(tmp_path):
    blocks = wire_blocks(600, size=50, gaps_at=())        # 30 s of device time
    sid = _stored_session(tmp_path / "c.db", blocks)
    out = Collect()
    src = SessionReplaySource(tmp_path / "c.db", sid, speed=1.0)
    src.add_listener(out)
    src.start()
    assert out.got.wait(10)
    assert not src.done.is_set()
    src.set_speed(None)                                   # as fast as possible from here
    assert src.wait_done(12.0)                            # 1x would take 30 s
    src.stop()
    assert same_samples(out.blocks, blocks)
    assert src.speed is None


def _regulating(t0: float, seconds: float, rate: int = 100) -> SampleBlock:
    t = t0 + np.arange(int(seconds * rate)) / rate
    s = np.full((t.size, 1), 22.5, np.float32)
    st = np.full((t.size, 1), int(Status.REGULATING), np.uint8)
    return SampleBlock(t, s, st, 0.0)


def test_reset_stats_starts_the_therapy_statistics_afresh():
    pipe = MonitorPipeline(cups=1, batch_s=0)
    pipe.on_block(_regulating(0.0, 20.0))
    before = pipe.stats_summary()
    assert before["duration_s"] > 19
    pipe.reset_stats()
    pipe.on_block(_regulating(20.0, 5.0))
    after = pipe.stats_summary()
    assert 4.5 < after["duration_s"] < 5.5
    assert after["cups"][0]["time_applied_s"] < 5.5 < before["cups"][0]["time_applied_s"]
    assert after["cups"][0]["mean_kpa"] == 22.5
