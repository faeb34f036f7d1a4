"""Gas balance of a suction cup: pump, seal leak, vent valve, tissue dome.

Pure numpy functions of state and time; the engine (``sim.engine``) strings
them together. Units: pressure kPa (absolute unless named *suction*), volume
mL, conductance and pump speed mL/s (parameters are given in L/min), time s.
Arrays broadcast: per-cup vectors have shape (cups,), windows (m, cups).

Model (docs/simulator.md derives it)::

    d(p V)/dt = -Q_pump + (C_leak + G_valve) (p_amb - p)
    V = V0 - k s,  s = p_amb - p              (tissue dome, k mL/kPa)
    Q_pump = S0 (p - p_ult),  S0 = F p_amb / s_max,  p_ult = p_amb - s_max

so ``Cap dp/dt = -a p + b`` with ``Cap = V + k p``, ``a = S0 + C + G``,
``b = S0 p_ult + (C + G) p_amb``. With the coefficients held constant over a
segment the solution is an exponential approach to ``p_eq = b / a`` with rate
``lam = a / Cap`` (Leybold's pump-down form with ultimate pressure and leak).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Standard atmosphere, kPa.
AMBIENT_KPA = 101.325
#: 1 L/min in mL/s.
L_MIN = 1000.0 / 60.0
#: Relative change of the gas capacitance allowed within one segment (the
#: volume-dependence approximation; docs/simulator.md shows the error).
CAP_TOLERANCE = 0.01


@dataclass(frozen=True)
class CupPhysics:
    """Physical defaults of one cup and its pump (sources in docs/simulator.md).

    volume_ml: V0, empty cup volume (domain.md: cups 50-150 mL, 75/100 reported).
    tissue_ml_per_kpa: k, volume taken by the tissue dome per kPa of suction
        (inference from dome measurements: ~7 mL at 25 kPa in a 40 mm cup).
    pump_flow_l_min: F, free-air flow of the diaphragm pump (domain.md ~2 L/min).
    pump_max_kpa: s_max, suction at which the pump's throughput falls to zero
        (domain.md: ~40 kPa, some claim 60-75).
    seal_leak_l_min: C, conductance of a healthy skin seal. Chosen so a held
        cup loses ~0.03 kPa/s at 22 kPa (the pump tops up every ~1 min).
    valve_l_min: G, vent valve conductance when open (empties a cup in ~1 s).
    open_l_min: conductance of a cup that is off the skin or detached.
    """

    volume_ml: float = 100.0
    tissue_ml_per_kpa: float = 0.3
    pump_flow_l_min: float = 2.0
    pump_max_kpa: float = 45.0
    seal_leak_l_min: float = 0.01
    valve_l_min: float = 20.0
    open_l_min: float = 300.0


def capacitance(volume_ml: np.ndarray, k: np.ndarray, p_amb: np.ndarray,
                p: np.ndarray) -> np.ndarray:
    """Gas capacitance ``Cap = V + k p`` (mL) with ``V = V0 - k (p_amb - p)``.

    ``d(pV)/dt = V dp/dt + p dV/dt`` and ``dV/dt = k dp/dt`` (ambient held):
    the dome rising into the cup compresses the gas, so the pump must remove
    more of it than the bare volume suggests. Floored at 5 % of V0 so that
    an absurd k cannot make it vanish.
    """
    v = volume_ml - k * (p_amb - p)
    return np.maximum(v + k * p, 0.05 * volume_ml)


def pump_terms(flow_ml_s: np.ndarray, max_suction_kpa: np.ndarray,
               p_amb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S0 mL/s, p_ult kPa abs) of a pump whose throughput ``S0 (p - p_ult)``
    is ``F p_amb`` at zero suction and falls linearly to 0 at ``s_max``."""
    smax = np.maximum(max_suction_kpa, 1e-6)
    return flow_ml_s * p_amb / smax, p_amb - smax


def coefficients(cap: np.ndarray, s0: np.ndarray, p_ult: np.ndarray, g_in: np.ndarray,
                 p_amb: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rate ``lam`` (1/s) and equilibrium ``p_eq`` (kPa abs) of ``Cap dp/dt = -a p + b``.

    s0: pump speed while running (0 when off); g_in: leak + valve conductance
    (mL/s). Where nothing moves gas (a = 0) the cup holds: lam = 0, p_eq = p.
    """
    a = s0 + g_in
    b = s0 * p_ult + g_in * p_amb
    safe = np.where(a > 0, a, 1.0)
    lam = np.where(a > 0, a / cap, 0.0)
    p_eq = np.where(a > 0, b / safe, p)
    return lam, p_eq


def evolve(p0: np.ndarray, lam: np.ndarray, p_eq: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pressure after ``t`` s of constant coefficients: ``p_eq + (p0 - p_eq) e^(-lam t)``."""
    return p_eq + (p0 - p_eq) * np.exp(-lam * t)


#: |1 - lam tau| below this takes the resonant form of the lag response.
_RESONANT = 1e-6


def lag_gain(lam: np.ndarray, tau: float) -> np.ndarray:
    """``1 / (1 - lam tau)`` of the first-order lag's response to ``e^(-lam t)``
    (0 where ``lam tau`` = 1, which ``lagged`` handles in closed form)."""
    x = lam * tau
    res = np.abs(1.0 - x) < _RESONANT
    return np.where(res, 0.0, 1.0 / np.where(res, 0.5, 1.0 - x))


def lagged(y0: np.ndarray, s_eq: np.ndarray, amp: np.ndarray, lam: np.ndarray,
           gain: np.ndarray, tau: float, t: np.ndarray, e_lam: np.ndarray) -> np.ndarray:
    """First-order lag ``tau dy/dt = s - y`` driven by ``s = s_eq + amp e^(-lam t)``.

    Exact: ``y = s_eq + amp g e^(-lam t) + (y0 - s_eq - amp g) e^(-t/tau)``
    with ``g = lag_gain(lam, tau)``; at resonance (lam tau = 1)
    ``y = s_eq + (y0 - s_eq) e^(-t/tau) + amp (t/tau) e^(-t/tau)``.
    ``e_lam`` is ``e^(-lam t)`` already computed.
    """
    if tau <= 0.0:
        return s_eq + amp * e_lam
    ag = amp * gain
    e2 = np.exp(-t / tau)
    y = s_eq + ag * e_lam + (y0 - s_eq - ag) * e2
    res = np.abs(1.0 - lam * tau) < _RESONANT
    if np.any(res):
        y = y + np.where(res, amp * (t / tau) * e2, 0.0)
    return y


def segment_midpoint(p0: np.ndarray, p_eq: np.ndarray, cap: np.ndarray, k: np.ndarray,
                     tolerance: float = CAP_TOLERANCE) -> np.ndarray:
    """Pressure halfway through the longest segment ``segment_limit_s`` allows
    (kPa abs): ``p0`` moved half of ``min(|p_eq - p0|, tolerance Cap / (2k))``
    towards ``p_eq``."""
    dp_max = np.where(k > 0, tolerance * cap / np.maximum(2.0 * k, 1e-300), 0.0)
    move = np.minimum(np.abs(p_eq - p0), dp_max)
    return p0 + 0.5 * move * np.sign(p_eq - p0)


def segment_limit_s(p0: np.ndarray, p_eq: np.ndarray, lam: np.ndarray, cap: np.ndarray,
                    k: np.ndarray, tolerance: float = CAP_TOLERANCE) -> np.ndarray:
    """Longest time (s) for which holding ``Cap`` fixed is within ``tolerance``.

    ``Cap`` changes by ``2 k dp``; the segment ends before ``|p - p0|``
    exceeds ``tolerance Cap / (2 k)``. Infinite where k = 0, the cup is
    still, or the equilibrium is nearer than that bound.
    """
    dp_max = np.where(k > 0, tolerance * cap / np.maximum(2.0 * k, 1e-300), np.inf)
    dist = np.abs(p0 - p_eq)
    frac = np.where(dist > dp_max, dp_max / np.maximum(dist, 1e-300), 1.0)
    with np.errstate(divide="ignore"):
        t = np.where((frac < 1.0) & (lam > 0), -np.log1p(-frac) / np.where(lam > 0, lam, 1.0),
                     np.inf)
    return t


# --- closed forms the tests compare against -------------------------------------

def pumpdown_time(volume_ml: float, speed_ml_s: float, p0: float, p1: float,
                  p_ult: float = 0.0, leak_kpa_ml_s: float = 0.0) -> float:
    """Leybold: ``t = (V/S) ln((p0 - p_ult - Q/S) / (p1 - p_ult - Q/S))`` (s).

    leak_kpa_ml_s: leak throughput Q in kPa·mL/s (constant).
    """
    q = leak_kpa_ml_s / speed_ml_s
    return volume_ml / speed_ml_s * float(np.log((p0 - p_ult - q) / (p1 - p_ult - q)))


def leak_equilibrium(leak_ml_s: float, speed_ml_s: float, p_amb: float = AMBIENT_KPA) -> float:
    """Cup pressure (kPa abs) where a constant-speed pump balances the leak:
    ``p = C p_amb / (S + C)`` (domain.md; not choked at these ratios)."""
    return leak_ml_s * p_amb / (speed_ml_s + leak_ml_s)


def reference_trajectory(p0: float, t_end: float, dt: float, volume_ml: float, k: float,
                         speed_ml_s: float, p_ult: float, leak_ml_s: float,
                         p_amb: float = AMBIENT_KPA) -> tuple[np.ndarray, np.ndarray]:
    """Fine-step RK4 of the full model with the dome (slow; for tests only).

    Returns (t (n,), p (n,)), kPa abs.
    """
    def f(p: float) -> float:
        cap = (volume_ml - k * (p_amb - p)) + k * p
        return (-speed_ml_s * (p - p_ult) + leak_ml_s * (p_amb - p)) / cap

    n = int(round(t_end / dt)) + 1
    out = np.empty(n)
    p = p0
    for i in range(n):
        out[i] = p
        k1 = f(p)
        k2 = f(p + 0.5 * dt * k1)
        k3 = f(p + 0.5 * dt * k2)
        k4 = f(p + dt * k3)
        p += dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.arange(n) * dt, out
