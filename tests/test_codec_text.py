"""Serial-plotter text lines (docs/protocol.md sections 6 and 7.6)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.codec import Decoder, encode_text_samples


def feed(text: bytes, d: Decoder | None = None, host: float = 0.0, mode: str = "text"):
    d = d or Decoder(mode)
    res = d.feed(text, host)
    assert d.internal_errors == 0
    return res, d


def rows(blocks) -> list[list[float]]:
    return [r.tolist() for b in blocks for r in b.suction]


def times(blocks) -> list[float]:
    return [t for b in blocks for t in b.t.tolist()]


def test_worked_example_of_section_7_6():
    text = (b"p:21.97 cup2:21.9\n"
            b"t:12.345 cup1:22.10 cup2:21.98\r\n"
            b"t:12.355,cup1:22.12,,cup2:21.99\n"
            b"Hello from the sketch\n"
            b"ms:12365\t22.15\tnan\n")
    res, d = feed(text)
    assert times(res.blocks) == [12.345, 12.355, 12.365]
    got = rows(res.blocks)
    assert got[:2] == [[np.float32(22.10), np.float32(21.98)], [np.float32(22.12),
                                                               np.float32(21.99)]]
    assert got[2][0] == np.float32(22.15) and np.isnan(got[2][1])
    assert [(b.n, b.gap_before) for b in res.blocks] == [(2, False), (1, True)]
    assert (d.stats.text_lines, d.stats.text_errors, d.stats.samples) == (4, 1, 3)
    assert d.stats.bytes_discarded == len(b"p:21.97 cup2:21.9\n")
    assert not d.text_host_timed
    assert all(b.status.shape == b.suction.shape and not b.status.any() for b in res.blocks)


def test_first_line_is_discarded_even_when_whole():
    res, _ = feed(b"t:1 5\nt:2 6\n")
    assert times(res.blocks) == [2.0] and rows(res.blocks) == [[6.0]]


def test_partial_lines_across_chunks():
    d = Decoder("text")
    out = []
    data = b"junk\nt:1.0 1.5 2.5\nt:1.1 1.6 2.6\nt:1.2 1.7 2.7\n"
    for i in range(len(data)):
        out += feed(data[i:i + 1], d)[0].blocks
    assert times(out) == [1.0, 1.1, 1.2]
    assert rows(out) == [[1.5, 2.5], [1.600000023841858, 2.5999999046325684],
                         [1.7000000476837158, 2.700000047683716]]
    assert [b.gap_before for b in out] == [False, False, False]


def test_cup_labels_place_values_and_other_labels_go_in_order_of_appearance():
    res, _ = feed(b"x\ncup2:2 c1:1 cup3:3\ncup3:6,cup1:4,cup2:5\n")
    assert rows(res.blocks) == [[1, 2, 3], [4, 5, 6]]
    res, _ = feed(b"x\nleft:1 right:2\nright:4 left:3\n")
    assert rows(res.blocks) == [[1, 2], [3, 4]]


def test_cup_count_is_fixed_by_the_first_whole_line():
    res, d = feed(b"x\n1 2 3\n1 2\n4 5 6\n1 2 3 4\n7 8 9\n")
    assert rows(res.blocks) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert d.stats.text_errors == 2
    assert [b.gap_before for b in res.blocks] == [False, True, True]


@pytest.mark.parametrize("line", [
    b"abc", b"1 2 x", b"t:1 t:2 3", b"t:nan 3", b":5", b"cup0:1", b"cup17:1", b"1 \x01 2",
    b"\xa5\x5a 1", b"t:1", b"cup1:1 cup1:2",
])
def test_lines_that_do_not_parse_are_counted(line):
    res, d = feed(b"x\n" + line + b"\n5\n")
    assert d.stats.text_errors == 1 and rows(res.blocks) == [[5.0]]


def test_first_good_line_after_garbage_is_not_a_gap():
    res, d = feed(b"x\nBooting...\nready\n1 2\n3 4\n")
    assert [b.gap_before for b in res.blocks] == [False]
    assert d.stats.text_errors == 2


def test_empty_lines_are_ignored():
    res, d = feed(b"x\n\n1\r\n\r\n , \n2\n")
    assert rows(res.blocks) == [[1.0], [2.0]] and d.stats.text_errors == 0
    assert d.stats.text_lines == 2


def test_lines_without_time_are_spread_over_the_host_interval():
    d = Decoder("text")
    feed(b"x\n1\n", d, host=10.0)
    res, _ = feed(b"2\n3\n4\n5\n", d, host=10.4)
    assert d.text_host_timed
    np.testing.assert_allclose(times(res.blocks), [10.1, 10.2, 10.3, 10.4])


def test_host_time_that_stands_still_still_gives_increasing_t():
    d = Decoder("text")
    res, _ = feed(b"x\n1\n2\n3\n", d, host=5.0)
    res2, _ = feed(b"4\n", d, host=5.0)
    t = times(res.blocks + res2.blocks)
    assert np.all(np.diff(t) > 0) and t[0] == 5.0


def test_device_time_going_back_keeps_t_monotonic():
    # An Arduino resets when the port opens: millis() restarts.
    d = Decoder("text")
    feed(b"x\nms:5000 1\nms:5010 2\n", d, host=1.0)
    res, _ = feed(b"ms:10 3\nms:20 4\n", d, host=3.0)
    assert [b.gap_before for b in res.blocks] == [True]
    np.testing.assert_allclose(times(res.blocks), [7.01, 7.02])


def test_overlong_line_is_dropped():
    d = Decoder("text")
    feed(b"x\n1\n", d)
    feed(b"9" * 5000, d)
    assert d.buffered == 0 and d.stats.text_errors == 1
    res, _ = feed(b"\n2\n", d)
    # The rest of the long line ends at the next newline: empty here, skipped.
    assert rows(res.blocks) == [[2.0]] and res.blocks[0].gap_before


def test_reset_relearns_the_layout_and_skips_the_partial_line():
    d = Decoder("text")
    feed(b"x\n1 2\n3 4\n5 6", d, host=1.0)
    d.reset()
    assert d.stats.bytes_discarded == len(b"x\n") + len(b"5 6")
    res, _ = feed(b"art\n7 8 9\n", d, host=2.0)
    assert rows(res.blocks) == [[7, 8, 9]] and res.blocks[0].gap_before


def test_encode_text_samples_round_trips():
    t = np.array([12.345, 12.355])
    suction = np.array([[22.1, 21.98], [np.nan, 0.0]])
    text = encode_text_samples(t, suction)
    assert text == b"t:12.345 cup1:22.10 cup2:21.98\nt:12.355 cup1:nan cup2:0.00\n"
    assert encode_text_samples(t, suction, with_time=False).startswith(b"cup1:22.10 cup2:21.98\n")
    res, _ = feed(b"\n" + text)
    assert times(res.blocks) == [12.345, 12.355]
    np.testing.assert_array_equal(np.concatenate([b.suction for b in res.blocks]),
                                  suction.astype(np.float32))


def test_text_is_never_decoded_in_binary_mode():
    res, d = feed(b"x\n1 2\n3 4\n", mode="binary")
    assert not res.blocks and d.stats.text_lines == 0
    assert d.stats.bytes_discarded == len(b"x\n1 2\n3 4\n")
