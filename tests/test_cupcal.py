"""``cupcal`` end to end: the real console script in a subprocess against the
simulator through the real link, then the monitor's next connect."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sim  # noqa: F401 - registers sim://
from firmware_bridge.link import SerialLink
from monitor.cal_apply import apply_calibration_on_connect
from monitor.calcli import main
from monitor.calibration import Sampler, SettleCriteria, SimHandle, wait_settled
from sim.protocol_sim import make_url

CUPCAL = str(Path(sys.executable).parent / "cupcal")
FAST = ["--sim-speed", "40", "--settle-time", "1"]


def cupcal(*args, stdin="", timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([CUPCAL, *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_offset_and_gain_error_fails_as_found_passes_as_left_and_applies_on_next_connect(tmp_path):
    db, rep = tmp_path / "cupmon.db", tmp_path / "certs"
    r = cupcal("calibrate", "--sim", "--sim-offset", "1.2", "--sim-gain", "1.05", "--sim-seed", 7,
               *FAST, "--technician", "A. Tech", "--reference-id", "SIM-REF", "--temperature",
               "21.5", "--db", db, "--report", rep, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)                     # ONE document on stdout
    assert doc["device"] == "SIM-00000007" and doc["result"] == "PASS"
    assert len(doc["cups"]) == 2
    for cup in doc["cups"]:
        assert cup["as_found"]["pass"] is False and cup["as_found"]["max_abs_error_kpa"] > 2.5
        assert cup["as_left"]["pass"] is True and cup["as_left"]["max_abs_error_kpa"] <= 0.1
        assert cup["as_left"]["verified"] and cup["as_left"]["computed_max_abs_error_kpa"] <= 0.1
        # reference = (raw - 1.2) / 1.05
        assert cup["fit"]["gain"] == pytest.approx(1 / 1.05, rel=0.005)
        assert cup["fit"]["offset_kpa"] == pytest.approx(-1.2 / 1.05, abs=0.05)
        assert cup["fit"]["order"] == 1
        assert cup["hysteresis_kpa"] < 0.1          # the simulated sensor has none
        assert [p["series"] for p in cup["points"]] == ["rising"] * 7 + ["falling"] * 6
    cert = Path(doc["certificate"])
    assert cert.suffix == ".html" and cert.exists()
    assert {Path(p).suffix for p in doc["files"].values()} == {".html", ".pdf", ".json", ".csv"}
    assert Path(doc["files"]["pdf"]).read_bytes().startswith(b"%PDF")
    assert doc["certificate_id"] in cert.read_text()

    hist = cupcal("history", "SIM-00000007", "--db", db, "--json")
    records = json.loads(hist.stdout)["calibrations"]
    assert sorted(c["cup"] for c in records) == [1, 2]
    assert all(c["valid"] and c["in_force"] and c["technician"] == "A. Tech" for c in records)
    assert all(c["certificate_id"] == doc["certificate_id"] for c in records)

    # The next connect applies it: a known pressure reads right although the
    # sensor still reads 1.05 x + 1.2 (24.3 kPa at 22 kPa).
    url = make_url("calibration_rig", cups=2, rate=100, seed=7, speed=40,
                   sensor_offset_kpa=1.2, sensor_gain=1.05)
    link = SerialLink(url)
    statuses = []
    notifier = apply_calibration_on_connect(link, db=db, on_status=statuses.append)
    sampler = Sampler()
    link.add_listener(sampler)
    link.start()
    try:
        assert link.wait_connected(10) and notifier.status_changed.wait(10)
        st = statuses[0]
        assert st.ok and not st.cal_on_device
        assert [(c.state, c.applied_by, c.certificate_id) for c in st.cups] == \
            [("in force", "host", doc["certificate_id"])] * 2
        assert "in force" not in " ".join(st.warnings())
        h = SimHandle.of(link)
        crit = SettleCriteria(band_kpa=0.1, time_s=1.0, timeout_s=30)
        readings = wait_settled(sampler, [0, 1], crit, after_t=h.set_reference(22.0))
        truth = h.true_mean(0, readings[0].t0, readings[0].t1)
        assert truth == pytest.approx(22.0, abs=0.3)
        for reading in readings:
            assert abs(reading.mean_kpa - truth) <= 0.1
    finally:
        link.stop()


def test_manual_entry_through_stdin_with_a_correction_a_redo_and_an_abort(tmp_path):
    db, rep = tmp_path / "cupmon.db", tmp_path / "certs"
    answers = "\n".join(["0",          # point 1
                         "10",         # point 2
                         "c 10.05",    # correct point 2's reference
                         "20",         # point 3
                         "r",          # redo point 3
                         "20.0",       # point 3 again
                         "abc",        # not understood: asked again
                         "10",         # point 4 (falling)
                         "a"]) + "\n"  # abort: points 1-4 are kept
    r = cupcal("calibrate", "--sim", "--sim-offset", "1.2", "--sim-seed", 8, "--reference",
               "manual", "--points", "0,10,20", *FAST, "--db", db, "--report", rep,
               "--formats", "json,csv,html", "--json", stdin=answers)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["aborted"] is True and doc["result"] == "FAIL"
    for cup in doc["cups"]:
        pts = cup["points"]
        assert [(p["index"], p["series"], p["reference_kpa"]) for p in pts] == [
            (1, "rising", 0.0), (2, "rising", 10.05), (3, "rising", 20.0), (4, "falling", 10.0)]
        # the device reading is the sensor's (offset 1.2 kPa), the reference what was typed
        assert all(p["indicated_kpa"] == pytest.approx(p["nominal_kpa"] + 1.2, abs=0.2)
                   for p in pts)
    err = r.stderr
    assert "reference corrected from 10.000 to 10.050 kPa" in err
    assert "Point 3 dropped; taking it again" in err
    assert "Not understood: 'abc'" in err
    assert "aborted by the technician; the points taken so far are kept" in err
    assert "Traceback" not in err
    rows = list(csv.DictReader(open(doc["files"]["csv"])))
    assert len(rows) == 8 and {row["cup"] for row in rows} == {"1", "2"}
    hist = json.loads(cupcal("history", "SIM-00000008", "--db", db, "--json").stdout)
    assert [(c["result"], c["valid"]) for c in hist["calibrations"]] == [("ABORTED", False)] * 2


def test_pumptest_json_on_a_healthy_simulated_unit(tmp_path):
    r = cupcal("pumptest", "--sim", "pump_test", "--sim-speed", "25", "--cups", "1",
               "--hold", "10", "--regulate", "5", "--db", tmp_path / "db", "--report",
               tmp_path / "rep", "--formats", "json,html", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["result"] == "PASS" and doc["device"] == "SIM-00000000"
    (cup,) = doc["cups"]
    assert cup["cup"] == 1 and cup["pass"] is True
    assert 0 < cup["pumpdown_s_to_20"] < cup["pumpdown_s_to_25"] < 5
    assert cup["max_suction_kpa"] > 40 and cup["ripple_kpa_pp"] < 5
    assert cup["leakdown_kpa_per_min"] >= 0 and cup["leak_ml_per_min"] >= 0
    assert [c["name"] for c in cup["checks"]] == ["pumpdown_to_20", "pumpdown_to_25",
                                                 "regulation_in_band", "leakdown_loss",
                                                 "max_suction"]
    assert Path(doc["report"]).exists()


@pytest.mark.parametrize("argv", [
    [],
    ["bogus"],
    ["calibrate"],                                          # no device
    ["calibrate", "--port", "loop://", "--sim"],            # two devices
    ["calibrate", "--sim", "--tolerance", "lots"],
    ["calibrate", "--sim", "--points", "5"],
    ["calibrate", "--sim", "--settle-time", "0"],
    ["calibrate", "--sim", "--formats", "docx"],
    ["calibrate", "--port", "loop://", "--reference", "sim"],
    ["calibrate", "--port", "loop://", "--sim-offset", "1"],
    ["pumptest", "--sim", "pump_test", "--hold", "-1"],
    ["pumptest", "--port", "loop://", "--sim-start", "3"],
    ["zero", "--sim", "--max-offset", "x"],
    ["history"],
])
def test_bad_flags_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("cupcal: ") and err.count("\n") == 1


def test_bad_flag_from_the_console_script_has_no_traceback():
    r = cupcal("calibrate", "--sim", "--repeats", "two")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_device_problems_are_one_line_and_exit_1(tmp_path, capsys):
    assert main(["calibrate", "--port", str(tmp_path / "ttyNOPE"), "--db",
                 str(tmp_path / "db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cupcal: ") and err.count("\n") == 1
    assert main(["history", "SN-1", "--db", str(tmp_path / "missing.db")]) == 1
    assert "no database" in capsys.readouterr().err
