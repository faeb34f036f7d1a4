"""Pressure units for display and input. cupmon works in kPa of suction inside;
other units exist only at the edges (labels, messages, settings typed by a user).

Factors from domain.md: 1 kPa = 7.50062 mmHg = 0.295300 inHg = 10.1972 cmH2O.
"""

from __future__ import annotations

import math
import re

import numpy as np

#: Display units per kPa.
PER_KPA: dict[str, float] = {
    "kPa": 1.0,
    "mmHg": 7.50062,
    "inHg": 0.295300,
    "cmH2O": 10.1972,
}

#: Decimals shown per unit: each step is about 0.1 kPa or finer, close to what
#: a 20-25 kPa cup reading can honestly resolve (0.1 kPa = 0.75 mmHg =
#: 0.03 inHg = 1.0 cmH2O).
DECIMALS: dict[str, int] = {"kPa": 1, "mmHg": 0, "inHg": 2, "cmH2O": 0}

_ALIASES = {
    "kpa": "kPa",
    "mmhg": "mmHg", "torr": "mmHg",
    "inhg": "inHg", "in hg": "inHg", "\"hg": "inHg",
    "cmh2o": "cmH2O", "cm h2o": "cmH2O", "cmwc": "cmH2O", "cmh₂o": "cmH2O",
}

#: Shown in place of a number when there is no (live) reading.
NO_VALUE = "--"


def normalize_unit(name: str) -> str:
    """Canonical spelling of a unit name ("mmhg" -> "mmHg"); ValueError if unknown."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(f"unknown pressure unit {name!r} (use one of {', '.join(PER_KPA)})")


def from_kpa(kpa: float | np.ndarray, unit: str) -> float | np.ndarray:
    """Convert suction in kPa to ``unit`` (scalar or array, NaN stays NaN)."""
    return kpa * PER_KPA[normalize_unit(unit)]


def to_kpa(value: float | np.ndarray, unit: str) -> float | np.ndarray:
    """Convert a value in ``unit`` to kPa."""
    return value / PER_KPA[normalize_unit(unit)]


def format_pressure(kpa: float | None, unit: str = "kPa", *, decimals: int | None = None,
                    with_unit: bool = True) -> str:
    """``22.46`` kPa -> ``"22.5 kPa"`` / ``"168 mmHg"``; None or NaN -> ``"--"``."""
    u = normalize_unit(unit)
    if kpa is None or not math.isfinite(kpa):
        text = NO_VALUE
    else:
        d = DECIMALS[u] if decimals is None else decimals
        value = float(kpa) * PER_KPA[u]
        text = f"{value:.{d}f}"
        if text.startswith("-") and float(text) == 0.0:
            text = text[1:]  # never show "-0"
    return f"{text} {u}" if with_unit else text


_NUMBER_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s].*)?$")


def parse_pressure(text: str | float | int, default_unit: str = "kPa") -> float:
    """``"150 mmHg"`` -> 19.998 kPa; a bare number is in ``default_unit``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(to_kpa(float(text), default_unit))
    m = _NUMBER_UNIT.match(str(text))
    if not m:
        raise ValueError(f"not a pressure: {text!r} (e.g. 22.5, 22.5 kPa, 170 mmHg)")
    unit = m.group(2).strip() if m.group(2) else default_unit
    return float(to_kpa(float(m.group(1)), unit))
