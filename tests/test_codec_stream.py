"""The Decoder over a stream: clock and seq wrap, gaps and losses, device resets,
reconnects, cup-count changes, version mismatch, detection, the fast path."""

from __future__ import annotations

import numpy as np
import pytest

import firmware_bridge.decoder as decoder_mod
from firmware_bridge.codec import (
    Decoder,
    encode_ack,
    encode_event,
    encode_frame,
    encode_info,
    encode_samples,
)
from firmware_bridge.messages import DeviceEvent, DeviceInfo
from firmware_bridge.protocol import TIME_WRAP_US, EventCode, MsgType, crc16_ccitt_false


def samples(seqs, times_us, cups=2, value=22.0) -> bytes:
    """One SAMPLE frame per (seq, time); suction = value + index/100."""
    out = b""
    for i, (s, t) in enumerate(zip(seqs, times_us, strict=True)):
        kpa = np.full((1, cups), value + i / 100)
        out += encode_samples(np.array([t]), kpa, np.zeros((1, cups), np.uint8), s)[0]
    return out


def run(data: bytes, d: Decoder | None = None, host: float = 0.0):
    d = d or Decoder("binary")
    res = d.feed(data, host)
    assert d.internal_errors == 0
    return res, d


def all_t(blocks) -> np.ndarray:
    return np.concatenate([b.t for b in blocks]) if blocks else np.zeros(0)


def test_seq_and_clock_wrap_in_one_block():
    w = TIME_WRAP_US
    res, d = run(samples([65534, 65535, 0, 1], [w - 2000, w - 1, 999, 2000]))
    (b,) = res.blocks
    assert not b.gap_before and b.lost_before == 0
    np.testing.assert_array_equal(b.t, np.array([w - 2000, w - 1, w + 999, w + 2000]) / 1e6)
    assert d.stats.frames_lost == 0


def test_clock_wrap_between_chunks_and_many_wraps():
    d = Decoder("binary")
    step = TIME_WRAP_US // 3 - 17  # under half the wrap: always read as forward
    times = [(k * step) % TIME_WRAP_US for k in range(10)]  # wraps three times
    ts = []
    for k in range(10):
        res, _ = run(samples([k], [times[k]]), d, host=k * step / 1e6)
        ts.extend(all_t(res.blocks).tolist())
    assert ts == [k * step / 1e6 for k in range(10)]


def test_sequence_gap_splits_the_block_and_counts_the_loss():
    res, d = run(samples([10, 11, 14, 15], [0, 1000, 4000, 5000]))
    assert [b.n for b in res.blocks] == [2, 2]
    assert [(b.gap_before, b.lost_before) for b in res.blocks] == [(False, 0), (True, 2)]
    assert d.stats.frames_lost == 2


def test_seq_taken_by_other_frames_is_not_a_loss():
    data = (samples([10, 11], [0, 1000]) + encode_event(EventCode.SENSOR_OK, 1, 0, 12, 1500)
            + encode_ack(3, MsgType.PING, 13, 1600) + samples([14], [2000]))
    res, d = run(data)
    (b,) = res.blocks
    assert b.n == 3 and d.stats.frames_lost == 0
    assert [type(m).__name__ for m in res.messages] == ["DeviceEvent", "Ack"]
    assert res.messages[0].t == 0.0015


def test_loss_next_to_a_message_marks_the_next_sample_block():
    # Lost frames between two messages, then samples in the next chunk.
    d = Decoder("binary")
    res1, _ = run(samples([1], [0]) + encode_event(5, 0, 0, 2, 10) + encode_event(5, 0, 0, 5, 20),
                  d)
    res2, _ = run(samples([6, 7], [1000, 2000]), d)
    assert [(b.gap_before, b.lost_before) for b in res1.blocks + res2.blocks] == \
        [(False, 0), (True, 2)]


def test_corrupt_frame_costs_only_itself():
    frames = [samples([s], [s * 1000]) for s in range(5)]
    bad = bytearray(frames[2])
    bad[15] ^= 0x40
    res, d = run(b"".join(frames[:2]) + bytes(bad) + b"".join(frames[3:]))
    assert all_t(res.blocks).tolist() == [0.0, 0.001, 0.003, 0.004]
    assert [(b.gap_before, b.lost_before) for b in res.blocks] == [(False, 0), (True, 1)]
    assert d.stats.crc_errors == 1 and d.stats.frames_lost == 1
    assert d.stats.bytes_discarded == len(bad)


def test_device_reset_keeps_time_monotonic_and_marks_a_gap():
    before = samples([100, 101, 102], [500_000_000, 500_001_000, 500_002_000])
    boot = encode_event(EventCode.BOOT, 0, 1, 0, 1_000)
    after = samples([1, 2], [2_000, 3_000])
    d = Decoder("binary")
    run(before, d, host=10.0)
    res, _ = run(boot + after, d, host=10.5)
    assert isinstance(res.messages[0], DeviceEvent)
    (b,) = res.blocks
    assert b.gap_before and b.lost_before == 0 and d.stats.frames_lost == 0
    # The device clock restarted; t continues from 500.002 s plus the 0.5 s the
    # host saw pass, then follows the device clock again.
    assert res.messages[0].t == pytest.approx(500.502)
    np.testing.assert_allclose(b.t, [500.503, 500.504])


def test_device_reset_after_long_uptime_is_not_read_as_a_forward_jump():
    # 3000 s -> 0.5 s is +1295 s modulo 2**32 us: implausible within 0.1 s of host time.
    d = Decoder("binary")
    run(samples([7, 8], [3_000_000_000, 3_000_001_000]), d, host=1.0)
    res, _ = run(samples([0, 1], [500_000, 501_000]), d, host=1.1)
    (b,) = res.blocks
    assert b.gap_before
    np.testing.assert_allclose(b.t, [3000.101, 3000.102])


def test_reset_in_the_middle_of_a_chunk():
    # No host time passed within a chunk: t resumes 1 us after the last frame.
    res, _ = run(samples([5, 6], [9_000_000, 9_001_000]) + samples([0, 1], [100, 1100]))
    assert [b.gap_before for b in res.blocks] == [False, True]
    assert all_t(res.blocks).tolist() == [9.0, 9.001, 9.001001, 9.002001]


def test_reconnect_to_a_device_that_kept_running():
    d = Decoder("binary")
    run(samples(range(10), range(0, 10_000, 1000)), d, host=100.0)
    d.reset()
    # 2 s later on the host; the device sent 2000 frames meanwhile.
    res, _ = run(samples([2010, 2011], [2_010_000, 2_011_000]), d, host=102.0)
    (b,) = res.blocks
    assert b.gap_before and b.lost_before == 2000
    np.testing.assert_array_equal(b.t, [2.01, 2.011])


def test_reconnect_after_a_silence_longer_than_the_clock_wrap():
    d = Decoder("binary")
    run(samples([0], [4_000_000_000]), d, host=0.0)
    d.reset()
    silence_us = 5_000_000_000  # 5000 s: the u32 clock wrapped once
    res, _ = run(samples([1], [(4_000_000_000 + silence_us) % TIME_WRAP_US]), d, host=5000.0)
    assert res.blocks[0].t.tolist() == [(4_000_000_000 + silence_us) / 1e6]
    assert res.blocks[0].gap_before


def test_reconnect_to_a_rebooted_device():
    d = Decoder("binary")
    run(samples([50, 51], [60_000_000, 60_001_000]), d, host=10.0)
    d.feed(samples([52], [60_002_000])[:15], 10.0)  # a partial frame is dropped by reset
    d.reset()
    assert d.buffered == 0 and d.stats.bytes_discarded == 15
    res, _ = run(samples([0, 1], [10_000, 11_000]), d, host=13.0)
    (b,) = res.blocks
    assert b.gap_before and b.lost_before == 0
    np.testing.assert_allclose(b.t, [63.001, 63.002])


def test_cup_count_change_starts_a_new_block_without_a_gap():
    res, _ = run(samples([1, 2], [0, 1000], cups=8) + samples([3, 4], [2000, 3000], cups=4))
    assert [(b.cups, b.n, b.gap_before) for b in res.blocks] == [(8, 2, False), (4, 2, False)]


def test_sample_times_must_increase():
    # Equal stamps: moved 1 us on, no gap. A stamp going back: new block, gap.
    res, _ = run(samples([1, 2, 3, 4], [5000, 5000, 6000, 5500]))
    t = all_t(res.blocks)
    assert t.tolist() == [0.005, 0.005001, 0.006001, 0.006002]
    assert [(b.n, b.gap_before) for b in res.blocks] == [(3, False), (1, True)]


def test_a_message_stamped_slightly_earlier_is_fine():
    # A sample taken before an ACK may be sent after it.
    data = samples([1], [10_000]) + encode_ack(1, MsgType.PING, 2, 12_000) + samples([3], [11_000])
    res, _ = run(data)
    (b,) = res.blocks
    assert b.t.tolist() == [0.01, 0.011] and not b.gap_before


def test_forward_jump_within_the_host_silence_is_trusted():
    d = Decoder("binary")
    run(samples([1], [1_000_000]), d, host=0.0)
    res, _ = run(samples([2], [301_000_000]), d, host=300.0)  # 300 s later, consecutive seq
    assert res.blocks[0].t.tolist() == [301.0] and not res.blocks[0].gap_before


def _v2_frame(seq: int) -> bytes:
    body = bytes([2, 0x01, 4]) + seq.to_bytes(2, "little") + bytes(4) + b"\x01\x02\x03\x04"
    return b"\xa5\x5a" + body + crc16_ccitt_false(body).to_bytes(2, "little")


def test_version_mismatch_is_reported_after_several_frames():
    d = Decoder("auto")
    run(_v2_frame(0) + _v2_frame(1), d)
    assert d.mode == "binary" and d.version_mismatch is None
    run(_v2_frame(2), d)
    assert d.version_mismatch == 2
    assert d.stats.frames_ok == 0 and d.stats.crc_errors == 0
    assert d.stats.bytes_discarded == 3 * len(_v2_frame(0))
    run(samples([1], [0]), d)
    assert d.version_mismatch is None


def test_unknown_and_malformed_device_frames_are_counted_and_skipped():
    data = (samples([1], [0]) + encode_frame(0x07, b"future", 2, 100)
            + encode_frame(MsgType.INFO, b"short", 3, 200)
            + encode_frame(MsgType.SAMPLE, b"\x02\x00\x00", 4, 300)  # n=2 needs L=7
            + samples([5], [400]))
    res, d = run(data)
    assert d.stats.unknown_messages == 3 and d.stats.frames_ok == 5
    assert not res.messages
    assert [(b.n, b.gap_before, b.lost_before) for b in res.blocks] == [(1, False, 0),
                                                                        (1, True, 0)]


def test_info_is_a_message():
    info = DeviceInfo("X1", (1, 2, 3), 2, 100)
    res, _ = run(encode_info(info, 0, 0) + samples([1], [10]))
    assert res.messages == [info] and res.blocks[0].n == 1


def test_huge_chunk():
    n = 30_000  # 1.1 MB of 8-cup frames
    rng = np.random.default_rng(0)
    suction = np.round(rng.uniform(0, 30, (n, 8)), 2)
    data, _ = encode_samples(np.arange(n) * 1000, suction, np.zeros((n, 8), np.uint8), 0)
    res, d = run(data)
    assert sum(b.n for b in res.blocks) == n and d.stats.samples == n
    np.testing.assert_array_equal(np.concatenate([b.suction for b in res.blocks]),
                                  suction.astype(np.float32))


def _rows(blocks):
    return (all_t(blocks).tolist(),
            np.concatenate([b.suction for b in blocks]).tobytes(),
            [(b.gap_before, b.lost_before) for b in blocks if b.gap_before or b.lost_before])


def test_fast_path_gives_the_general_result(monkeypatch):
    """Aligned chunks of clean frames skip the frame scan; the result is the same
    as feeding the bytes one at a time through the general path."""
    n, cups = 120, 8
    rng = np.random.default_rng(3)
    suction = rng.uniform(0, 30, (n, cups))
    data, _ = encode_samples(np.arange(n) * 997, suction, np.zeros((n, cups), np.uint8), 65500)
    size = 13 + 1 + 3 * cups
    calls = []
    real = decoder_mod.scan_frames
    monkeypatch.setattr(decoder_mod, "scan_frames", lambda a: calls.append(1) or real(a))
    fast = Decoder("binary")
    blocks_fast = []
    for i in range(0, len(data), 10 * size + 5):  # 10 frames and the start of the next
        blocks_fast += fast.feed(data[i:i + 10 * size + 5], 0.0).blocks
    assert len(calls) == 1  # only the very first chunk went through the scan
    slow = Decoder("binary")
    blocks_slow = []
    for i in range(len(data)):
        blocks_slow += slow.feed(data[i:i + 1], 0.0).blocks
    assert _rows(blocks_fast) == _rows(blocks_slow)
    assert fast.stats == slow.stats


IRREGULAR = {
    "equal stamps": ([1, 2, 3, 4, 5, 6], [0, 1000, 1000, 1000, 2000, 3000]),
    "small step back": ([1, 2, 3, 4, 5, 6], [0, 1000, 2000, 1500, 2500, 3500]),
    "device reset": ([1, 2, 3, 0, 1, 2], [5_000_000, 5_001_000, 5_002_000, 100, 1100, 2100]),
    "seq gap and duplicate": ([1, 2, 5, 6, 6, 7], [0, 1000, 4000, 5000, 5500, 6000]),
    "clock wrap": ([1, 2, 3, 4, 5, 6], [(1 << 32) - 2500 + 1000 * k for k in range(6)]),
    "forward jump": ([1, 2, 3, 4, 5, 6], [0, 1000, 90_000_000, 90_001_000, 90_002_000,
                                          90_003_000]),
}


@pytest.mark.parametrize("seqs, times_us", IRREGULAR.values(), ids=IRREGULAR.keys())
def test_fast_path_agrees_on_irregular_streams(seqs, times_us):
    data = samples(seqs, [t % TIME_WRAP_US for t in times_us], cups=3)
    size = 13 + 1 + 3 * 3
    outs = []
    for per_chunk in (len(seqs), 1, 2, 3):  # frame-aligned chunks may take the fast path
        d = Decoder("binary")
        blocks = []
        for i in range(0, len(data), per_chunk * size):
            blocks += d.feed(data[i:i + per_chunk * size], 0.0).blocks
        outs.append((_rows(blocks), d.stats))
    assert all(o == outs[0] for o in outs)
    t = outs[0][0][0]
    assert np.all(np.diff(t) > 0)


def test_auto_detects_binary_despite_printable_bytes():
    payload = b"\n12 13\n14 15\n"  # text-like lines inside a frame
    data = b"1.5 2.5\n" + encode_ack(1, 0x10, 0, 0, payload) + samples([1], [10])
    d = Decoder("auto")
    for i in range(len(data)):
        d.feed(data[i:i + 1], 0.0)
    assert d.mode == "binary" and d.stats.frames_ok == 2 and d.stats.text_lines == 0


def test_auto_detects_text_and_redetects_after_reset():
    d = Decoder("auto")
    d.feed(b"partial\n1.0 2.0\n", 0.0)
    assert d.mode == "auto"  # one whole line is not enough
    res = d.feed(b"1.5 2.5\n", 0.0)
    assert d.mode == "text" and sum(b.n for b in res.blocks) == 2
    d.reset()
    assert d.mode == "auto"
    d.feed(samples([1], [10]), 1.0)
    assert d.mode == "binary"


def test_undecided_bytes_are_bounded():
    d = Decoder("auto")
    for _ in range(40):
        d.feed(bytes(range(0x80, 0x100)) * 16, 0.0)  # 4 KiB of nothing
    assert d.mode == "auto" and d.buffered <= decoder_mod.AUTO_BUFFER_LIMIT
    assert d.stats.bytes_discarded + d.buffered == d.stats.bytes_in


def test_feed_accepts_memoryview_and_bytearray():
    data = samples([1, 2], [0, 10])
    d = Decoder()
    n = sum(b.n for b in d.feed(bytearray(data[:30])).blocks)
    n += sum(b.n for b in d.feed(memoryview(data)[30:]).blocks)
    assert n == 2


def test_bad_mode_is_refused():
    with pytest.raises(ValueError):
        Decoder("hex")
