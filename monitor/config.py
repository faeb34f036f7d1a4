"""Monitor configuration: targets, thresholds, delays and limits, globally and per cup.

Every default comes from :mod:`firmware_bridge.conditions` where a shared
definition exists (the simulator's ground truth uses the same numbers); the
reason for every number is in docs/alarms.md. Pressures are suction in kPa,
times in seconds.

Load order: defaults < TOML file (:func:`load_config`) < ``key=value``
overrides (:func:`apply_overrides`). A TOML file looks like::

    unit = "mmHg"               # display unit
    signal_loss_s = 0.25

    [defaults]                  # every cup
    band_low_kpa = 20.0
    band_high_kpa = "188 mmHg"  # a pressure may carry its unit

    [cups.2]                    # cup 2 only (1-based)
    band = [18.0, 23.0]

Overrides use dotted keys: ``band_high_kpa=24``, ``cups.2.band=18:23``,
``cup3.enabled=false``, ``unit=mmHg``. A bad setting raises :class:`ConfigError`
with one line that says what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from firmware_bridge import conditions as C
from firmware_bridge.protocol import MAX_CUPS

from .units import PER_KPA, normalize_unit, parse_pressure


class ConfigError(ValueError):
    """A setting is unknown, malformed or inconsistent (message: one line)."""


@dataclass(frozen=True, slots=True)
class CupConfig:
    """Thresholds for one cup. Pressures: suction, kPa. Times: s of device clock."""

    enabled: bool = True
    # Target band and alarm levels.
    band_low_kpa: float = C.BAND_LOW_KPA
    band_high_kpa: float = C.BAND_HIGH_KPA
    over_margin_kpa: float = C.OVER_MARGIN_KPA    # over_suction above high + this
    under_margin_kpa: float = C.UNDER_MARGIN_KPA  # under_suction below low - this
    hysteresis_kpa: float = 1.0                   # an alarm clears this far back inside its level
    hard_limit_kpa: float = C.HARD_LIMIT_KPA      # over_suction without delay at/above this
    detached_kpa: float = C.DETACHED_KPA          # detached: regulating cup below this
    applied_kpa: float = C.DETACHED_KPA           # cup counts as applied at/above this
    released_kpa: float = 2.0                     # ... and as released below this (not regulating)
    pumpdown_grace_s: float = C.PUMPDOWN_GRACE_S
    # Condition delays (on-delays), s.
    over_delay_s: float = 1.0
    under_delay_s: float = 2.0
    detached_delay_s: float = 0.5
    leak_delay_s: float = 1.0
    blockage_delay_s: float = 1.0
    sensor_fault_delay_s: float = 0.5
    # Leak and blockage evidence (binary devices with pump/valve status only).
    leak_decay_kpa_s: float = 0.5     # pump off: suction falls at least this fast ...
    leak_drop_kpa: float = 1.0        # ... and by at least this much
    leak_pump_s: float = 7.0          # or the pump runs this long with the cup in band (PTS ii)
    leak_clear_s: float = 5.0         # leak ends after a pump-off hold this long without decay
    blockage_s: float = 2.0           # pump on this long ...
    blockage_rise_kpa: float = 1.0    # ... and the cup gained less than this
    # Sensor checks.
    sensor_min_kpa: float = -20.0     # readings at/below or at/above the range are faults
    sensor_max_kpa: float = 100.0
    stuck_s: float = 5.0              # bit-identical readings this long while regulating (0: off)
    # Dwell (time the cup has been on).
    dwell_advisory_s: float = C.DWELL_ADVISORY_S
    dwell_limit_s: float = C.DWELL_LIMIT_S

    @property
    def over_kpa(self) -> float:
        """over_suction raise level, kPa."""
        return self.band_high_kpa + self.over_margin_kpa

    @property
    def under_kpa(self) -> float:
        """under_suction raise level, kPa."""
        return self.band_low_kpa - self.under_margin_kpa


_CUP_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(CupConfig)}
_STATUS_BITS = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Settings for the whole monitor; ``cups`` holds per-cup overrides (1-based)."""

    defaults: CupConfig = field(default_factory=CupConfig)
    cups: Mapping[int, CupConfig] = field(default_factory=dict)
    unit: str = "kPa"                     # display unit
    signal_loss_s: float = C.SIGNAL_LOSS_S
    audio_pause_s: float = 120.0          # IEC 60601-1-8 audio paused (typ. 2 min)
    status_bits: str = "auto"             # "auto": trust status once any bit or INFO was seen
    smooth_samples: int = 8               # moving average for leak/blockage evidence
    history: int = 10_000                 # alarm events kept in memory

    def cup(self, cup: int) -> CupConfig:
        """Settings of 1-based ``cup`` (its overrides, else the defaults)."""
        return self.cups.get(cup, self.defaults)

    def with_cup(self, cup: int, **changes: Any) -> MonitorConfig:
        """A copy with settings of one cup changed (e.g. a new band from the GUI)."""
        new = dict(self.cups)
        new[cup] = replace(self.cup(cup), **changes)
        cfg = replace(self, cups=new)
        validate(cfg)
        return cfg


def _coerce(name: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if v != int(v):
                raise ValueError
            return int(v)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            if name.endswith("_kpa"):
                return parse_pressure(value)
            return float(value)
        if kind == "str":
            return str(value).strip()
    except (TypeError, ValueError):
        raise ConfigError(f"{where}{name}: {value!r} is not a valid {kind}") from None
    return value


def _split_band(value: Any, where: str) -> tuple[Any, Any]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    if isinstance(value, str):
        for sep in ("..", ":", ","):
            if sep in value:
                lo, hi = value.split(sep, 1)
                return lo, hi
    raise ConfigError(f"{where}band: {value!r} must be two pressures, e.g. 20:25 or [20, 25]")


def _cup_changes(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key == "band":
            lo, hi = _split_band(value, where)
            changes["band_low_kpa"] = _coerce("band_low_kpa", _CUP_FIELDS["band_low_kpa"], lo, where)
            changes["band_high_kpa"] = _coerce("band_high_kpa", _CUP_FIELDS["band_high_kpa"], hi, where)
            continue
        f = _CUP_FIELDS.get(key)
        if f is None:
            raise ConfigError(f"{where}unknown setting {key!r}")
        changes[key] = _coerce(key, f, value, where)
    return changes


_TOP_FIELDS = {f.name: f for f in fields(MonitorConfig) if f.name not in ("defaults", "cups")}


def _cup_number(key: Any) -> int:
    s = str(key).strip().lower().removeprefix("cup")
    try:
        n = int(s)
    except ValueError:
        raise ConfigError(f"cups.{key}: cup must be a number 1..{MAX_CUPS}") from None
    if not 1 <= n <= MAX_CUPS:
        raise ConfigError(f"cups.{key}: cup must be a number 1..{MAX_CUPS}")
    return n


def from_mapping(data: Mapping[str, Any], base: MonitorConfig | None = None) -> MonitorConfig:
    """Build a config from nested mappings (a parsed TOML document) over ``base``."""
    cfg = base or MonitorConfig()
    top: dict[str, Any] = {}
    defaults_changes: dict[str, Any] = {}
    cup_changes: dict[int, dict[str, Any]] = {}
    for key, value in data.items():
        if key == "defaults":
            if not isinstance(value, Mapping):
                raise ConfigError("defaults must be a table of cup settings")
            defaults_changes.update(_cup_changes(value, "defaults."))
        elif key == "cups":
            if not isinstance(value, Mapping):
                raise ConfigError("cups must be a table of [cups.N] tables")
            for ck, table in value.items():
                n = _cup_number(ck)
                if not isinstance(table, Mapping):
                    raise ConfigError(f"cups.{ck} must be a table of cup settings")
                cup_changes.setdefault(n, {}).update(_cup_changes(table, f"cups.{n}."))
        elif key in _TOP_FIELDS:
            top[key] = _coerce(key, _TOP_FIELDS[key], value, "")
        elif key in _CUP_FIELDS or key == "band":
            # A cup setting at top level applies to every cup (handy on a command line).
            defaults_changes.update(_cup_changes({key: value}, ""))
        else:
            raise ConfigError(f"unknown setting {key!r}")
    new_defaults = replace(cfg.defaults, **defaults_changes)
    cups: dict[int, CupConfig] = {}
    # A cup override inherits later changes of the defaults for what it did not set.
    for n, old in cfg.cups.items():
        own = {k: getattr(old, k) for k in _CUP_FIELDS if getattr(old, k) != getattr(cfg.defaults, k)}
        cups[n] = replace(new_defaults, **own)
    for n, ch in cup_changes.items():
        cups[n] = replace(cups.get(n, new_defaults), **ch)
    if "unit" in top:
        try:
            top["unit"] = normalize_unit(top["unit"])
        except ValueError as e:
            raise ConfigError(f"unit: {e}") from None
    cfg = replace(cfg, defaults=new_defaults, cups=cups, **top)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                base: MonitorConfig | None = None) -> MonitorConfig:
    """Defaults, then the TOML file at ``path`` (if any), then ``key=value`` overrides."""
    cfg = base or MonitorConfig()
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
        try:
            cfg = from_mapping(data, cfg)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: MonitorConfig, overrides: Iterable[str]) -> MonitorConfig:
    """Apply ``key=value`` strings: ``band_low_kpa=18``, ``cups.2.band=18:23``, ``cup2.enabled=no``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        if parts[0].lower().startswith("cup") and parts[0].lower() not in ("cups",) and len(parts) == 2:
            parts = ["cups", parts[0][3:], parts[1]]
        if parts[0] == "cups" and len(parts) == 3:
            doc: dict[str, Any] = {"cups": {parts[1]: {parts[2]: value}}}
        elif parts[0] == "defaults" and len(parts) == 2:
            doc = {"defaults": {parts[1]: value}}
        elif len(parts) == 1:
            doc = {key: value}
        else:
            raise ConfigError(f"override {item!r}: use key, defaults.key or cups.N.key")
        cfg = from_mapping(doc, cfg)
    return cfg


def _check_cup(c: CupConfig, where: str) -> None:
    for name in _CUP_FIELDS:
        v = getattr(c, name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}{name} must be a finite number, not {v}")
    if c.band_low_kpa >= c.band_high_kpa:
        raise ConfigError(f"{where}band_low_kpa ({c.band_low_kpa:g}) must be below "
                          f"band_high_kpa ({c.band_high_kpa:g})")
    for name in ("over_margin_kpa", "under_margin_kpa", "hysteresis_kpa", "leak_drop_kpa",
                 "blockage_rise_kpa"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{where}{name} must not be negative")
    for name in ("over_delay_s", "under_delay_s", "detached_delay_s", "leak_delay_s",
                 "blockage_delay_s", "sensor_fault_delay_s", "pumpdown_grace_s"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{where}{name} must not be negative")
    if c.stuck_s < 0:
        raise ConfigError(f"{where}stuck_s must not be negative (0 turns the check off)")
    for name in ("leak_decay_kpa_s", "leak_pump_s", "leak_clear_s", "blockage_s",
                 "dwell_advisory_s", "dwell_limit_s"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"{where}{name} must be positive")
    if c.over_kpa >= c.hard_limit_kpa:
        raise ConfigError(f"{where}the over-suction level {c.over_kpa:g} kPa (band_high_kpa + "
                          f"over_margin_kpa) must be below hard_limit_kpa ({c.hard_limit_kpa:g})")
    if c.hysteresis_kpa > c.over_margin_kpa + (c.band_high_kpa - c.band_low_kpa):
        raise ConfigError(f"{where}hysteresis_kpa ({c.hysteresis_kpa:g}) is wider than the band "
                          "plus its margin: alarms would never clear")
    if not 0 < c.detached_kpa < c.under_kpa:
        raise ConfigError(f"{where}detached_kpa ({c.detached_kpa:g}) must be between 0 and the "
                          f"under-suction level {c.under_kpa:g} kPa")
    if not c.released_kpa < c.applied_kpa:
        raise ConfigError(f"{where}released_kpa ({c.released_kpa:g}) must be below "
                          f"applied_kpa ({c.applied_kpa:g})")
    window = c.leak_drop_kpa / c.leak_decay_kpa_s
    if c.leak_clear_s < window:
        raise ConfigError(f"{where}leak_clear_s ({c.leak_clear_s:g}) must be at least leak_drop_kpa / "
                          f"leak_decay_kpa_s ({window:g} s), the window the leak is judged on")
    if c.dwell_advisory_s > c.dwell_limit_s:
        raise ConfigError(f"{where}dwell_advisory_s ({c.dwell_advisory_s:g}) must not exceed "
                          f"dwell_limit_s ({c.dwell_limit_s:g})")
    if not c.sensor_min_kpa < 0 < c.band_low_kpa < c.band_high_kpa < c.hard_limit_kpa < c.sensor_max_kpa:
        raise ConfigError(f"{where}sensor range {c.sensor_min_kpa:g}..{c.sensor_max_kpa:g} kPa must "
                          "include 0 and the band and hard limit")


def validate(cfg: MonitorConfig) -> None:
    """Raise :class:`ConfigError` (one line) when a setting is inconsistent."""
    _check_cup(cfg.defaults, "defaults.")
    for n, c in cfg.cups.items():
        if not isinstance(n, int) or not 1 <= n <= MAX_CUPS:
            raise ConfigError(f"cups.{n}: cup must be a number 1..{MAX_CUPS}")
        _check_cup(c, f"cups.{n}.")
    if cfg.unit not in PER_KPA:
        raise ConfigError(f"unit: {cfg.unit!r} is not one of {', '.join(PER_KPA)}")
    if not cfg.signal_loss_s > 0:
        raise ConfigError(f"signal_loss_s ({cfg.signal_loss_s:g}) must be positive")
    if not cfg.audio_pause_s > 0:
        raise ConfigError(f"audio_pause_s ({cfg.audio_pause_s:g}) must be positive")
    if cfg.status_bits not in _STATUS_BITS:
        raise ConfigError(f"status_bits: {cfg.status_bits!r} must be one of {', '.join(_STATUS_BITS)}")
    if not 1 <= cfg.smooth_samples <= 1000:
        raise ConfigError(f"smooth_samples ({cfg.smooth_samples}) must be 1..1000")
    if cfg.history < 1:
        raise ConfigError("history must be at least 1")
