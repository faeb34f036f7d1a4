"""MonitorConfig: defaults from the shared definitions, TOML, overrides, validation."""

from __future__ import annotations

import pytest

from firmware_bridge import conditions as C
from monitor.config import ConfigError, CupConfig, MonitorConfig, apply_overrides, load_config


def test_defaults_come_from_shared_conditions():
    c = MonitorConfig().cup(1)
    assert (c.band_low_kpa, c.band_high_kpa) == (C.BAND_LOW_KPA, C.BAND_HIGH_KPA)
    assert c.over_kpa == C.BAND_HIGH_KPA + C.OVER_MARGIN_KPA
    assert c.under_kpa == C.BAND_LOW_KPA - C.UNDER_MARGIN_KPA
    assert (c.hard_limit_kpa, c.detached_kpa, c.pumpdown_grace_s) == (
        C.HARD_LIMIT_KPA, C.DETACHED_KPA, C.PUMPDOWN_GRACE_S)
    assert (c.dwell_advisory_s, c.dwell_limit_s) == (C.DWELL_ADVISORY_S, C.DWELL_LIMIT_S)
    assert MonitorConfig().signal_loss_s == C.SIGNAL_LOSS_S


def test_toml_file_with_defaults_and_per_cup(tmp_path):
    f = tmp_path / "cupmon.toml"
    f.write_text('unit = "mmHg"\nsignal_loss_s = 0.5\n\n'
                 '[defaults]\nband_low_kpa = 18.0\nband_high_kpa = "180 mmHg"\n'
                 'over_delay_s = 0.5\n\n'
                 '[cups.2]\nband = [15, 19]\n\n[cups.cup3]\nenabled = false\n')
    cfg = load_config(f)
    assert cfg.unit == "mmHg" and cfg.signal_loss_s == 0.5
    assert cfg.cup(1).band_low_kpa == 18.0
    assert cfg.cup(1).band_high_kpa == pytest.approx(180 / 7.50062)
    assert (cfg.cup(2).band_low_kpa, cfg.cup(2).band_high_kpa) == (15.0, 19.0)
    assert cfg.cup(2).over_delay_s == 0.5      # per-cup tables inherit the defaults
    assert not cfg.cup(3).enabled and cfg.cup(4) == cfg.defaults


def test_overrides_after_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[cups.2]\nband_high_kpa = 24\n")
    cfg = load_config(f, ["band_low_kpa=19", "cups.2.under_delay_s=3", "cup4.band=21..24",
                          "defaults.hysteresis_kpa=0.5", "status_bits=on"])
    assert cfg.cup(1).band_low_kpa == 19.0 and cfg.cup(2).band_low_kpa == 19.0
    assert cfg.cup(2).band_high_kpa == 24.0 and cfg.cup(2).under_delay_s == 3.0
    assert (cfg.cup(4).band_low_kpa, cfg.cup(4).band_high_kpa) == (21.0, 24.0)
    assert cfg.cup(2).hysteresis_kpa == 0.5   # a later default reaches cups that did not set it
    assert cfg.status_bits == "on"


def test_with_cup_changes_one_cup():
    cfg = MonitorConfig().with_cup(3, band_low_kpa=10.0, band_high_kpa=14.0)
    assert cfg.cup(3).band_high_kpa == 14.0 and cfg.cup(1).band_high_kpa == 25.0


@pytest.mark.parametrize("override,message", [
    ("band_low_kpa=26", "band_low_kpa (26) must be below band_high_kpa (25)"),
    ("cups.2.band=25:20", "cups.2.band_low_kpa (25) must be below band_high_kpa (20)"),
    ("band_high_kpa=29.5", "must be below hard_limit_kpa"),
    ("colour=red", "unknown setting 'colour'"),
    ("over_delay_s=soon", "over_delay_s: 'soon' is not a valid float"),
    ("over_delay_s=-1", "over_delay_s must not be negative"),
    ("cups.17.band=20:25", "cup must be a number 1..16"),
    ("unit=psi", "unknown pressure unit"),
    ("dwell_advisory_s=1000", "dwell_advisory_s (1000) must not exceed dwell_limit_s (900)"),
    ("signal_loss_s=0", "signal_loss_s (0) must be positive"),
    ("status_bits=maybe", "status_bits"),
    ("detached_kpa=19.5", "detached_kpa (19.5) must be between 0"),
    ("band", "expected key=value"),
    ("cups.2.band=20", "must be two pressures"),
    ("enabled=perhaps", "is not a valid bool"),
    ("leak_clear_s=1", "leak_clear_s (1) must be at least"),
])
def test_validation_errors_are_one_clear_line(override, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(MonitorConfig(), [override])
    text = str(e.value)
    assert message in text and "\n" not in text


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\nband_low_kpa = 30\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: defaults\.band_low_kpa \(30\) must be below"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("unit = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_cupconfig_is_immutable():
    with pytest.raises(AttributeError):
        CupConfig().band_low_kpa = 1.0  # type: ignore[misc]
