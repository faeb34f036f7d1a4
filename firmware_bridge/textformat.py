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
# The number of a field, for the fast path: printable, no space, comma or colon
# (float() then reads it, as parse() would). Possessive: matching is linear.
_NUM = rb"[!-+\--9;-~]++"
# Separators, the colon and line ends all become spaces before bytes.split().
_TO_SPACE = bytes.maketrans(b",\t\r\n:", b"     ")
#: Line shapes remembered by a TextLayout for its fast path.
_MAX_SHAPES = 16


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
        # The labels and cup columns of the latest accepted line, and the _Shape
        # of each label sequence seen, built when parse_run first needs it (the
        # columns of a label sequence, once accepted, never change).
        self._last: tuple[tuple[bytes | None, ...], list[int]] | None = None
        self._shapes: dict[tuple[bytes | None, ...], _Shape] = {}

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
        raw_labels: list[bytes | None] = []
        where: list[int] = []  # per cup field: its index in cols (~j: pending[j])
        for field in fields:
            label, sep, num = field.rpartition(b":")
            try:
                value = float(num)
            except ValueError:
                return None
            if not math.isfinite(value):
                value = math.nan  # "nan"/"inf" from a sketch: no reading
            raw_labels.append(label if sep else None)
            if not sep:
                where.append(len(cols))
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
                where.append(len(cols))
                cols.append(col)
                vals.append(value)
            elif key:
                where.append(~len(pending))
                pending.append((key, value))
                positional += 1
            else:
                return None
        # Other labels take the lowest column no named cup has taken, in order of
        # first appearance across lines; remembered only once the line is accepted.
        new_labels: dict[bytes, int] = {}
        direct = len(cols)
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
        labels = tuple(raw_labels)
        if self._last is None or self._last[0] != labels:
            self._last = (labels, [cols[i if i >= 0 else direct + ~i] for i in where])
        row = np.full(self.cups, np.nan)
        row[cols] = vals
        return t, row

    def parse_run(self, buf: bytes, pos: int, end: int
                  ) -> tuple[int, np.ndarray | None, np.ndarray | None] | None:
        """Whole lines of ``buf[pos:end]`` (``end`` just after a line end), from
        ``pos`` on, that have the shape of the latest accepted line: same labels
        in the same order, plain numbers, no blank line; at least two of them. Such a line parses
        exactly as :meth:`parse` would parse it (its labels are known, so its
        columns are too); all of them are read with a few calls for the run.

        Returns (end of the run, device times s or None when the lines carry no
        t/ms, (lines, cups) float64 kPa), or None when the line at ``pos`` does
        not have the shape (the caller parses it alone). Rows None: some number
        of the run is not one (or a time is NaN/inf); the caller parses the
        run's lines one by one."""
        if self._last is None:
            return None
        shape = self._shapes.get(self._last[0])
        if shape is None:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            shape = self._shapes[self._last[0]] = _Shape(*self._last)
        m = shape.run.match(buf, pos, end)
        if m is None:
            return None
        stop = m.end()
        first = buf.find(b"\n", pos, end)
        if first < 0 or stop <= first + 1:
            return None  # one line (or none): parse() costs less
        tokens = buf[pos:stop].translate(_TO_SPACE).split()
        k = shape.tokens
        n = len(tokens) // k
        t: np.ndarray | None = None
        try:
            if shape.flat is not None:  # every number in one pass
                nums = np.fromiter(map(float, tokens[shape.flat]), np.float64,
                                   n * len(shape.numbers)).reshape(n, len(shape.numbers))
                if shape.time is not None:
                    t = nums[:, shape.numbers.index(shape.time)]
                vals = nums[:, [shape.numbers.index(i) for i in shape.values]]
            else:
                if shape.time is not None:
                    t = np.fromiter(map(float, tokens[shape.time::k]), np.float64, n)
                vals = np.empty((n, len(shape.values)))
                for j, i in enumerate(shape.values):
                    vals[:, j] = np.fromiter(map(float, tokens[i::k]), np.float64, n)
        except ValueError:
            return stop, None, None
        if t is not None:
            if shape.ms:
                t = t / 1000.0
            if not np.isfinite(t).all():
                return stop, None, None  # t:nan / t:inf: error lines
        finite = np.isfinite(vals)
        if not finite.all():
            vals[~finite] = np.nan
        assert self.cups is not None
        if shape.in_order and len(shape.cols) == self.cups:
            return stop, t, np.ascontiguousarray(vals)  # cup1..cupN, the usual case
        rows = np.full((n, self.cups), np.nan)
        rows[:, shape.cols] = vals
        return stop, t, rows


class _Shape:
    """The fast path's view of an accepted line: a regex matching a run of lines
    with the same labels, and where the numbers are among the tokens of a line."""

    def __init__(self, labels: tuple[bytes | None, ...], cols: list[int]) -> None:
        self.labels = labels
        self.time: int | None = None
        self.ms = False
        self.values: list[int] = []   # token index of each cup value in a line
        parts: list[bytes] = []
        k = 0
        for label in labels:
            if label is not None:
                k += len((label + b":").translate(_TO_SPACE).split())
                parts.append(re.escape(label + b":") + _NUM)
                key = label.lower()
                if key in (b"t", b"ms"):
                    self.time, self.ms = k, key == b"ms"
                    k += 1
                    continue
            else:
                parts.append(_NUM)
            self.values.append(k)
            k += 1
        self.tokens = k
        # Token positions of the numbers in a line; when they are evenly spaced
        # (no labels, or one-token labels throughout) one slice takes them all.
        self.numbers = sorted(self.values + ([] if self.time is None else [self.time]))
        first, step = self.numbers[0], (self.numbers[1] - self.numbers[0]
                                        if len(self.numbers) > 1 else k)
        self.flat: slice | None = None
        if 0 <= first < step and k % step == 0 and self.numbers == list(range(first, k, step)):
            self.flat = slice(first, None, step)
        self.cols = cols  # column of each cup field, in field order
        self.in_order = cols == list(range(len(cols)))
        line = rb"[, \t]*+" + rb"[, \t]++".join(parts) + rb"[, \t]*+\r*+\n"
        self.run = re.compile(rb"(?:" + line + rb")*+")


def looks_like_text(lines: list[bytes]) -> bool:
    """True when these whole lines read as serial-plotter sample lines."""
    probe = TextLayout()
    return bool(lines) and all(probe.parse(line.rstrip(b"\r")) is not None for line in lines)
