"""The vectorised text path (runs of like-shaped lines parsed in one go,
TextLayout.parse_run) gives exactly what the line-by-line path gives: same
blocks, times, values, gaps, counters, whatever the chunking (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import Decoder, encode_text_samples
from firmware_bridge.textformat import TextLayout

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEPS = st.sampled_from([b" ", b" ", b",", b"\t", b", ", b" \t ", b",,"])
ENDS = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r\r\n", b" \n", b",\r\n"])
NUMBERS = st.one_of(
    st.floats(-50, 120, allow_nan=False).map(lambda v: b"%.2f" % v),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: repr(v).encode()),
    st.integers(-999, 99999).map(lambda v: b"%d" % v),
    st.sampled_from([b"nan", b"NaN", b"-nan", b"inf", b"-inf", b"Infinity", b"1e3", b"-2.5E-1",
                     b".5", b"5.", b"+1", b"1_0", b"0007.250", b"1e400"]),
)
BAD_NUMBERS = st.sampled_from([b"", b"x", b"1.2.3", b"--1", b"1e", b"0x10", b"_1", b"nanx"])
# Cup fields: unlabelled, cupN / cN (any case), other labels.
CUP_LABELS = st.sampled_from([None, None, b"cup1", b"cup2", b"c3", b"CUP4", b"p", b"q", b"a:b",
                              b"Flow", b"cup2"])
TIME_LABELS = st.sampled_from([None, b"t", b"ms", b"T", b"MS"])


@st.composite
def shapes(draw):
    """A line shape: (time label or None, labels of the cup fields, where the time goes)."""
    cups = draw(st.lists(CUP_LABELS, min_size=1, max_size=6))
    return draw(TIME_LABELS), cups, draw(st.integers(0, len(cups)))


def field(label: bytes | None, num: bytes) -> bytes:
    return num if label is None else label + b":" + num


@st.composite
def sample_line(draw, shape, t: float):
    time_label, cups, at = shape
    fields = [field(lab, draw(NUMBERS)) for lab in cups]
    if time_label is not None:
        value = t * 1000 if time_label.lower() == b"ms" else t
        fields.insert(at, time_label + b":" + (b"%.3f" % value))
    out = draw(st.sampled_from([b"", b" ", b",\t"]))
    for i, f in enumerate(fields):
        out += (draw(SEPS) if i else b"") + f
    return out + draw(st.sampled_from([b"", b" ", b","])) + draw(ENDS)


GARBAGE = st.one_of(
    st.sampled_from([b"Hello from the sketch\n", b"\n", b"\r\n", b" , \t\n", b"\r \n",
                     b"t:nan 1 2\n", b"t:inf 1\n", b"ms:-inf cup1:2\n", b"t:1 t:2 3\n",
                     b"cup1:1 cup1:2\n", b"cup17:1\n", b"c0:1\n", b":5\n", b"1 2 3 4 5 6 7 8 9\n",
                     b"\xff\xfe 1 2\n", b"1\x002\n", b"t:1\n", b"cup1:\n"]),
    st.binary(max_size=40).map(lambda b: b + b"\n"),
    st.text(alphabet=" ,\t:.-+0123456789tmscupnaif\r", max_size=40).map(
        lambda s: s.encode() + b"\n"),
    st.integers(4000, 9000).map(lambda n: b"1" * n),               # overlong, no line end yet
    st.integers(200, 3000).map(lambda n: b"t:1.5 " + b"0" * n + b"1.25 2\n"),  # long whole line
)


@st.composite
def streams(draw, garbage=True):
    """(text, chunk sizes, host time steps, reset positions) of a stream mostly of
    one shape, with shape changes, bad numbers, device clock jumps and garbage."""
    shape = draw(shapes())
    t = draw(st.floats(0, 1000, allow_nan=False))
    parts = [draw(st.sampled_from([b"", b"partial 1 2", b"t:9 cup1:1\n"]))]
    for _ in range(draw(st.integers(1, 60))):
        r = draw(st.integers(0, 99))
        if garbage and r < 8:
            parts.append(draw(GARBAGE))
            continue
        if garbage and r < 11:
            shape = draw(shapes())
        if r == 11:
            t -= draw(st.sampled_from([0.0, 0.0005, 2.0]))  # stands still or goes back
        elif garbage and r == 12:
            time_label, cups, at = shape
            if cups:
                cups = list(cups)
                cups[draw(st.integers(0, len(cups) - 1))] = None
                line = b" ".join(field(lab, draw(BAD_NUMBERS)) for lab in cups)
                parts.append(line + b"\n")
                continue
        t += draw(st.sampled_from([0.001, 0.001, 0.001, 0.01, 70.0]))
        parts.append(draw(sample_line(shape, t)))
    text = b"".join(parts)
    sizes = draw(st.lists(st.integers(1, 700), min_size=1, max_size=40))
    steps = draw(st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.05, 1.0, -0.01]),
                          min_size=1, max_size=40))
    resets = set(draw(st.lists(st.integers(0, 40), max_size=2)))
    return text, sizes, steps, resets


def run(text: bytes, sizes: list[int], steps: list[float], resets: set[int], fast: bool,
        mode: str = "text"):
    """Feed ``text`` in chunks of the given sizes (cycled); returns everything observable."""
    d = Decoder(mode)
    d._text_fast = fast
    out = []
    host = 100.0
    pos = i = 0
    while pos < len(text):
        n = sizes[i % len(sizes)]
        host += steps[i % len(steps)]
        if i in resets:
            d.reset()
        res = d.feed(text[pos:pos + n], host)
        out.append(("feed", d.text_host_timed, d.buffered, d.mode, d.stats.copy()))
        for b in res.blocks:
            out.append((b.t.tolist(), b.suction.dtype.str, b.suction.shape,
                        np.where(np.isnan(b.suction), -12345.0, b.suction).tolist(),
                        b.status.tolist(), b.status.dtype.str, b.host_time, b.lost_before,
                        b.gap_before))
            assert b.t.dtype == np.float64 and (np.diff(b.t) > 0).all()
        pos += n
        i += 1
    assert d.internal_errors == 0
    return out


def same(text, sizes, steps, resets, mode="text"):
    fast = run(text, sizes, steps, resets, True, mode)
    slow = run(text, sizes, steps, resets, False, mode)
    assert fast == slow


@SETTINGS
@given(streams(garbage=False))
def test_well_formed_streams_decode_alike(stream):
    same(*stream)


@SETTINGS
@given(streams())
def test_streams_with_garbage_decode_alike(stream):
    same(*stream)


@settings(SETTINGS, max_examples=30)
@given(streams())
def test_auto_mode_decodes_alike(stream):
    same(*stream, mode="auto")


@SETTINGS
@given(streams(), st.integers(1, 5))
def test_whole_stream_in_one_chunk_or_tiny_chunks(stream, tiny):
    text, _, steps, _ = stream
    same(text, [len(text) + 1], steps, set())
    same(text, [tiny], steps, set())


@SETTINGS
@given(shapes(), st.data())
def test_parse_run_equals_parse_line_by_line(shape, data):
    lines = [data.draw(sample_line(shape, 1.0 + i)) for i in range(data.draw(st.integers(1, 30)))]
    buf = b"".join(lines)
    one, run_layout = TextLayout(), TextLayout()
    expect = [one.parse(ln.rstrip(b"\n").rstrip(b"\r")) for ln in lines]
    if expect[0] is None:
        return  # not a sample line: there is no shape to follow
    assert run_layout.parse(lines[0].rstrip(b"\n").rstrip(b"\r")) is not None
    if len(lines) <= 2:  # a run of one line is left to parse()
        assert run_layout.parse_run(buf, len(lines[0]), len(buf)) is None
        return
    got = run_layout.parse_run(buf, len(lines[0]), len(buf))
    assert got is not None
    stop, t, rows = got
    if rows is None:  # some number is no float, or a time is NaN/inf: line by line
        assert any(e is None for e in expect[1:]) and stop == len(buf)
        return
    assert stop == len(buf) and all(e is not None for e in expect)
    assert rows.shape == (len(lines) - 1, one.cups)
    np.testing.assert_array_equal(rows, np.array([e[1] for e in expect[1:]]))
    if t is None:
        assert all(e[0] is None for e in expect)
    else:
        assert t.tolist() == [e[0] for e in expect[1:]]


def test_a_run_stops_at_a_line_of_another_shape():
    layout = TextLayout()
    assert layout.parse(b"t:1 cup1:2 cup2:3") is not None
    buf = b"t:2 cup1:2 cup2:3\r\nt:3,cup1:4,,cup2:5\nt:4 cup2:1 cup1:2\nt:5 cup1:2 cup2:3\n"
    stop, t, rows = layout.parse_run(buf, 0, len(buf))
    assert buf[:stop].count(b"\n") == 2 and t.tolist() == [2.0, 3.0]
    assert rows.tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert layout.parse_run(buf, stop, len(buf)) is None  # cup2 before cup1: parse() it
    assert layout.parse(b"t:4 cup2:1 cup1:2") is not None  # the shape of that line now
    assert layout.parse_run(buf, stop, len(buf)) is None  # but a run of one line: parse() it
    assert layout.parse_run(buf + buf, stop, 2 * len(buf)) is None  # next line is cup1 first


def test_fast_path_reads_the_benchmark_stream_like_the_slow_one():
    rng = np.random.default_rng(3)
    t = np.cumsum(np.full(800, 0.001))
    suction = rng.normal(20, 5, (800, 8))
    suction[rng.random(suction.shape) < 0.01] = np.nan
    for with_time in (True, False):
        text = encode_text_samples(t, suction, with_time=with_time)
        for chunk in (7, 97, 4096, 1 << 20):
            same(text, [chunk], [0.004], set())


@pytest.mark.parametrize("cups", [1, 16])
@pytest.mark.parametrize("pad", [3000, 5000])
def test_very_long_lines(cups, pad):
    """Whole lines of thousands of bytes; beyond 4096 bytes a line that a chunk
    (or a 64 KiB slice) cuts is dropped, by both paths alike."""
    zeros = b"0" * (pad // cups)
    line = b"t:%d " + b" ".join(b"cup%d:" % (c + 1) + zeros + b"1.5" for c in range(cups)) + b"\n"
    text = b"x\n" + b"".join(line % i for i in range(1, 6))
    for chunk in (1000, 4096, 1 << 20):
        same(text, [chunk], [0.01], set())
    if len(line) < 4096:
        d = Decoder("text")
        res = d.feed(text, 1.0)
        assert sum(b.n for b in res.blocks) == 5 and d.stats.text_errors == 0


@pytest.mark.parametrize("lines", [
    [b"t:1 5 6", b"t:2 7 8", b"t:3 9 10"],           # labelled time, unlabelled cups
    [b"5 6 ms:1", b"7 8 ms:2", b"9 10 ms:3"],         # time last
    [b"cup2:5 cup1:6", b"cup2:7 cup1:8", b"cup2:9 cup1:nan"],
    [b"a:b:5 t:1", b"a:b:6 t:2", b"a:b:7 t:3"],       # a label with a colon in it
    [b"5", b"6", b"7"],
    [b"c:5", b"c:6", b"c:-inf"],
])
def test_parse_run_on_mixed_label_layouts(lines):
    one, fast = TextLayout(), TextLayout()
    expect = [one.parse(ln) for ln in lines]
    assert fast.parse(lines[0]) is not None
    buf = b"\n".join(lines[1:]) + b"\n"
    stop, t, rows = fast.parse_run(buf, 0, len(buf))
    assert stop == len(buf)
    np.testing.assert_array_equal(rows, np.array([e[1] for e in expect[1:]]))
    assert (t is None and expect[1][0] is None) or t.tolist() == [e[0] for e in expect[1:]]
