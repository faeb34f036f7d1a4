"""Names of alarm conditions, shared by the simulator's ground truth and the
monitor's checker (the simulator must not import the monitor)."""

from __future__ import annotations

OVER_SUCTION = "over_suction"
UNDER_SUCTION = "under_suction"
DETACHED = "detached"
LEAK = "leak"
BLOCKAGE = "blockage"
SIGNAL_LOSS = "signal_loss"
SENSOR_FAULT = "sensor_fault"
INTERLOCK = "interlock"
DWELL_EXCEEDED = "dwell_exceeded"

CONDITIONS: tuple[str, ...] = (
    OVER_SUCTION, UNDER_SUCTION, DETACHED, LEAK, BLOCKAGE,
    SIGNAL_LOSS, SENSOR_FAULT, INTERLOCK, DWELL_EXCEEDED,
)
#: Conditions that concern the whole device rather than one cup (cup = None).
DEVICE_WIDE: frozenset[str] = frozenset({SIGNAL_LOSS})
