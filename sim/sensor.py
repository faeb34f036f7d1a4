"""Pressure sensor, ADC and the firmware's own sensor checks.

The chain per sample (arrays (m, cups), per-cup parameters (cups,))::

    lagged suction y (physics.lagged)        first-order lag, tau = lag_s
    P  = -(gain y + offset)                  gauge sensor input, kPa (vacuum < 0)
    Vs = supply (1 + ripple sin(2 pi f t + phi))
    Vout = clip(Vs (0.007652 P + 0.92), v_sat_low, v_sat_high) + noise
    code = floor(Vout / Vref 2^bits)          ADC, Vref = nominal supply
    raw  = -((code + 0.5) Vref / 2^bits / Vref - 0.92) / 0.007652   firmware, kPa

(MPXV6115V transfer function, domain.md.) The ADC reference is the nominal
supply, not the sensor's own, so supply ripple shows in the reading as a
ratiometric sensor does (domain.md: "ratiometric sensors drift with their
supply"). An absolute sensor (MPXA6115A: Vout = Vs (0.009 P - 0.095), P
absolute) is available with ``sensor="absolute"``; the firmware then reads
suction as its boot-time ambient minus the cup pressure and so cannot see an
ambient change.

Firmware checks (what the simulated device flags as SENSOR_FAULT): code at a
saturation rail, reading outside the plausible range, the same ADC code for
``stuck_detect_s`` (at least ``STUCK_MIN_SAMPLES`` samples), and no reading
(dropout). It cannot see offset, gain or lag errors.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: A stuck detector needs at least this many identical codes in a row, so that
#: at 10 Hz chance repeats of a noisy reading (p ~ 0.4 each) never trip it.
STUCK_MIN_SAMPLES = 20
#: Code value of "no reading" inside the chain.
NO_CODE = -1


class SensorFault(enum.IntEnum):
    """Faults a scenario can inject into a cup's sensor."""

    NONE = 0
    STUCK = 1       #: output frozen at the last code
    RAIL_HIGH = 2   #: output pinned at the upper rail (open wire): reads below ambient
    RAIL_LOW = 3    #: output pinned at the lower rail (short): reads full vacuum
    DROPOUT = 4     #: no reading (a fraction ``dropout_rate`` of samples)

    @classmethod
    def parse(cls, name: str) -> SensorFault:
        try:
            return cls[str(name).strip().upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in cls if m)
            raise ValueError(f"sensor fault must be one of {names}, not {name!r}") from None


@dataclass(frozen=True)
class Transfer:
    """Ratiometric transfer ``Vout = Vs (sens P + off)`` with P in kPa."""

    name: str
    sens: float   #: 1/kPa
    off: float
    absolute: bool


#: NXP MPXV6115V, gauge -115..0 kPa (domain.md).
MPXV6115V = Transfer("MPXV6115V", 0.007652, 0.92, absolute=False)
#: NXP MPXA6115A, absolute 15..115 kPa (datasheet transfer function).
MPXA6115A = Transfer("MPXA6115A", 0.009, -0.095, absolute=True)
TRANSFERS = {"gauge": MPXV6115V, "absolute": MPXA6115A}


@dataclass(frozen=True)
class SensorParams:
    """Sensor defaults (sources in docs/simulator.md).

    kind: "gauge" (MPXV6115V) or "absolute" (MPXA6115A).
    noise_kpa: rms output noise, in kPa of input (≈ 3.8 mV at 5 V).
    ripple: supply ripple amplitude, fraction of the supply; ripple_hz its frequency.
    adc_bits: ADC resolution (10: ATmega328P, the reference firmware target).
    supply_v: nominal sensor supply = ADC reference, V.
    lag_s: first-order time constant of sensor + anti-alias RC, s.
    v_sat_low, v_sat_high: output saturation voltages, V.
    stuck_detect_s: identical codes for this long flag the sensor stuck.
    fault_clear_s: the fault flag clears after this long without a fault sign.
    range_low_kpa, range_high_kpa: plausible raw suction; outside = fault.
    """

    kind: str = "gauge"
    noise_kpa: float = 0.1
    ripple: float = 0.0005
    ripple_hz: float = 50.0
    adc_bits: int = 10
    supply_v: float = 5.0
    lag_s: float = 0.002
    v_sat_low: float = 0.2
    v_sat_high: float = 4.8
    stuck_detect_s: float = 1.0
    fault_clear_s: float = 0.5
    range_low_kpa: float = -3.0
    range_high_kpa: float = 100.0

    @property
    def transfer(self) -> Transfer:
        try:
            return TRANSFERS[self.kind]
        except KeyError:
            raise ValueError(f"sensor must be gauge or absolute, not {self.kind!r}") from None

    @property
    def levels(self) -> int:
        return 1 << int(self.adc_bits)

    def lsb_kpa(self) -> float:
        """kPa per ADC code."""
        return self.supply_v / self.levels / (self.supply_v * self.transfer.sens)

    def stuck_samples(self, rate_hz: float) -> int:
        return max(STUCK_MIN_SAMPLES, int(round(self.stuck_detect_s * rate_hz)))

    def clear_samples(self, rate_hz: float) -> int:
        return max(1, int(round(self.fault_clear_s * rate_hz)))

    @cached_property
    def rails(self) -> tuple[int, int]:
        """(low, high): codes at or beyond these read as saturated."""
        lo = adc_code(np.asarray(self.v_sat_low), self) + 2
        hi = adc_code(np.asarray(self.v_sat_high), self) - 2
        return int(lo), int(hi)


def sensor_input(suction: np.ndarray, p_abs: np.ndarray, gain: np.ndarray,
                 offset: np.ndarray, params: SensorParams) -> np.ndarray:
    """Pressure the sensing element sees, kPa: gauge -(gain s + offset), or
    absolute gain p + offset. gain/offset are the sensor's errors."""
    if params.transfer.absolute:
        return gain * p_abs + offset
    return -(gain * suction + offset)


def output_voltage(pressure: np.ndarray, t_s: np.ndarray, noise: np.ndarray,
                   params: SensorParams, phase: float) -> np.ndarray:
    """Sensor output, V: rippling supply, saturation, then noise (unit normals)."""
    tr = params.transfer
    vs = params.supply_v
    if params.ripple:
        vs = vs * (1.0 + params.ripple * np.sin(2.0 * np.pi * params.ripple_hz * t_s + phase))
    v = np.minimum(np.maximum(vs * (tr.sens * pressure + tr.off), params.v_sat_low),
                   params.v_sat_high)
    if params.noise_kpa:
        v = v + noise * (params.noise_kpa * tr.sens * params.supply_v)
    return v


def adc_code(v: np.ndarray, params: SensorParams) -> np.ndarray:
    """ADC conversion, int64 codes 0 .. 2^bits - 1 (reference = nominal supply)."""
    n = params.levels
    return np.minimum(np.maximum(np.floor(v * (n / params.supply_v)), 0), n - 1).astype(np.int64)


def code_pressure(code: np.ndarray, params: SensorParams) -> np.ndarray:
    """Firmware conversion of a code back to sensor pressure, kPa (mid-code)."""
    tr = params.transfer
    v = (code + 0.5) * (params.supply_v / params.levels)
    return (v / params.supply_v - tr.off) / tr.sens


def raw_suction(code: np.ndarray, params: SensorParams, p_boot: np.ndarray) -> np.ndarray:
    """The firmware's untared suction, kPa (NaN for no reading).

    Gauge: ``-P``. Absolute: ``p_boot - P`` with ``p_boot`` the ambient the
    device measured at boot (kPa abs).
    """
    p = code_pressure(code, params)
    s = (p_boot - p) if params.transfer.absolute else -p
    return np.where(code < 0, np.nan, s)


def ideal_raw(suction: np.ndarray, p_abs: np.ndarray, gain: np.ndarray, offset: np.ndarray,
              params: SensorParams, p_boot: np.ndarray) -> np.ndarray:
    """The untared reading without noise, ripple or quantisation, kPa: what a
    tare (ZERO) averages to."""
    p = sensor_input(suction, p_abs, gain, offset, params)
    return (p_boot - p) if params.transfer.absolute else -p


def inject(code: np.ndarray, fault: np.ndarray, stuck_code: np.ndarray, drop: np.ndarray,
           params: SensorParams) -> np.ndarray:
    """Apply per-cup injected faults to codes (m, cups); returns new codes.

    fault: (cups,) SensorFault values; stuck_code: (cups,) frozen code;
    drop: (m, cups) bool, samples without a reading (DROPOUT cups only).
    """
    if not fault.any():
        return code
    n = params.levels
    hi = min(int(np.floor(params.v_sat_high * n / params.supply_v)), n - 1)
    lo = int(np.floor(params.v_sat_low * n / params.supply_v))
    out = np.where(fault == SensorFault.STUCK, stuck_code, code)
    out = np.where(fault == SensorFault.RAIL_HIGH, hi, out)
    out = np.where(fault == SensorFault.RAIL_LOW, lo, out)
    return np.where((fault == SensorFault.DROPOUT) & drop, NO_CODE, out)


def range_flags(code: np.ndarray, raw: np.ndarray, params: SensorParams) -> np.ndarray:
    """Saturated or out-of-range readings (firmware check), bool like code."""
    lo, hi = params.rails
    sat = (code >= hi) | ((code >= 0) & (code <= lo))
    with np.errstate(invalid="ignore"):
        oor = (raw < params.range_low_kpa) | (raw > params.range_high_kpa)
    return sat | oor


def run_lengths(code: np.ndarray, last_code: np.ndarray, run0: np.ndarray) -> np.ndarray:
    """Identical-code repeats ending at each row (0 = differs from the row before).

    code (m, cups); last_code, run0 (cups,) carry the state from before row 0.
    """
    m = code.shape[0]
    prev = np.concatenate([last_code[None, :], code[:-1]], axis=0)
    idx = np.arange(m)[:, None]
    reset = np.maximum.accumulate(np.where(code != prev, idx, -1), axis=0)
    return np.where(reset >= 0, idx - reset, run0[None, :] + idx + 1)


def since_flag(flag: np.ndarray, since0: np.ndarray) -> np.ndarray:
    """Samples since the last flagged row (0 on a flagged row); carry ``since0``."""
    m = flag.shape[0]
    idx = np.arange(m)[:, None]
    last = np.maximum.accumulate(np.where(flag, idx, -1), axis=0)
    return np.where(last >= 0, idx - last, since0[None, :] + idx + 1)
