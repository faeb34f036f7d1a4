"""Properties of the binary decoder over arbitrary input (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import (
    Command,
    Decoder,
    encode_ack,
    encode_command,
    encode_event,
    encode_nack,
    encode_samples,
)
from firmware_bridge.protocol import MsgType

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


# Steps between device frames for irregular streams: losses, duplicates, device
# resets, clock wraps, stamps that stand still or go back, long silences.
SEQ_STEPS = st.sampled_from([1, 1, 1, 1, 0, 2, 7, 40000])
TIME_STEPS = st.sampled_from([1000, 1000, 1000, 0, -500, -2_000_000, 70_000_000,
                              (1 << 31) + 5, -(1 << 31) + 5])


@st.composite
def device_frames(draw, min_size=1, max_size=8, irregular=False):
    """A stream of well-formed device frames, each with the item it must decode
    to: ("row", t, suction bytes, status bytes) or ("msg", message-as-tuple).
    Regular streams have consecutive seq and time 1 ms apart; ``irregular``
    ones have arbitrary steps (and items whose times mean nothing)."""
    kinds = draw(st.lists(st.sampled_from(["s1", "s8", "s8", "s8", "s3", "event", "ack",
                                           "nack", "cmd"]),
                          min_size=min_size, max_size=max_size))
    frames, items = [], []
    seq = draw(st.integers(0, 65535))
    t = t0 = draw(st.integers(0, (1 << 32) - 1))
    j = 0  # device frames so far: commands have their own seq and no device time
    for i, kind in enumerate(kinds):
        if kind != "cmd" and j:
            seq = (seq + (draw(SEQ_STEPS) if irregular else 1)) % 65536
            t = (t + (draw(TIME_STEPS) if irregular else 1000)) % (1 << 32)
        # The decoder's time origin is the first device frame's raw clock.
        t_s = (t0 + 1000 * j) / 1e6
        j += kind != "cmd"
        if kind[0] == "s":
            cups = int(kind[1:])
            raw = draw(st.lists(st.integers(-32768, 32767), min_size=cups, max_size=cups))
            kpa = np.array([np.nan if r == -32768 else r / 100 for r in raw])[None, :]
            status = np.array([draw(st.lists(st.integers(0, 255), min_size=cups,
                                             max_size=cups))], dtype=np.uint8)
            data, _ = encode_samples(np.array([t]), kpa, status, seq)
            suction = np.where(np.isnan(kpa), np.nan, kpa).astype(np.float32)
            items.append(("row", t_s, suction.tobytes(), status.tobytes()))
        elif kind == "event":
            code, cup, value = draw(st.integers(0, 255)), draw(st.integers(0, 16)), \
                draw(st.integers(-32768, 32767))
            data = encode_event(code, cup, value, seq, t)
            items.append(("msg", ("event", code, cup, value, t_s)))
        elif kind == "ack":
            payload = draw(st.binary(max_size=20))
            data = encode_ack(i, 0x12, seq, t, payload)
            items.append(("msg", ("ack", i, 0x12, payload)))
        elif kind == "nack":
            data = encode_nack(i, 0x17, 4, seq, t)
            items.append(("msg", ("nack", i, 0x17, 4)))
        else:
            cmd = Command(MsgType.SET_RATE, seq=draw(st.integers(0, 65535)),
                          rate_hz=draw(st.integers(0, 65535)))
            data = encode_command(cmd)
            items.append(("msg", ("cmd", cmd)))
        frames.append(data)
    return frames, items


def as_items(results) -> list:
    """Decoded output as the same kind of items, rows and messages each in order."""
    rows, msgs = [], []
    for res in results:
        for b in res.blocks:
            for k in range(b.n):
                rows.append(("row", float(b.t[k]), b.suction[k:k + 1].tobytes(),
                             b.status[k:k + 1].tobytes()))
        for m in res.messages:
            name = type(m).__name__
            if name == "DeviceEvent":
                msgs.append(("msg", ("event", m.code, m.cup, m.value, m.t)))
            elif name == "Ack":
                msgs.append(("msg", ("ack", m.seq, m.cmd, m.data)))
            elif name == "Nack":
                msgs.append(("msg", ("nack", m.seq, m.cmd, m.reason)))
            elif name == "Command":
                msgs.append(("msg", ("cmd", m)))
            else:
                msgs.append(("msg", (name,)))
    return rows, msgs


def split_items(items):
    return [i for i in items if i[0] == "row"], [i for i in items if i[0] == "msg"]


def feed_chunks(data: bytes, cuts: list[int], mode: str = "binary"):
    d = Decoder(mode)
    out = []
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        out.append(d.feed(data[a:b], host_time=0.0))
    assert d.internal_errors == 0
    return out, d


def normalised(results):
    """Everything a consumer sees, independent of how blocks were cut by chunks."""
    rows, msgs = as_items(results)
    gaps = []
    k = 0
    for res in results:
        for b in res.blocks:
            if b.gap_before or b.lost_before:
                gaps.append((k, b.gap_before, b.lost_before))
            k += b.n
    return rows, msgs, gaps


def stats_tuple(d: Decoder):
    s = d.stats
    return (s.bytes_in, s.frames_ok, s.samples, s.crc_errors, s.bytes_discarded,
            s.frames_lost, s.unknown_messages, d.buffered, d.version_mismatch)


no_sync = st.binary(max_size=40).map(lambda b: b.replace(b"\xa5", b"\x00"))


@SETTINGS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8),
       mode=st.sampled_from(["auto", "binary", "text"]))
def test_arbitrary_bytes_never_raise(data, cuts, mode):
    results, d = feed_chunks(data, cuts, mode)
    s = d.stats
    assert s.bytes_in == len(data)
    if d.mode == "binary":  # every byte is in a frame, discarded, or held back
        assert s.bytes_discarded + d.buffered <= len(data)


@SETTINGS
@given(stream=device_frames(), garbage=st.lists(no_sync, min_size=9, max_size=9),
       cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_frames_in_garbage_without_sync_bytes_are_all_recovered(stream, garbage, cuts):
    frames, items = stream
    data = b"".join(g + f for g, f in zip(garbage, frames, strict=False)) + garbage[-1]
    results, d = feed_chunks(data, cuts)
    assert as_items(results) == split_items(items)
    assert d.stats.crc_errors == 0 and d.stats.frames_ok == len(frames)
    assert d.stats.bytes_discarded == sum(map(len, garbage[:len(frames)])) + len(garbage[-1])
    assert d.buffered == 0


@SETTINGS
@given(stream=device_frames(), garbage=st.lists(st.binary(max_size=40), min_size=9,
                                                 max_size=9),
       cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_frames_in_any_garbage_are_recovered_in_order(stream, garbage, cuts):
    # Garbage may hold syncs and half frames; trailing padding lets any false
    # frame start that claims a long length be resolved.
    frames, items = stream
    data = b"".join(g + f for g, f in zip(garbage, frames, strict=False)) + bytes(300)
    results, _ = feed_chunks(data, cuts)
    got_rows, got_msgs = as_items(results)
    want_rows, want_msgs = split_items(items)

    def is_subsequence(want, got):
        it = iter(got)
        return all(any(w == g for g in it) for w in want)

    assert is_subsequence(want_rows, got_rows) and is_subsequence(want_msgs, got_msgs)


@SETTINGS
@given(stream=device_frames(min_size=2, max_size=2), pos=st.integers(0, 200),
       xor=st.integers(1, 255))
def test_single_byte_corruption_is_rejected_and_the_next_frame_recovered(stream, pos, xor):
    (first, second), (_, second_item) = stream
    bad = bytearray(first)
    pos %= len(bad)
    bad[pos] ^= xor
    results, d = feed_chunks(bytes(bad) + second + bytes(300), [])
    rows, msgs = as_items(results)
    assert rows + msgs == [second_item]
    assert d.stats.crc_errors + d.stats.bytes_discarded > 0
    assert d.stats.frames_ok == 1


@SETTINGS
@given(stream=st.one_of(device_frames(max_size=10), device_frames(max_size=10, irregular=True)),
       garbage=st.lists(st.one_of(st.just(b""), st.binary(max_size=30)), min_size=11,
                        max_size=11),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=2),
       cuts=st.lists(st.integers(0, 2000), min_size=1, max_size=10))
def test_chunk_boundaries_do_not_change_the_result(stream, garbage, flips, cuts):
    frames, _ = stream
    data = bytearray(b"".join(g + f for g, f in zip(garbage, frames, strict=False)) + garbage[-1])
    for pos, x in flips:
        if data:
            data[pos % len(data)] ^= x
    data = bytes(data)
    # Cutting at frame boundaries lets aligned chunks take the decoder's fast path.
    aligned = np.cumsum([len(x) for gf in zip(garbage, frames, strict=False) for x in gf]).tolist()
    outputs = [feed_chunks(data, c) for c in ([], cuts, aligned, list(range(len(data))))]
    assert all(normalised(out) == normalised(outputs[0][0]) for out, _ in outputs)
    assert all(stats_tuple(d) == stats_tuple(outputs[0][1]) for _, d in outputs)


def test_every_single_byte_corruption_of_a_frame_is_rejected():
    """Exhaustive for one small SAMPLE frame: all 17 positions x 255 errors."""
    first, _ = encode_samples(np.array([5000]), np.array([[22.5]]), np.array([[9]], np.uint8), 7)
    second = encode_event(4, 1, 0, 8, 6000)
    for pos in range(len(first)):
        for x in range(1, 256):
            bad = bytearray(first)
            bad[pos] ^= x
            d = Decoder("binary")
            res = d.feed(bytes(bad) + second + bytes(300), 0.0)
            assert not res.blocks, (pos, x)
            assert [(m.code, m.t) for m in res.messages] == [(4, 0.006)], (pos, x)
            assert d.stats.frames_ok == 1
            assert d.stats.bytes_discarded == len(first) + 300, (pos, x)
