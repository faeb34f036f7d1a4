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

# --- Shared definitions --------------------------------------------------------
# The simulator's ground truth marks a condition as starting at the moment the
# *true* signal meets these definitions; the monitor's defaults use the same
# numbers, so detection delay can be scored against truth. The monitor may be
# configured differently; the reasons for each default are in docs/alarms.md.

BAND_LOW_KPA = 20.0          #: default target band, suction kPa
BAND_HIGH_KPA = 25.0
OVER_MARGIN_KPA = 1.0        #: over_suction: suction > band high + this
UNDER_MARGIN_KPA = 1.0       #: under_suction: suction < band low - this (after grace)
HARD_LIMIT_KPA = 30.0        #: device interlock vents a cup above this
DETACHED_KPA = 5.0           #: detached: a regulating cup's suction falls below this
PUMPDOWN_GRACE_S = 10.0      #: no under_suction while a freshly started cup pumps down
SIGNAL_LOSS_S = 0.25         #: signal_loss: no valid frame for longer than this
DWELL_ADVISORY_S = 600.0     #: dwell_exceeded, low priority (10 min)
DWELL_LIMIT_S = 900.0        #: dwell_exceeded, medium priority (15 min)


def regulator_thresholds(low_kpa: float, high_kpa: float) -> tuple[float, float]:
    """Pump switch points inside a target band: (on below, off at or above), kPa.

    The reference firmware and the simulator regulate the same way: the pump
    turns on when suction < on, off when suction >= off, and otherwise keeps its
    state. The points sit a quarter of the band inside each edge so that sensor
    lag and pump run-on do not carry the cup out of the band.
    """
    quarter = 0.25 * (high_kpa - low_kpa)
    return low_kpa + quarter, high_kpa - quarter
