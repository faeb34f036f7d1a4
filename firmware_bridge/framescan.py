"""Find the frames in a buffer of bytes, vectorised (docs/protocol.md section 1).

The result is exactly what a byte-by-byte decoder would find: from the start of
the buffer, take the next ``A5 5A``; if the frame it starts is complete and its
CRC is good, accept it and continue after it; otherwise skip one byte. numpy
does the per-frame work (finding syncs, gathering frames into a 2-D array, CRC
of all of them at once); the Python loop runs once per *damage site*, not once
per frame, because runs of back-to-back good frames are taken in one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .frames import crc16_rows
from .protocol import CRC_SIZE, HEADER_SIZE, VERSION

_OVERHEAD = HEADER_SIZE + CRC_SIZE
_INCOMPLETE, _GOOD, _FOREIGN, _CRC_ERROR, _NOISE = 0, 1, 2, 3, 4
_EMPTY = np.zeros(0, dtype=np.int64)


def _nonzero(mask: np.ndarray) -> np.ndarray:
    return np.nonzero(mask)[0]


def windows(arr: np.ndarray, size: int) -> np.ndarray:
    """(n - size + 1, size) read-only view: row i is ``arr[i:i + size]``. Indexing
    its rows gathers whole frames without building an index array."""
    return np.ndarray((max(0, arr.size - size + 1), size), np.uint8, arr, 0, (1, 1))


@dataclass
class Scan:
    """Frames found in a buffer.

    starts: (m,) int64 offsets of accepted version-1 frames, in stream order.
    lengths: (m,) int64 payload lengths L of those frames.
    stop: bytes before ``stop`` are decided (frames or garbage); keep the rest
        for the next chunk (an incomplete frame or a trailing ``A5``).
    discarded: bytes before ``stop`` not in an accepted frame.
    crc_errors: version-1 frames that were complete but failed the CRC.
    foreign: (offset, version) of frames with a good CRC but another version.
    rows: payload length -> (starts (k,), rows (k, 13+L) uint8) of every complete
        candidate of that length, so callers can reuse the gathered bytes.
    """

    starts: np.ndarray = field(default_factory=lambda: _EMPTY)
    lengths: np.ndarray = field(default_factory=lambda: _EMPTY)
    stop: int = 0
    discarded: int = 0
    crc_errors: int = 0
    foreign: list[tuple[int, int]] = field(default_factory=list)
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def scan_frames(arr: np.ndarray) -> Scan:
    """Scan a (n,) uint8 buffer; see :class:`Scan`. Never raises on any content."""
    n = int(arr.size)
    if n < 2:
        stop = 0 if n == 1 and arr[0] == 0xA5 else n
        return Scan(stop=stop, discarded=stop)
    cand = _nonzero((arr[:-1] == 0xA5) & (arr[1:] == 0x5A)).astype(np.int64)
    status = np.full(cand.size, _INCOMPLETE, dtype=np.int8)
    ends = np.zeros(cand.size, dtype=np.int64)
    rows_by_len: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # Candidates whose header is here: their length byte tells where they end.
    has_len = _nonzero(cand + 5 <= n)
    c = cand[has_len]
    ends[has_len] = c + _OVERHEAD + arr[c + 4]
    full = has_len[ends[has_len] <= n]
    if full.size:
        c = cand[full]
        lengths = ends[full] - c - _OVERHEAD
        ok = np.zeros(full.size, dtype=bool)
        distinct = set(lengths.tolist())
        for length in sorted(distinct):
            sel = np.nonzero(lengths == length)[0] if len(distinct) > 1 else slice(None)
            starts = c[sel]
            rows = windows(arr, length + _OVERHEAD)[starts]
            crc = crc16_rows(rows[:, 2:HEADER_SIZE + length])
            stored = rows[:, -2].astype(np.uint16) | (rows[:, -1].astype(np.uint16) << 8)
            ok[sel] = crc == stored
            rows_by_len[length] = (starts, rows)
        v1 = arr[c + 2] == VERSION
        status[full] = np.where(ok, np.where(v1, _GOOD, _FOREIGN),
                                np.where(v1, _CRC_ERROR, _NOISE))

    good = _nonzero(status == _GOOD)
    gstarts = cand[good]
    gends = ends[good]
    # A run of good frames ends where the next good frame does not start
    # exactly at the end of this one.
    breaks = _nonzero(gends[:-1] != gstarts[1:])

    runs: list[tuple[int, int]] = []
    foreign: list[tuple[int, int]] = []
    crc_errors = 0
    pos = 0
    i = 0
    stop = -1
    cand_list = cand.tolist()
    status_list = status.tolist()
    ncand = len(cand_list)
    while i < ncand:
        start = cand_list[i]
        if start < pos:
            i = int(np.searchsorted(cand, pos))
            continue
        st = status_list[i]
        if st == _INCOMPLETE:
            stop = start
            break
        if st == _GOOD:
            k = int(np.searchsorted(gstarts, start))
            b = int(np.searchsorted(breaks, k))
            last = int(breaks[b]) if b < breaks.size else good.size - 1
            runs.append((k, last + 1))
            pos = int(gends[last])
            i = int(np.searchsorted(cand, pos))
            continue
        if st == _FOREIGN:
            foreign.append((start, int(arr[start + 2])))
            pos = int(ends[i])
        else:
            crc_errors += st == _CRC_ERROR
            pos = start + 1
        i += 1
    if stop < 0:
        # Keep a trailing A5: it may be the first half of the next sync.
        stop = n - 1 if arr[n - 1] == 0xA5 and pos <= n - 1 else n

    if runs:
        sel = np.concatenate([np.arange(a, b) for a, b in runs]) if len(runs) > 1 \
            else np.arange(*runs[0])
        starts_out = gstarts[sel]
        lengths_out = gends[sel] - starts_out - _OVERHEAD
    else:
        starts_out, lengths_out = _EMPTY, _EMPTY
    accepted = int(lengths_out.sum()) + _OVERHEAD * int(starts_out.size)
    return Scan(starts=starts_out, lengths=lengths_out, stop=stop,
                discarded=stop - accepted, crc_errors=crc_errors, foreign=foreign,
                rows=rows_by_len)
