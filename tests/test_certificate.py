"""Certificates and reports: ISO/IEC 17025 7.8 contents in the HTML, inline
SVG plots, strict JSON, CSV of the raw points, a PDF whose every page carries
the certificate ID, and a core that imports without Qt."""

import csv
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest

from firmware_bridge.messages import DeviceInfo
from monitor.calibration import (
    FALLING,
    RISING,
    CalibrationOptions,
    CalibrationRun,
    CalPoint,
    Tolerance,
    analyse_cup,
)
from monitor.certificate import (
    calibration_csv,
    calibration_document,
    new_id,
    parse_formats,
    pumptest_document,
    render_calibration_html,
    render_pumptest_html,
    write_calibration_certificate,
    write_pumptest_report,
)
from monitor.pumptest import CupPumpResult, PumpTestCriteria, PumpTestRun, judge, pumptest_json

T0 = 1_735_725_600.0  # 2025-01-01 10:00 UTC


def synthetic_run(aborted=False):
    info = DeviceInfo("SN-42", (1, 2, 3), 2, 100, sensor_model=1, adc_bits=12)
    opts = CalibrationOptions(points=(0, 10, 20, 30), tolerance=Tolerance(0.5),
                              technician="B. Tech", reference_id="DPI-620 #1234",
                              reference_cert="LAB-0001/2025", reference_u_kpa=0.02,
                              ambient={"temperature_c": 21.5, "humidity_pct": 40.0,
                                       "pressure_kpa": 101.2},
                              laboratory="Cupping Devices Lab", customer="Clinic A")
    run = CalibrationRun(info, "/dev/ttyACM0", opts, [1, 2], "bench set by the technician",
                         "reference gauge read by the technician (manual entry)", "manual",
                         started_wall=T0, finished_wall=T0 + 900)
    rng = np.random.default_rng(0)
    nominal = [0, 10, 20, 30, 20, 10, 0]
    for cup, (off, gain) in {1: (0.5, 1.03), 2: (-0.3, 0.98)}.items():
        for i, r in enumerate(nominal):
            raw = gain * r + off + rng.normal(0, 0.005)
            run.points.append(CalPoint(cup, i + 1, RISING if i < 4 else FALLING, r, r, raw, raw,
                                       0.1, 250, 10.0 * i, 10.0 * i + 5))
    if aborted:
        run.aborted, run.abort_reason = True, "aborted by the technician"
        run.points = [p for p in run.points if p.index <= 3]
    else:
        run.results = [analyse_cup(c, run.points, opts.tolerance, reference_u_kpa=0.02,
                                   span_kpa=30.0) for c in (1, 2)]
    run.certificate_id = new_id("CAL", info.serial, T0)
    run.calibration_ids = {1: 11, 2: 12}
    return run


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_certificate_html_carries_the_iso_17025_contents():
    run = synthetic_run()
    doc = calibration_document(run)
    page = render_calibration_html(doc)
    p = _Collect()
    p.feed(page)
    text = " ".join(" ".join(p.text).split())
    cid = run.certificate_id
    assert cid.startswith("CAL-20250101T100000Z-SN-42-")
    for needed in (cid, "Calibration certificate", "SN-42", "1.2.3", "Cups calibrated 1, 2 of 2",
                   "B. Tech", "Cupping Devices Lab", "Clinic A",
                   "EURAMET cg-17", "DPI-620 #1234", "LAB-0001/2025", "0.02 kPa",
                   "traceab", "temperature_c 21.5", "humidity_pct 40.0", "pressure_kpa 101.2",
                   "As found", "As left", "error kPa", "U (k=2) kPa", "Guarded acceptance",
                   "|error| + U <= tolerance", "0.5 kPa", "PASS", "Next calibration due 2026-01-01",
                   "Calibrated by", "Authorised by", "signature", "relate only to the item"):
        assert needed in text, needed
    # the ID line a browser repeats on each printed page
    assert any(a.get("class") == "runhead" for t, a in p.tags if t == "div")
    assert "position: fixed" in page
    # self-contained: no scripts, styles or images fetched from elsewhere
    assert not [a for t, a in p.tags if t in ("script", "link", "img", "iframe")]
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    svgs = [page[i:page.index("</svg>", i) + 6] for i in range(len(page))
            if page.startswith("<svg", i)]
    assert len(svgs) == 2                     # one plot per cup, inline
    for svg in svgs:
        root = ET.fromstring(svg)             # well-formed XML
        assert root.tag.endswith("svg") and len(root.findall(".//{*}circle")) >= 4


def test_json_is_strict_and_the_csv_has_every_raw_point(tmp_path):
    run = synthetic_run()
    paths = write_calibration_certificate(calibration_document(run), tmp_path, ("json", "csv"))
    assert set(paths) == {"json", "csv"}

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    doc = json.loads(paths["json"].read_text(), parse_constant=refuse)
    assert doc["certificate_id"] == run.certificate_id and doc["result"] == "PASS"
    assert doc["cups"][0]["as_found"]["points"][0]["decision"] in ("pass", "fail",
                                                                   "not demonstrated")
    assert doc["cups"][0]["repeatability_kpa"] is None        # None, not NaN
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert len(rows) == len(run.points) == 14
    first = rows[0]
    assert first["certificate_id"] == run.certificate_id and first["pass"] == "as_found"
    assert float(first["error_kpa"]) == pytest.approx(run.points[0].error_kpa, abs=1e-5)
    assert calibration_csv(calibration_document(run)).count("\n") == 15


def test_pdf_has_the_certificate_id_on_every_page(tmp_path, qapp):
    from PySide6.QtPdf import QPdfDocument

    run = synthetic_run()
    paths = write_calibration_certificate(calibration_document(run), tmp_path, ("pdf",))
    pdf = QPdfDocument()
    pdf.load(str(paths["pdf"]))
    n = pdf.pageCount()
    assert n >= 2
    for i in range(n):
        text = pdf.getAllText(i).text()
        assert run.certificate_id in text and f"page {i + 1} of {n}" in text
    everything = " ".join(pdf.getAllText(i).text() for i in range(n))
    assert "Authorised by" in everything and "Decision rule" in everything


def test_an_aborted_run_lists_the_points_it_took():
    run = synthetic_run(aborted=True)
    doc = calibration_document(run)
    assert doc["result"] == "FAIL" and doc["aborted"] and doc["due"] is None
    page = render_calibration_html(doc)
    assert "Points taken before the abort" in page and "aborted by the technician" in page
    assert page.count("<tr><td class=n>") >= 6      # 3 points x 2 cups


def test_pump_test_report(tmp_path):
    info = DeviceInfo("SN-7", (1, 0, 0), 2, 100)
    crit = PumpTestCriteria(hold_s=60)
    run = PumpTestRun(info, "sim://pump_test", [1, 2], crit, T0, T0 + 120, technician="C")
    t = [i * 0.1 for i in range(50)]
    run.traces = {"pumpdown": {"t_s": t, "cup1_kpa": [min(25, 20 * x) for x in t],
                               "cup2_kpa": [min(25, 18 * x) for x in t]}}
    for cup in (1, 2):
        r = CupPumpResult(cup, {20.0: 1.0, 25.0: 1.3}, 0.6, 0.1, 23.7, 23.4, 24.0, 23.7, 23.6,
                          1e-4, 0.14, 0.13, 0.6 if cup == 1 else 2.5, 44.8, True)
        judge(r, crit)
        run.results.append(r)
    run.report_id = new_id("PT", info.serial, T0)
    doc = pumptest_document(run, pumptest_json(run))
    assert doc["result"] == "FAIL" and [c["pass"] for c in doc["cups"]] == [True, False]
    page = render_pumptest_html(doc)
    for needed in (run.report_id, "SN-7", "J Korean Acupunct Moxib Soc 2010", "mL/min",
                   "leakdown_loss", "Pump-down", "<svg", "Authorised by"):
        assert needed in page, needed
    paths = write_pumptest_report(doc, tmp_path, ("json", "csv", "html"))
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["cup"] for r in rows] == ["1", "2"] and rows[1]["pass"] == "False"
    assert json.loads(paths["json"].read_text())["traces"]["pumpdown"]["t_s"][:2] == [0.0, 0.1]


def test_ids_are_unique_and_formats_parse():
    ids = {new_id("CAL", "SN/1 x", T0) for _ in range(500)}
    assert len(ids) > 490 and all("SN_1_x" in i for i in ids)
    assert parse_formats("all") == ("html", "pdf", "json", "csv")
    assert parse_formats("pdf, json") == ("pdf", "json")
    for bad in ("", "docx", "html,xls"):
        with pytest.raises(ValueError):
            parse_formats(bad)


def test_the_technician_modules_import_without_qt():
    code = ("import sys\n"
            "import monitor.calibration, monitor.pumptest, monitor.certificate, "
            "monitor.cal_apply, monitor.calcli\n"
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'shiboken'))]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": ""})
    assert r.returncode == 0, r.stderr
