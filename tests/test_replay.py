"""Replay sources: a stored session and a capture file deliver exactly the
blocks of the original / of a live reading, with nothing lost, and paced
replay never runs ahead of the device clock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_store_helpers import gap_positions, same_samples, wire_blocks, wire_suction

from firmware_bridge.codec import Decoder, encode_info, encode_samples
from firmware_bridge.errors import LinkError
from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from monitor.recorder import Recorder
from monitor.replay import (
    CaptureReplaySource,
    ReplayError,
    SessionReplaySource,
    open_replay,
)
from monitor.store import NoSuchSession, Store

INFO = DeviceInfo("SIM-0001", (1, 0, 3), 4, 1000, sensor_model=255, flags=4)


class Collect(Listener):
    idle_interval = None

    def __init__(self, delay: float = 0.0):
        self.blocks: list[SampleBlock] = []
        self.msgs: list[object] = []
        self.arrivals: list[float] = []
        self.delay = delay
        self.got = threading.Event()

    def on_block(self, block):
        if self.delay:
            time.sleep(self.delay)      # a slow listener (disk, drawing)
        self.blocks.append(block)
        self.arrivals.append(time.monotonic())
        self.got.set()

    def on_message(self, msg):
        self.msgs.append(msg)

    def states(self):
        return [m.state for m in self.msgs if isinstance(m, LinkEvent)]


def _stored_session(path, blocks, info=INFO) -> int:
    with Store(path) as s:
        sid = s.create_session(source="test", info=info)
        s.add_blocks(sid, blocks)
        s.end_session(sid)
    return sid


def _run(source, *listeners, timeout=60.0):
    for lst in listeners:
        source.add_listener(lst)
    source.start()
    assert source.wait_done(timeout)
    source.stop()


def test_session_replay_delivers_the_recorded_blocks_exactly_and_says_so(tmp_path):
    blocks = wire_blocks(120, size=25, gaps_at=(10, 90))
    sid = _stored_session(tmp_path / "c.db", blocks)
    fast, slow = Collect(), Collect(delay=0.002)
    src = SessionReplaySource(tmp_path / "c.db", sid)
    _run(src, fast, slow)
    for c in (fast, slow):             # backpressure: the slow listener loses nothing
        assert [b.n for b in c.blocks] == [b.n for b in blocks]
        assert same_samples(c.blocks, blocks)
        assert gap_positions(c.blocks) == gap_positions(blocks)
        assert c.msgs[0] == INFO
        assert c.states() == [LinkState.CONNECTED, LinkState.CLOSED]
        assert c.msgs[1].info == INFO
    assert src.info == INFO
    assert src.stats().samples == sum(b.n for b in blocks)
    assert src.stats().frames_lost == 20


def test_recorded_then_replayed_session_equals_the_original_stream(tmp_path):
    path = tmp_path / "c.db"
    blocks = wire_blocks(200, size=20, gaps_at=(33,))
    rec = Recorder(path, info=INFO)
    sid = rec.start_session()
    for b in blocks:
        rec.on_block(b)
    rec.stop()
    # Replay the stored session into a second recording: a copy, sample for sample.
    rec2 = Recorder(path, source=f"replay:{sid}")
    sid2 = rec2.start_session()
    out = Collect()
    _run(open_replay(str(sid), path), out, rec2)
    assert same_samples(out.blocks, blocks)
    with Store(path) as s:
        again = list(s.iter_blocks(sid2))
        assert s.get_session(sid2)["device_serial"] == INFO.serial
    assert [b.n for b in again] == [b.n for b in blocks]
    assert same_samples(again, blocks) and gap_positions(again) == gap_positions(blocks)


def _capture(seed=0, cups=4, n=6000, corrupt=True) -> tuple[bytes, int]:
    """A device byte stream: INFO, samples, a lost run of frames, corrupt bytes."""
    rng = np.random.default_rng(seed)
    t_us = 123_000 + 1000 * np.arange(n, dtype=np.int64)
    s = wire_suction(rng, n, cups)
    s[rng.random((n, cups)) < 0.002] = np.nan
    st = rng.choice(np.array([8, 9, 40], np.uint8), (n, cups))
    data = encode_info(INFO, 0, 0)
    a, seq = encode_samples(t_us[:2000], s[:2000], st[:2000], 1)
    b, seq = encode_samples(t_us[2050:4000], s[2050:4000], st[2050:4000], seq + 50)
    c, seq = encode_samples(t_us[4000:], s[4000:], st[4000:], seq)
    if corrupt:
        c = bytearray(c)
        c[5000:5040] = bytes(rng.integers(0, 256, 40, np.uint8))
        c = bytes(c)
    return data + a + b + c, n


def _live(data: bytes, seed: int = 1) -> tuple[list[SampleBlock], object]:
    """What a live reader makes of the bytes: arbitrary serial-read sizes."""
    dec = Decoder()
    rng = np.random.default_rng(seed)
    blocks, i, host = [], 0, 0.0
    while i < len(data):
        k = int(rng.integers(1, 700))
        host += 0.01
        blocks += dec.feed(data[i:i + k], host).blocks
        i += k
    return blocks, dec.stats


@pytest.mark.parametrize("chunk_size", [4096, 61])
def test_capture_replay_equals_a_live_reading_of_the_same_bytes(tmp_path, chunk_size):
    data, _ = _capture()
    path = tmp_path / "run.bin"
    path.write_bytes(data)
    live, live_stats = _live(data)
    out = Collect()
    src = CaptureReplaySource(path, chunk_size=chunk_size)
    _run(src, out)
    assert same_samples(out.blocks, live)
    assert gap_positions(out.blocks) == gap_positions(live)
    assert len(gap_positions(live)) >= 2           # the lost run and the corrupt frames
    stats = src.stats()
    assert stats.crc_errors == live_stats.crc_errors > 0
    assert stats.frames_lost == live_stats.frames_lost >= 50
    assert out.msgs[0] == INFO and out.msgs[1].info == INFO
    assert out.states() == [LinkState.CONNECTED, LinkState.CLOSED]


def test_capture_replay_of_text_lines_with_device_time(tmp_path):
    lines = [f"t:{i / 100:.2f} cup1:{20 + (i % 7) / 10:.2f} cup2:{22.0:.2f}"
             for i in range(500)]
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "plotter.txt"
    path.write_bytes(data)
    live, _ = _live(data)
    out = Collect()
    _run(CaptureReplaySource(path, chunk_size=100), out)
    assert sum(b.n for b in live) >= 498 and same_samples(out.blocks, live)


def test_garbage_capture_shows_up_as_counters_not_errors(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 100_000, np.uint8).tobytes())
    out = Collect()
    src = CaptureReplaySource(path)
    _run(src, out)
    stats = src.stats()
    assert out.blocks == []
    assert stats.bytes_in == stats.bytes_discarded == 100_000
    assert out.states()[-1] is LinkState.CLOSED


def test_cupsim_capture_replays_like_a_live_reading(tmp_path):
    pytest.importorskip("sim.engine", reason="the simulator engine is not there yet")
    from sim.cli import main as cupsim

    path = tmp_path / "run.bin"
    assert cupsim(["normal", "--cups", "4", "--rate", "200", "--duration", "20",
                   "--out", str(path)]) == 0
    live, _ = _live(path.read_bytes())
    out = Collect()
    _run(CaptureReplaySource(path), out)
    assert sum(b.n for b in live) >= 20 * 200 - 1
    assert same_samples(out.blocks, live)


def test_replay_into_the_checker_gives_the_same_events_as_live(tmp_path):
    pipeline = pytest.importorskip("monitor.pipeline")
    rng = np.random.default_rng(2)
    n = 4000
    t_us = 1000 * 10 * np.arange(n, dtype=np.int64)      # 100 Hz, 40 s
    s = wire_suction(rng, n, 2, noise=0.1)
    s[1500:1900, 0] += 5.0                                 # over suction on cup 1
    s[2500:2800, 1] = wire_suction(rng, 300, 1, level=3.0)[:, 0]   # cup 2 detaches
    st = np.full((n, 2), 8, np.uint8)
    info = DeviceInfo("SIM-2", (1, 0, 0), 2, 100)
    data = encode_info(info, 0, 0) + encode_samples(t_us, s, st, 1)[0]
    path = tmp_path / "run.bin"
    path.write_bytes(data)

    def events(blocks_or_source):
        pipe = pipeline.MonitorPipeline(clock=lambda: 0.0)   # no host-clock silences
        if isinstance(blocks_or_source, list):
            pipe.on_message(info)
            for b in blocks_or_source:
                pipe.on_block(b)
        else:
            _run(blocks_or_source, pipe)
        return [{k: v for k, v in e.to_dict().items() if k != "wall"} for e in pipe.events()]

    live = events(_live(data)[0])
    from_capture = events(CaptureReplaySource(path))
    rec = Recorder(tmp_path / "c.db", info=info)
    sid = rec.start_session()
    _run(CaptureReplaySource(path), rec)
    from_session = events(SessionReplaySource(tmp_path / "c.db", sid))
    assert {e["condition"] for e in live} >= {"over_suction", "detached"}
    assert from_capture == live
    assert from_session == live


def test_paced_replay_never_runs_ahead_of_the_device_clock(tmp_path):
    blocks = wire_blocks(40, size=25, gaps_at=(20,))     # ~1.0 s of device time
    sid = _stored_session(tmp_path / "c.db", blocks)
    out = Collect()
    speed = 4.0
    src = SessionReplaySource(tmp_path / "c.db", sid, speed=speed)
    started = time.monotonic()
    _run(src, out)
    assert same_samples(out.blocks, blocks)
    t_end = np.array([b.t[-1] for b in out.blocks])
    due = (t_end - t_end[0]) / speed
    published = np.array([b.host_time for b in out.blocks]) - started
    assert np.all(published >= due)              # never early: a lower bound, no slack
    assert np.all(np.diff(published) >= 0) and np.all(np.diff(t_end) > 0)


def test_stopping_a_paced_replay_midway(tmp_path):
    blocks = wire_blocks(600, size=50, gaps_at=())       # 30 s of device time
    sid = _stored_session(tmp_path / "c.db", blocks)
    out = Collect()
    src = SessionReplaySource(tmp_path / "c.db", sid, speed=1.0)
    src.add_listener(out)
    src.start()
    assert src.wait_connected(10)
    assert out.got.wait(10)
    src.stop()                                          # long before 30 s have passed
    assert src.done.is_set()
    assert 0 < len(out.blocks) < len(blocks)
    assert same_samples(out.blocks, blocks[:len(out.blocks)])
    assert out.msgs[-1].state is LinkState.CLOSED and "stopped" in out.msgs[-1].message


def test_open_replay_and_its_one_line_errors(tmp_path):
    sid = _stored_session(tmp_path / "c.db", wire_blocks(3))
    assert isinstance(open_replay(str(sid), tmp_path / "c.db"), SessionReplaySource)
    cap = tmp_path / "run.bin"
    cap.write_bytes(b"")
    assert isinstance(open_replay(str(cap)), CaptureReplaySource)
    with pytest.raises(NoSuchSession, match="no session 77"):
        open_replay("77", tmp_path / "c.db")
    with pytest.raises(ReplayError, match="no capture file") as info:
        open_replay(str(tmp_path / "missing.bin"))
    assert isinstance(info.value, LinkError) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="positive"):
        open_replay(str(cap), speed=0)
