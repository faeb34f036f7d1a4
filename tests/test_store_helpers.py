"""Synthetic streams shared by the store, recorder, replay and CLI tests (no tests here)."""

from __future__ import annotations

import numpy as np

from firmware_bridge.messages import SampleBlock


def wire_suction(rng: np.random.Generator, n: int, cups: int, level: float = 22.5,
                 noise: float = 0.05) -> np.ndarray:
    """(n, cups) float32 kPa at the wire's 0.01 kPa resolution, as the decoder makes it."""
    q = np.round((level + rng.normal(0, noise, (n, cups))) * 100).astype(np.int16)
    return q.astype(np.float32) / np.float32(100.0)


def wire_blocks(n_blocks: int = 20, size: int = 50, cups: int = 4, rate_hz: int = 1000,
                seed: int = 0, gaps_at: tuple[int, ...] = (7,), t0_us: int = 1_000_000,
                ) -> list[SampleBlock]:
    """Blocks as the decoder produces them: t = µs/1e6, wire-resolution suction with
    a few no-readings, varied status bits; ``gaps_at`` blocks start after a gap of
    10 lost samples."""
    rng = np.random.default_rng(seed)
    period = 1_000_000 // rate_hz
    blocks, us = [], t0_us
    for i in range(n_blocks):
        lost = 10 if i in gaps_at else 0
        us += lost * period
        t_us = us + period * np.arange(size, dtype=np.int64)
        us = int(t_us[-1]) + period
        s = wire_suction(rng, size, cups)
        s[rng.random((size, cups)) < 0.01] = np.nan
        st = rng.choice(np.array([8, 9, 10, 12, 40], np.uint8), (size, cups))
        blocks.append(SampleBlock(t_us / 1e6, s, st, 0.0, lost, bool(lost)))
    return blocks


def same_samples(a: list[SampleBlock], b: list[SampleBlock]) -> bool:
    """Bit-equal concatenated t, suction (NaN at the same places) and status."""
    if not a or not b:
        return len(a) == len(b)
    ta, tb = np.concatenate([x.t for x in a]), np.concatenate([x.t for x in b])
    sa, sb = np.concatenate([x.suction for x in a]), np.concatenate([x.suction for x in b])
    qa, qb = np.concatenate([x.status for x in a]), np.concatenate([x.status for x in b])
    if ta.shape != tb.shape or sa.shape != sb.shape:
        return False
    na, nb = np.isnan(sa), np.isnan(sb)
    return (np.array_equal(ta.view(np.uint64), tb.view(np.uint64))
            and np.array_equal(na, nb)
            and np.array_equal(sa.view(np.uint32)[~na], sb.view(np.uint32)[~nb])
            and np.array_equal(qa, qb) and qa.dtype == qb.dtype)


def gap_positions(blocks: list[SampleBlock]) -> list[tuple[float, int]]:
    """(device time, lost frames) of every block that starts after a gap."""
    return [(float(b.t[0]), b.lost_before) for b in blocks if b.gap_before]
