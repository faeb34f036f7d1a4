"""Strict JSON for exports and reports: NaN and infinity become null."""

from __future__ import annotations

import math
from typing import Any


def strict_json(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None, dict keys as strings,
    tuples as lists (strict JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): strict_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [strict_json(x) for x in v]
    return v
