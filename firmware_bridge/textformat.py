"""Text lines in the Arduino serial-plotter convention (docs/protocol.md section 6).

``t:12.345 cup1:22.10 cup2:21.98`` - fields split on runs of commas, spaces and
tabs; a field is ``number`` or ``label:number``. Labels ``t`` (s) and ``ms``
give the device time; ``cupN`` / ``cN`` name cup N; other labels are cups in
order of first appearance; unlabelled numbers are cups in order.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .protocol import MAX_CUPS

_SPLIT = re.compile(rb"[, \t]+")
_CUP_LABEL = re.compile(rb"(?:cup|c)(\d{1,2})", re.IGNORECASE)
# Printable ASCII plus tab: anything else in a line means it is not text.
_NOT_TEXT = re.compile(rb"[^\t\x20-\x7e]")


def encode_text_samples(t_s: np.ndarray, suction_kpa: np.ndarray, with_time: bool = True) -> bytes:
    """Serial-plotter lines, one per sample: ``t:12.345 cup1:22.10 cup2:21.98\\n``.

    t_s: (n,) device time, s (3 decimals). suction_kpa: (n, cups) kPa (2
    decimals; NaN is written ``nan``). ``with_time=False`` leaves out ``t:``.
    """
    suction = np.asarray(suction_kpa, dtype=np.float64)
    if suction.ndim != 2:
        raise ValueError(f"suction must be (n, cups), got shape {suction.shape}")
    n, cups = suction.shape
    fmt = " ".join(f"cup{i + 1}:%.2f" for i in range(cups))
    if with_time:
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        if t.shape[0] != n:
            raise ValueError(f"t_s has {t.shape[0]} values for {n} samples")
        fmt = "t:%.3f " + fmt
        rows = np.column_stack([t, suction])
    else:
        rows = suction
    fmt += "\n"
    return "".join(fmt % tuple(row) for row in rows.tolist()).encode("ascii")


class TextLayout:
    """Which column each cup field of a line goes to, learnt from the first
    line that parses and then fixed (the cup count must not change)."""

    def __init__(self) -> None:
        self.cups: int | None = None
        self.columns: frozenset[int] | None = None
        self._labels: dict[bytes, int] = {}

    def parse(self, line: bytes) -> tuple[float | None, np.ndarray] | None:
        """One line (no line end) -> (device time s or None, (cups,) float kPa),
        or None when the line is not a sample line of this layout."""
        if _NOT_TEXT.search(line):
            return None
        fields = [f for f in _SPLIT.split(line) if f]
        if not fields:
            return None
        t: float | None = None
        cols: list[int] = []
        vals: list[float] = []
        pending: list[tuple[bytes, float]] = []  # other labels, placed after cupN
        explicit: set[int] = set()
        positional = 0
        for field in fields:
            label, sep, num = field.rpartition(b":")
            try:
                value = float(num)
            except ValueError:
                return None
            if not math.isfinite(value):
                value = math.nan  # "nan"/"inf" from a sketch: no reading
            if not sep:
                cols.append(positional)
                vals.append(value)
                positional += 1
                continue
            key = label.lower()
            if key == b"t" or key == b"ms":
                if t is not None or math.isnan(value):
                    return None
                t = value if key == b"t" else value / 1000.0
                continue
            m = _CUP_LABEL.fullmatch(key)
            if m:
                col = int(m.group(1)) - 1
                explicit.add(col)
                cols.append(col)
                vals.append(value)
            elif key:
                pending.append((key, value))
                positional += 1
            else:
                return None
        # Other labels take the lowest column no named cup has taken, in order of
        # first appearance across lines; remembered only once the line is accepted.
        new_labels: dict[bytes, int] = {}
        taken = explicit | set(self._labels.values())
        for key, value in pending:
            col = self._labels.get(key, new_labels.get(key))
            if col is None:
                col = next(c for c in range(MAX_CUPS + len(taken) + 1) if c not in taken)
                new_labels[key] = col
                taken.add(col)
            cols.append(col)
            vals.append(value)
        colset = frozenset(cols)
        if not cols or len(colset) != len(cols) or max(cols) >= MAX_CUPS or min(cols) < 0:
            return None
        if self.columns is None:
            self.columns = colset
            self.cups = max(cols) + 1
        elif colset != self.columns:
            return None
        self._labels.update(new_labels)
        row = np.full(self.cups, np.nan)
        row[cols] = vals
        return t, row


def looks_like_text(lines: list[bytes]) -> bool:
    """True when these whole lines read as serial-plotter sample lines."""
    probe = TextLayout()
    return bool(lines) and all(probe.parse(line.rstrip(b"\r")) is not None for line in lines)
