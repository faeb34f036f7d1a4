"""The Decoder's fast path (back-to-back SAMPLE frames continuing the previous
chunk, checked with strided views in one go) must give exactly what the general
frame scan gives, and must refuse every frame the scan would not accept as the
plain next sample: damaged bytes anywhere in any frame, and well-formed frames
that break the run (seq, clock, type, cup count, version)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.codec import Decoder, encode_frame, encode_samples
from firmware_bridge.frames import crc16_residue_strided, crc16_strided
from firmware_bridge.protocol import HEADER_SIZE, TIME_WRAP_US, MsgType, crc16_ccitt_false


def sample_frames(n: int, cups: int, seq0: int = 0, t0: int = 1_000_000, dt: int = 1000,
                  seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    suction = np.round(rng.uniform(-5, 40, (n, cups)), 2)
    suction[rng.random((n, cups)) < 0.05] = np.nan  # some "no reading"
    status = rng.integers(0, 64, (n, cups), dtype=np.uint8)
    t = (t0 + dt * np.arange(n)) % TIME_WRAP_US
    return encode_samples(t, suction, status, seq0)[0]


def frame_size(cups: int) -> int:
    return HEADER_SIZE + 1 + 3 * cups + 2


def feed_all(data: bytes, cuts: list[int], fast: bool, monkeypatch=None):
    """Feed ``data`` split at ``cuts``; returns a comparable record of everything."""
    d = Decoder("binary")
    if not fast:
        d._fast_samples = lambda host, res: False  # the general path only
    out = []
    bounds = [0, *cuts, len(data)]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        res = d.feed(data[a:b], host_time=0.05 * i)
        out.append(([(blk.t.tobytes(), blk.t.dtype.str, blk.suction.tobytes(),
                      blk.suction.shape, blk.suction.dtype.str, blk.status.tobytes(),
                      blk.status.shape, blk.status.dtype.str, blk.host_time,
                      blk.lost_before, blk.gap_before) for blk in res.blocks],
                    [repr(m) for m in res.messages], d.buffered))
    assert d.internal_errors == 0
    return out, d.stats, d.version_mismatch


def assert_same(data: bytes, cuts: list[int]) -> None:
    fast = feed_all(data, cuts, fast=True)
    slow = feed_all(data, cuts, fast=False)
    assert fast == slow


def frame_aligned_cuts(data_len: int, size: int, per: int, extra: int = 0) -> list[int]:
    return list(range(per * size + extra, data_len, per * size))


# --- the CRC over strided frames ----------------------------------------------------

@pytest.mark.parametrize("m", [1, 2, 3, 16, 19, 33, 34, 57, 58, 267])
def test_crc16_strided_matches_the_scalar_crc(m):
    rng = np.random.default_rng(m)
    for stride in (m, m + 1, m + 4):
        k = 13
        buf = rng.integers(0, 256, 3 + k * stride, dtype=np.uint8).tobytes()
        got = crc16_strided(buf, 3, stride, k, m).tolist()
        assert got == [crc16_ccitt_false(buf[3 + i * stride:3 + i * stride + m])
                       for i in range(k)]


@pytest.mark.parametrize("m", [1, 2, 3, 18, 19, 34, 35])
def test_crc16_residue_is_zero_exactly_for_good_crcs(m):
    rng = np.random.default_rng(m)
    stride = m + 2 + 3
    k = 64
    buf = bytearray(rng.integers(0, 256, 3 + k * stride, dtype=np.uint8).tobytes())
    good = rng.random(k) < 0.5
    for i in range(k):
        msg = bytes(buf[3 + i * stride:3 + i * stride + m])
        crc = crc16_ccitt_false(msg) ^ (0 if good[i] else int(rng.integers(1, 1 << 16)))
        buf[3 + i * stride + m:3 + i * stride + m + 2] = crc.to_bytes(2, "little")
    residue = crc16_residue_strided(bytes(buf), 3, stride, k, m)
    assert ((residue == 0) == good).all()


def test_crc16_strided_check_value():
    buf = b"x123456789"
    assert crc16_strided(buf, 1, 9, 1, 9).tolist() == [0x29B1]


# --- the fast path is taken and agrees ------------------------------------------------

@pytest.mark.parametrize("cups", [1, 2, 3, 8, 16])
def test_clean_stream_any_split_agrees(cups):
    size = frame_size(cups)
    # seq and the clock both wrap inside the stream
    data = sample_frames(300, cups, seq0=65_400, t0=TIME_WRAP_US - 150_000, seed=cups)
    rng = np.random.default_rng(cups)
    for per in (1, 7, 100):
        assert_same(data, frame_aligned_cuts(len(data), size, per))
        assert_same(data, frame_aligned_cuts(len(data), size, per, extra=1))
        assert_same(data, frame_aligned_cuts(len(data), size, per, extra=size - 1))
    for _ in range(5):
        cuts = sorted(set(rng.integers(1, len(data), 40).tolist()))
        assert_same(data, cuts)


def test_fast_path_really_runs(monkeypatch):
    cups = 8
    size = frame_size(cups)
    data = sample_frames(200, cups)
    d = Decoder("binary")
    taken = []
    real = d._fast_samples
    d._fast_samples = lambda host, res: taken.append(real(host, res)) or taken[-1]
    for i in range(0, len(data), 20 * size + 3):
        d.feed(data[i:i + 20 * size + 3], 0.0)
    assert taken[0] is False and all(taken[1:])
    assert d.stats.samples == 200 and d.stats.bytes_discarded == 0


# --- damage anywhere --------------------------------------------------------------------

@pytest.mark.parametrize("cups", [3, 8])
def test_a_damaged_byte_anywhere_is_refused(cups):
    """Flip one byte at every offset of a frame that is the first, a middle, the
    last whole or the partial last frame of a chunk: the fast path must fall back
    and the result must be the general path's."""
    size = frame_size(cups)
    per = 6
    n = 4 * per
    clean = sample_frames(n, cups, seq0=65_530, seed=1)
    chunk = per * size + 5  # each chunk ends inside a frame
    cuts = list(range(chunk, len(clean), chunk))
    for victim in (per, per + 1, per + 3, 2 * per - 1, 2 * per):
        for offset in range(size):
            for flip in (0x01, 0x80, 0xFF):
                data = bytearray(clean)
                data[victim * size + offset] ^= flip
                assert_same(bytes(data), cuts)


def _frame(seq: int, t: int, cups: int, msg_type: int = MsgType.SAMPLE, n: int | None = None,
           length: int | None = None) -> bytes:
    payload = bytes([cups if n is None else n]) + bytes(3 * cups)
    if length is not None:
        payload = (payload + bytes(256))[:length]
    return encode_frame(msg_type, payload, seq, t)


def _with_version(frame: bytes, version: int) -> bytes:
    body = bytes([version]) + frame[3:-2]
    return frame[:2] + body + crc16_ccitt_false(body).to_bytes(2, "little")


ODDITIES = {
    # Well-formed frames (good CRC) that are not "the next sample".
    "seq skips": lambda i, s, t, c: _frame(s + 1, t, c),
    "seq repeats": lambda i, s, t, c: _frame(s - 1, t, c),
    "seq skips 256": lambda i, s, t, c: _frame(s + 256, t, c),  # same low byte
    "seq 256 back": lambda i, s, t, c: _frame(s - 256, t, c),
    "seq far back": lambda i, s, t, c: _frame(s - 30_000, t, c),
    "same time": lambda i, s, t, c: _frame(s, t - 1000, c),
    "time back": lambda i, s, t, c: _frame(s, t - 1500, c),
    "time far back": lambda i, s, t, c: _frame(s, t - 5_000_000, c),
    "time jumps 61 s": lambda i, s, t, c: _frame(s, t + 61_000_000, c),
    "time jumps 60 s": lambda i, s, t, c: _frame(s, t + 60_000_000 - 1000, c),
    "event": lambda i, s, t, c: encode_frame(MsgType.EVENT, bytes([6, 0, 1, 0]), s, t),
    "event of sample length": lambda i, s, t, c: _frame(s, t, c, msg_type=MsgType.EVENT),
    "other cup count": lambda i, s, t, c: _frame(s, t, c + 1),
    "n differs from length": lambda i, s, t, c: _frame(s, t, c, n=c + 1),
    "bad sample length": lambda i, s, t, c: _frame(s, t, c, length=3 * c),
    "version 2": lambda i, s, t, c: _with_version(_frame(s, t, c), 2),
    "command": lambda i, s, t, c: encode_frame(MsgType.PING, b"", s, t),
    "garbage byte before": lambda i, s, t, c: b"\x00" + _frame(s, t, c),
    "stray sync before": lambda i, s, t, c: b"\xa5\x5a" + _frame(s, t, c),
}


@pytest.mark.parametrize("oddity", ODDITIES.values(), ids=ODDITIES.keys())
@pytest.mark.parametrize("cups", [2, 8])
def test_well_formed_oddities_fall_back(oddity, cups):
    size = frame_size(cups)
    per = 5
    for victim in (per, per + 2, 2 * per - 1):
        frames = []
        for i in range(4 * per):
            seq, t = (65_530 + i) % 65_536, (TIME_WRAP_US - 8_000 + 1000 * i) % TIME_WRAP_US
            frames.append(oddity(i, seq, t, cups) if i == victim else _frame(seq, t, cups))
        data = b"".join(frames)
        assert_same(data, frame_aligned_cuts(len(data), size, per))
        assert_same(data, frame_aligned_cuts(len(data), size, per, extra=2))
        assert_same(data, [len(b"".join(frames[:victim])), len(b"".join(frames[:victim + 1]))])


def test_random_damage_and_random_splits():
    rng = np.random.default_rng(7)
    cups = 8
    for trial in range(40):
        data = bytearray(sample_frames(150, cups, seq0=int(rng.integers(0, 65_536)),
                                       t0=int(rng.integers(0, TIME_WRAP_US)), seed=trial))
        for pos in rng.integers(0, len(data), int(rng.integers(0, 4))).tolist():
            data[pos] = int(rng.integers(0, 256))
        if trial % 3 == 0:  # garbage that looks like a frame start
            at = int(rng.integers(0, len(data)))
            data[at:at] = b"\xa5\x5a\x01\x01" + bytes(rng.integers(0, 256, 10, dtype=np.uint8))
        size = frame_size(cups)
        per = int(rng.integers(1, 120))
        cuts = frame_aligned_cuts(len(data), size, per, extra=int(rng.integers(0, size)))
        assert_same(bytes(data), cuts)
        cuts = sorted(set(rng.integers(1, len(data), int(rng.integers(1, 30))).tolist()))
        assert_same(bytes(data), cuts)


def test_sample_after_an_earlier_stamped_message_falls_back():
    """A message may be stamped slightly before the sample sent ahead of it; the
    next sample, later than that message but not than the last sample, must not
    be taken as a plain continuation (its time has to be bumped)."""
    cups = 4
    frames = [_frame(i, 1_000_000 + 1000 * i, cups) for i in range(10)]
    t_last = 1_000_000 + 9000
    frames.append(encode_frame(MsgType.EVENT, bytes([6, 0, 1, 0]), 10, t_last - 500))
    for j, t in enumerate((t_last - 200, t_last, t_last + 1000, t_last + 2000)):
        frames.append(_frame(11 + j, t, cups))
    data = b"".join(frames)
    cut = len(b"".join(frames[:11]))
    assert_same(data, [cut])
    assert_same(data, [cut, cut + 2 * frame_size(cups)])


def test_a_chunk_spanning_a_clock_wrap_of_big_steps_agrees():
    """Steps just under the 60 s limit: 100 frames span more than the 4295 s
    clock period inside one chunk."""
    cups = 2
    frames = [_frame(i, (59_000_000 * i) % TIME_WRAP_US, cups) for i in range(220)]
    data = b"".join(frames)
    size = frame_size(cups)
    assert_same(data, frame_aligned_cuts(len(data), size, 100))
    assert_same(data, frame_aligned_cuts(len(data), size, 100, extra=3))
    assert_same(data, frame_aligned_cuts(len(data), size, 3))


@pytest.mark.parametrize("foreign", [1, 3, 4])
def test_version_mismatch_is_cleared_by_a_fast_chunk(foreign):
    """Frames of another protocol version between our samples (they take no seq
    of ours): the version-1 frames after them clear version_mismatch and the
    count of foreign frames, whichever path decodes them."""
    cups = 3
    size = frame_size(cups)
    frames = [_frame(i, 1_000_000 + 1000 * i, cups) for i in range(40)]
    alien = [_with_version(_frame(100 + j, 5000 * j, cups), 2) for j in range(foreign)]
    data = b"".join(frames[:10] + alien + frames[10:20] + alien[:1] + frames[20:])
    start = len(b"".join(frames[:10] + alien))
    for per in (1, 5, 10):
        cuts = [start, *range(start + per * size, len(data), per * size)]
        assert_same(data, cuts)
        assert_same(data, [start + 3] + cuts[1:])
        d = Decoder("binary")
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            d.feed(data[a:b], 0.0)
        assert d.version_mismatch is None
