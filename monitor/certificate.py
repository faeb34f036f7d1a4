"""Calibration certificates and pump-test reports: HTML, PDF, JSON, CSV.

Contents follow ISO/IEC 17025:2017 7.8 (docs/technician.md lists them): a
unique ID on every page, the item (device serial, cups), date, technician,
method, reference instrument and its traceability, ambient conditions,
as-found and as-left results with units and uncertainty, the decision rule,
the result, the due date and a signature line.

* HTML: self-contained, plots as inline SVG written by hand (no plotting
  library: a few lines and circles, crisp at any zoom); the ID sits in a
  header that the browser repeats on every printed page.
* PDF: Qt's QTextDocument laid out on a QPdfWriter page by page, with the ID
  and "page i of n" drawn on each page. Qt is imported inside
  :func:`write_pdf` only, so the core stays Qt-free at import.
* JSON: the whole document (what the HTML shows, and more).
* CSV: the raw points, one row per cup and point.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import math
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from monitor.jsonsafe import strict_json

from .calibration import DECISION_RULE, FALLING, REPEAT, RISING, CalibrationRun

FORMATS = ("html", "pdf", "json", "csv")


def new_id(prefix: str, serial: str, when: float) -> str:
    """A certificate/report ID, unique in practice: prefix, UTC time to the
    second, device serial and 16 random bits, e.g. ``CAL-20250101T101500Z-SN-9-3F0A``."""
    stamp = _dt.datetime.fromtimestamp(when, _dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in serial) or "DEVICE"
    return f"{prefix}-{stamp}-{safe}-{secrets.token_hex(2).upper()}"


def _iso(t: float | None) -> str | None:
    return None if t is None else _dt.datetime.fromtimestamp(t).astimezone().isoformat(
        timespec="seconds")


def _day(t: float | None) -> str:
    return "-" if t is None else f"{_dt.datetime.fromtimestamp(t):%Y-%m-%d}"


# --------------------------------------------------------------------------
# The document (JSON-ready)
# --------------------------------------------------------------------------

def calibration_document(run: CalibrationRun) -> dict[str, Any]:
    """Everything the certificate says, as plain JSON-ready data."""
    o = run.options
    span = run.span_kpa
    info = run.info
    ref_trace = {
        "sim": "none: the simulator's true pressure is a model value, not a measurement "
               "traceable to SI units. Use this certificate for training and testing only.",
        "manual": "through the reference instrument's own calibration certificate (below)",
        "gauge": "through the reference instrument's own calibration certificate (below)",
    }.get(run.reference_kind, "")
    doc: dict[str, Any] = {
        "format": "cupmon-calibration-certificate", "format_version": 1,
        "certificate_id": run.certificate_id,
        "title": "Calibration certificate",
        "issued": _iso(run.finished_wall or run.started_wall),
        "calibration_date": _iso(run.started_wall),
        "due": _iso(run.due_wall) if run.passed else None,
        "laboratory": o.laboratory, "location": o.location, "customer": o.customer,
        "technician": o.technician,
        "item": {
            "device_serial": info.serial, "firmware": info.firmware_str, "cups_on_device": info.cups,
            "cups_calibrated": run.cups, "sensor_model": info.sensor_model,
            "adc_bits": info.adc_bits, "source": run.source,
            "calibration_applied_by": "device (WRITE_CAL)" if run.device_applies else "host (cupmon)",
            "condition": "as received; the as-found results show its state before adjustment",
        },
        "procedure": {
            "name": "cupmon cupcal multi-point comparison after EURAMET cg-17 (basic procedure)",
            "points_kpa": list(o.points), "falling_series": o.falling, "repeats": o.repeats,
            "settle": {"band_kpa": o.settle.band_kpa, "time_s": o.settle.time_s,
                       "parts": o.settle.parts, "timeout_s": o.settle.timeout_s,
                       "text": o.settle.describe()},
            "bench": run.bench,
            "fit": "least squares, reference = c0 + c1 raw (+ c2 raw^2); second order only when "
                   "F > F(1, n-3) at 95 % and the largest residual falls by at least "
                   f"{o.min_gain_kpa:g} kPa",
            "as_left": "re-measured with the new coefficients applied" if run.verify_points
                       else "computed from the calibration points with the new coefficients",
        },
        "reference": {
            "kind": run.reference_kind, "description": run.reference,
            "instrument_id": o.reference_id, "certificate": o.reference_cert,
            "expanded_uncertainty_kpa": o.reference_u_kpa, "traceability": ref_trace,
        },
        "ambient": dict(o.ambient),
        "span_kpa": span,
        "tolerance": {"value": o.tolerance.value,
                      "unit": "% of span" if o.tolerance.percent_of_span else "kPa",
                      "kpa": o.tolerance.kpa(span), "text": o.tolerance.describe(span)},
        "decision_rule": DECISION_RULE,
        "result": run.result, "aborted": run.aborted, "abort_reason": run.abort_reason,
        "cups": [r.to_dict() for r in run.results],
        "coefficients_written_to_device": {str(k): list(v) for k, v in run.written.items()},
        "coefficients_restored_on_device": {str(k): list(v) for k, v in run.restored.items()},
        "calibration_ids": {str(k): v for k, v in run.calibration_ids.items()},
        "notes": list(run.notes),
        "points": [p.to_dict() for p in run.points],
        "verify_points": [p.to_dict() for p in run.verify_points],
        "statement": "The results relate only to the item calibrated, under the conditions "
                     "stated. This certificate shall not be reproduced except in full.",
    }
    if run.aborted:
        doc["notes"] = [f"Calibration {run.abort_reason}: no result; the points taken are "
                        "listed below and kept in the CSV/JSON."] + doc["notes"]
    return doc


# --------------------------------------------------------------------------
# SVG plots (hand-written)
# --------------------------------------------------------------------------

def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float) -> Iterator[float]:
    """Axis tick values: multiples of a round step from ``lo`` to ``hi``."""
    step = _nice_step(hi - lo)
    v = math.ceil(lo / step) * step
    while v <= hi + 1e-9:
        yield v
        v += step


def svg_plot(series: Sequence[dict[str, Any]], *, x_label: str, y_label: str,
             hlines: Sequence[tuple[float, str]] = (), width: int = 640, height: int = 280,
             symmetric: bool = False, title: str = "") -> str:
    """A small line/marker plot as an SVG string. ``series``: dicts with
    ``x``, ``y`` (lists), ``label``, ``color``, ``marker`` ('o', 's', '^' or
    None for a line only); ``hlines``: (y, color) dashed horizontal lines."""
    ml, mr, mt, mb = 62, 12, 26 if title else 12, 44
    xs = [v for s in series for v in s["x"] if v is not None and math.isfinite(v)]
    ys = [v for s in series for v in s["y"] if v is not None and math.isfinite(v)]
    ys += [y for y, _ in hlines]
    if not xs or not ys:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x1 = x0 + 1.0
    if symmetric:
        m = max(abs(min(ys)), abs(max(ys)), 1e-3) * 1.15
        y0, y1 = -m, m
    else:
        y0, y1 = min(ys), max(ys)
        pad = 0.08 * (y1 - y0 or 1.0)
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - ml - mr, height - mt - mb

    def px(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return mt + (y1 - y) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
           'font-size="11">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="12" '
                   f'font-weight="bold">{html.escape(title)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for v in _ticks(x0, x1):
        out.append(f'<line x1="{px(v):.1f}" y1="{mt + ph}" x2="{px(v):.1f}" y2="{mt + ph + 4}" '
                   'stroke="#444"/>')
        out.append(f'<text x="{px(v):.1f}" y="{mt + ph + 16}" text-anchor="middle">{v:g}</text>')
    for v in _ticks(y0, y1):
        out.append(f'<line x1="{ml}" y1="{py(v):.1f}" x2="{ml + pw}" y2="{py(v):.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{ml - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    if y0 < 0 < y1:
        out.append(f'<line x1="{ml}" y1="{py(0):.1f}" x2="{ml + pw}" y2="{py(0):.1f}" '
                   'stroke="#444"/>')
    for y, color in hlines:
        out.append(f'<line x1="{ml}" y1="{py(y):.1f}" x2="{ml + pw}" y2="{py(y):.1f}" '
                   f'stroke="{color}" stroke-dasharray="6,4"/>')
    lx = ml + 8
    for s in series:
        pts = [(px(a), py(b)) for a, b in zip(s["x"], s["y"], strict=True)
               if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
        color = s.get("color", "#1f77b4")
        if len(pts) > 1:
            d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for a, b in pts:
            out.append(_marker(s.get("marker"), a, b, color))
        if s.get("label"):
            out.append(_marker(s.get("marker") or "-", lx + 4, mt + 10, color))
            out.append(f'<text x="{lx + 12}" y="{mt + 14}">{html.escape(s["label"])}</text>')
            lx += 24 + 6.2 * len(s["label"])
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               f'{html.escape(x_label)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {mt + ph / 2:.1f})">{html.escape(y_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _marker(kind: str | None, x: float, y: float, color: str) -> str:
    if kind == "s":
        return (f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="white" '
                f'stroke="{color}" stroke-width="1.5"/>')
    if kind == "^":
        return (f'<polygon points="{x:.1f},{y - 4.5:.1f} {x - 4:.1f},{y + 3:.1f} '
                f'{x + 4:.1f},{y + 3:.1f}" fill="{color}"/>')
    if kind == "-":
        return f'<line x1="{x - 6:.1f}" y1="{y:.1f}" x2="{x + 6:.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="2"/>'
    if kind is None:
        return ""
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>'


def _calibration_plot(cup: dict[str, Any], tol: float) -> str:
    found = cup["as_found"]["points"]
    left = cup["as_left"]["points"]

    def pick(points: list[dict], series: str) -> dict[str, list]:
        sel = [p for p in points if p["series"] == series]
        return {"x": [p["reference_kpa"] for p in sel], "y": [p["error_kpa"] for p in sel]}

    series = [dict(pick(found, RISING), label="as found, rising", color="#c0392b", marker="o"),
              dict(pick(found, FALLING), label="falling", color="#e67e22", marker="s")]
    reps = pick(found, REPEAT)
    if reps["x"]:
        series.append(dict(reps, label="repeats", color="#8e44ad", marker="s"))
    # As left: every point of the table in the order taken (a computed table
    # runs up and back down, a re-measured one up only).
    lp = {"x": [p["reference_kpa"] for p in left], "y": [p["error_kpa"] for p in left]}
    series.append(dict(lp, label="as left", color="#27ae60", marker="^"))
    return svg_plot(series, x_label="reference suction, kPa", y_label="error, kPa",
                    hlines=[(tol, "#c0392b"), (-tol, "#c0392b")], symmetric=True,
                    title=f"Cup {cup['cup']}: error of indication (dashed: tolerance)")


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; font-size: 10pt; color: #111; margin: 2em; }
h1 { font-size: 16pt; margin: 0 0 0.2em 0; }
h2 { font-size: 12pt; margin: 1.2em 0 0.3em 0; border-bottom: 1px solid #999; }
h3 { font-size: 11pt; margin: 1em 0 0.3em 0; }
table { border-collapse: collapse; margin: 0.3em 0; }
td, th { border: 1px solid #999; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.n { text-align: right; font-family: monospace; white-space: nowrap; }
.pass { color: #1e7d32; font-weight: bold; }
.fail { color: #b71c1c; font-weight: bold; }
.runhead { font-size: 8pt; color: #555; border-bottom: 1px solid #ccc; margin-bottom: 1em; }
.sign td { border: none; padding: 1.6em 2em 0 0; }
@media print {
  body { margin: 0; }
  .runhead { position: fixed; top: 0; left: 0; right: 0; background: white; }
  .page { margin-top: 2.2em; }
  h2 { page-break-after: avoid; }
  table, svg { page-break-inside: avoid; }
}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _num(v: Any, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _verdict(ok: bool | str) -> str:
    text = ok if isinstance(ok, str) else ("PASS" if ok else "FAIL")
    cls = "pass" if text.lower() == "pass" else "fail"
    return f'<span class="{cls}">{_e(text)}</span>'


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + \
        "</table>"


def _points_table(table: dict[str, Any], span: float) -> str:
    u = table["expanded_uncertainty_kpa"]
    head = ("<tr><th>#</th><th>series</th><th>nominal<br>kPa</th><th>reference<br>kPa</th>"
            "<th>indication<br>kPa</th><th>error<br>kPa</th><th>error<br>% span</th>"
            "<th>U (k=2)<br>kPa</th><th>decision</th></tr>")
    rows = []
    for p in table["points"]:
        pct = 100.0 * p["error_kpa"] / span if span > 0 else None
        rows.append(f"<tr><td class=n>{p['index']}</td><td>{_e(p['series'])}</td>"
                    f"<td class=n>{p['nominal_kpa']:g}</td><td class=n>{_num(p['reference_kpa'])}</td>"
                    f"<td class=n>{_num(p['indicated_kpa'])}</td><td class=n>{_num(p['error_kpa'], '+.3f')}</td>"
                    f"<td class=n>{_num(pct, '+.2f')}</td><td class=n>{_num(u)}</td>"
                    f"<td>{_verdict(p['decision'])}</td></tr>")
    return f'<table width="100%" border="1" cellspacing="0" cellpadding="3">{head}{"".join(rows)}</table>'


def render_calibration_html(doc: dict[str, Any], *, images: dict[str, str] | None = None) -> str:
    """The certificate as one self-contained HTML page. With ``images`` (plot
    name -> image URL) plots are <img> tags instead of inline SVG (for Qt,
    which renders no inline SVG)."""
    cid = doc["certificate_id"]
    item, proc, ref = doc["item"], doc["procedure"], doc["reference"]
    tol = doc["tolerance"]
    span = doc["span_kpa"]
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_e(doc['title'])} "
             f"{_e(cid)}</title><style>{_CSS}</style></head><body>",
             _runhead(f'{doc["title"]} {cid} - device {item["device_serial"]}', images),
             f"<h1>{_e(doc['title'])}</h1>",
             _kv([("Certificate ID", f"<b>{_e(cid)}</b>"),
                  ("Date of calibration", _e(doc["calibration_date"])),
                  ("Date of issue", _e(doc["issued"])),
                  ("Laboratory", _e(doc["laboratory"] or "-")),
                  ("Location", _e(doc["location"] or "-")),
                  ("Customer", _e(doc["customer"] or "-")),
                  ("Technician", _e(doc["technician"] or "-")),
                  ("Result", _verdict(doc["result"]) + (" (aborted)" if doc["aborted"] else "")),
                  ("Next calibration due", _e(doc["due"][:10] if doc["due"] else "-"))]),
             "<h2>Item calibrated</h2>",
             _kv([("Device serial", _e(item["device_serial"])),
                  ("Firmware", _e(item["firmware"])),
                  ("Cups calibrated", _e(", ".join(map(str, item["cups_calibrated"]))) +
                   f" of {item['cups_on_device']}"),
                  ("Sensor model / ADC bits", f"{_e(item['sensor_model'])} / {_e(item['adc_bits'])}"),
                  ("Calibration applied by", _e(item["calibration_applied_by"])),
                  ("Connection", _e(item["source"])),
                  ("Condition", _e(item["condition"]))]),
             "<h2>Method</h2>",
             _kv([("Procedure", _e(proc["name"])),
                  ("Points", _e(", ".join(f"{p:g}" for p in proc["points_kpa"])) + " kPa suction, "
                   + ("rising then falling" if proc["falling_series"] else "rising only")
                   + (f", {proc['repeats']} repeat cycle(s) at mid-span and 0" if proc["repeats"]
                      else "")),
                  ("Settling", _e(proc["settle"]["text"]) + "; the point is the mean over that "
                   "window"),
                  ("Bench", _e(proc["bench"])),
                  ("Fit", _e(proc["fit"])),
                  ("As-left", _e(proc["as_left"]))]),
             "<h2>Reference and traceability</h2>",
             _kv([("Reference", _e(ref["description"])),
                  ("Instrument ID", _e(ref["instrument_id"] or "-")),
                  ("Its certificate", _e(ref["certificate"] or "-")),
                  ("Its expanded uncertainty (k=2)", f"{ref['expanded_uncertainty_kpa']:g} kPa"),
                  ("Traceability", _e(ref["traceability"]))]),
             "<h2>Ambient conditions</h2>",
             _kv([(k, _e(v)) for k, v in doc["ambient"].items()] or [("Recorded", "not recorded")]),
             "<h2>Decision rule</h2>",
             f"<p>Tolerance (maximum permissible error): {_e(tol['text'])}. "
             f"{_e(doc['decision_rule'])}</p>",
             "<h2>Results</h2>"]
    if doc["cups"]:
        head = ("<tr><th>cup</th><th>as found<br>max |error|<br>kPa</th><th>as left<br>max |error|"
                "<br>kPa</th><th>U (k=2)<br>kPa</th><th>hysteresis<br>kPa</th><th>non-<br>linearity"
                "<br>kPa</th><th>repeat-<br>ability<br>kPa</th><th>as found</th><th>result</th></tr>")
        rows = []
        for c in doc["cups"]:
            rows.append(f"<tr><td class=n>{c['cup']}</td>"
                        f"<td class=n>{_num(c['as_found']['max_abs_error_kpa'])}</td>"
                        f"<td class=n>{_num(c['as_left']['max_abs_error_kpa'])}</td>"
                        f"<td class=n>{_num(c['as_left']['expanded_uncertainty_kpa'])}</td>"
                        f"<td class=n>{_num(c['hysteresis_kpa'])}</td>"
                        f"<td class=n>{_num(c['nonlinearity_kpa'])}</td>"
                        f"<td class=n>{_num(c['repeatability_kpa'])}</td>"
                        f"<td>{_verdict(c['as_found']['pass'])}</td>"
                        f"<td>{_verdict(c['result'])}</td></tr>")
        parts.append(f'<table width="100%" border="1" cellspacing="0" cellpadding="3">{head}'
                     f'{"".join(rows)}</table>')
        head = ("<tr><th>cup</th><th>c0, kPa</th><th>c1</th><th>c2, 1/kPa</th><th>order</th>"
                "<th>applied by</th></tr>")
        who = _e(item["calibration_applied_by"])
        rows = [f"<tr><td class=n>{c['cup']}</td><td class=n>{c['fit']['offset_kpa']:+.5f}</td>"
                f"<td class=n>{c['fit']['gain']:.6f}</td><td class=n>{c['fit']['c2_per_kpa']:.4g}</td>"
                f"<td class=n>{c['fit']['order']}</td><td>{who}</td></tr>" for c in doc["cups"]]
        parts.append("<p>New coefficients: suction = c0 + c1 &middot; raw + c2 &middot; raw&sup2; "
                     "(raw: the device's reading, kPa).</p>")
        parts.append(f'<table border="1" cellspacing="0" cellpadding="3">{head}{"".join(rows)}'
                     "</table>")
    for c in doc["cups"]:
        parts.append(f"<h3>Cup {c['cup']}</h3>")
        if images is not None:
            parts.append(f'<p><img src="{_e(images.get(str(c["cup"]), ""))}"></p>')
        else:
            parts.append(_calibration_plot(c, tol["kpa"]))
        parts.append(f"<p>Fit: {_e(c['fit']['reason'])}. Before: {_e(c['before']['basis'])}.</p>")
        parts.append(f"<p><b>As found</b> ({_e(c['as_found']['method'])}):</p>")
        parts.append(_points_table(c["as_found"], span))
        parts.append(f"<p><b>As left</b> ({_e(c['as_left']['method'])}):</p>")
        parts.append(_points_table(c["as_left"], span))
    if doc["aborted"] and doc["points"]:
        parts.append("<h3>Points taken before the abort</h3>")
        parts.append(_points_table({"expanded_uncertainty_kpa": None,
                                    "points": [dict(p, decision="-") for p in doc["points"]]}, span))
    if doc["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in doc["notes"])
                     + "</ul>")
    parts.append(f"<p>{_e(doc['statement'])}</p>")
    parts.append(_signatures(doc["technician"]))
    parts.append("</div></body></html>")
    return "\n".join(parts)


def _runhead(text: str, images: dict[str, str] | None) -> str:
    """The ID line a browser repeats on every printed page (CSS position:
    fixed); the PDF draws its own on each page instead."""
    if images is not None:
        return '<div class="page">'
    return f'<div class="runhead">{_e(text)}</div><div class="page">'


def _signatures(technician: str) -> str:
    line = "_" * 34
    return ('<table class="sign"><tr>'
            f"<td>Calibrated by: {_e(technician or '')}<br><br>{line}<br>signature, date</td>"
            f"<td>Authorised by (name, function):<br><br>{line}<br>signature, date</td>"
            "</tr></table>")


# --------------------------------------------------------------------------
# Pump-test report
# --------------------------------------------------------------------------

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def pumptest_document(run: Any, report_json: dict[str, Any]) -> dict[str, Any]:
    """The pump-test report document: the --json figures plus identity and traces."""
    info = run.info
    return dict(report_json, **{
        "format": "cupmon-pump-test-report", "format_version": 1,
        "title": "Pump test report", "report_id": run.report_id,
        "date": _iso(run.started_wall), "issued": _iso(run.finished_wall),
        "technician": run.technician,
        "item": {"device_serial": info.serial, "firmware": info.firmware_str,
                 "cups_on_device": info.cups, "cups_tested": run.cups, "source": run.source},
        "notes": list(run.notes), "traces": run.traces,
        "statement": "The results relate only to the item tested, under the conditions stated.",
    })


def _trace_plot(trace: dict[str, list[float]], title: str, hlines: Sequence[tuple[float, str]] = ()
                ) -> str:
    series = []
    cups = [k for k in trace if k.startswith("cup")]
    for i, k in enumerate(cups):
        series.append({"x": trace["t_s"], "y": trace[k], "label": k.removesuffix("_kpa"),
                       "color": _COLORS[i % len(_COLORS)], "marker": None})
    return svg_plot(series, x_label="time, s", y_label="suction, kPa", hlines=hlines, title=title)


_PLOTS = (("pumpdown", "Pump-down"), ("regulation", "Regulation in band"),
          ("leakdown", "Leak-down hold"), ("max_suction", "Maximum suction"))


def render_pumptest_html(doc: dict[str, Any], *, images: dict[str, str] | None = None) -> str:
    rid = doc["report_id"]
    item, crit = doc["item"], doc["criteria"]
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Pump test report "
             f"{_e(rid)}</title><style>{_CSS}</style></head><body>",
             _runhead(f'Pump test report {rid} - device {item["device_serial"]}', images),
             "<h1>Pump test report</h1>",
             _kv([("Report ID", f"<b>{_e(rid)}</b>"), ("Date", _e(doc["date"])),
                  ("Device serial", _e(item["device_serial"])), ("Firmware", _e(item["firmware"])),
                  ("Cups tested", _e(", ".join(map(str, item["cups_tested"])))),
                  ("Connection", _e(item["source"])),
                  ("Technician", _e(doc["technician"] or "-")),
                  ("Result", _verdict(doc["result"]) + (" (aborted)" if doc["aborted"] else ""))]),
             "<h2>Method and criteria</h2>",
             _kv([("Set-up", "cups sealed on a rigid test volume, tested at the same time"),
                  ("Pump-down", f"VENT, then START; time from the first REGULATING sample to the "
                   f"first reading at or above each target; pass within {crit['pumpdown_max_s']:g} s "
                   f"({_e(crit['pumpdown_source'])})"),
                  ("Regulation", f"{crit['regulate_s']:g} s in the {crit['band_low_kpa']:g}-"
                   f"{crit['band_high_kpa']:g} kPa band; peak-to-peak and standard deviation of "
                   f"the readings; pass when all stay within the band widened by "
                   f"{crit['band_margin_kpa']:g} kPa"),
                  ("Leak-down", f"STOP (pump off, valve closed), {crit['hold_settle_s']:g} s settle, "
                   f"{crit['hold_s']:g} s hold; ln(suction) fitted against time; leak "
                   f"Q = V dp/dt / p_amb with V = {crit['cup_volume_ml']:g} mL, p_amb = "
                   f"{crit['ambient_kpa']:g} kPa; pass when the loss &le; "
                   f"{crit['allowed_loss_pct']:.3g} % ({_e(crit['leak_source'])}, scaled to the hold)"),
                  ("Maximum suction", f"limit raised to {crit['max_limit_kpa']:g} kPa, pump run "
                   "until the reading settles; pass at or above "
                   f"{crit['max_suction_min_kpa']:g} kPa" if crit["max_suction"]
                   else "not measured")]),
             "<h2>Results</h2>"]
    head = ("<tr><th>cup</th>" + "".join(f"<th>0&rarr;{t:g} kPa<br>s</th>" for t in crit["targets_kpa"])
            + "<th>max suction<br>kPa</th><th>ripple pp<br>kPa</th><th>ripple sd<br>kPa</th>"
            "<th>decay<br>kPa/min</th><th>leak<br>mL/min</th><th>loss<br>%</th><th>result</th></tr>")
    rows = []
    for c in doc["cups"]:
        cells = "".join(f"<td class=n>{_num(c.get(f'pumpdown_s_to_{t:g}'), '.2f')}</td>"
                        for t in crit["targets_kpa"])
        rows.append(f"<tr><td class=n>{c['cup']}</td>{cells}"
                    f"<td class=n>{_num(c['max_suction_kpa'], '.2f')}</td>"
                    f"<td class=n>{_num(c['ripple_kpa_pp'], '.2f')}</td>"
                    f"<td class=n>{_num(c['ripple_kpa_sd'], '.3f')}</td>"
                    f"<td class=n>{_num(c['leakdown_kpa_per_min'], '.3g')}</td>"
                    f"<td class=n>{_num(c['leak_ml_per_min'], '.3g')}</td>"
                    f"<td class=n>{_num(c['leak_loss_pct'], '.3g')}</td>"
                    f"<td>{_verdict(c['pass'])}</td></tr>")
    parts.append(f'<table width="100%" border="1" cellspacing="0" cellpadding="3">{head}{"".join(rows)}</table>')
    for c in doc["cups"]:
        parts.append(f"<h3>Cup {c['cup']}: checks</h3>")
        chk = "".join(f"<tr><td>{_e(k['name'])}</td><td class=n>{_num(k['value'], '.4g')} {_e(k['unit'])}</td>"
                      f"<td class=n>{k['limit']:.4g}</td><td>{_e(k['criterion'])}</td>"
                      f"<td>{_verdict(k['passed'])}</td></tr>" for k in c["checks"])
        parts.append('<table width="100%" border="1" cellspacing="0" cellpadding="3"><tr><th>check</th>'
                     f"<th>measured</th><th>limit</th><th>criterion</th><th>result</th></tr>{chk}</table>")
    for key, title in _PLOTS:
        trace = doc["traces"].get(key)
        if not trace:
            continue
        parts.append(f"<h3>{_e(title)}</h3>")
        if images is not None:
            parts.append(f'<p><img src="{_e(images.get(key, ""))}"></p>')
        else:
            lines = [(crit["band_low_kpa"], "#999"), (crit["band_high_kpa"], "#999")] \
                if key == "regulation" else []
            parts.append(_trace_plot(trace, title, lines))
    if doc["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in doc["notes"])
                     + "</ul>")
    parts.append(f"<p>{_e(doc['statement'])}</p>")
    parts.append(_signatures(doc["technician"]))
    parts.append("</div></body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

_POINT_COLS = ("cup", "index", "series", "nominal_kpa", "reference_kpa", "indicated_kpa",
               "raw_kpa", "error_kpa", "sd_kpa", "n", "t0", "t1")


def calibration_csv(doc: dict[str, Any]) -> str:
    """Raw points: as found (and verification), one row per cup and point."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("certificate_id", "pass") + _POINT_COLS)
    for kind, pts in (("as_found", doc["points"]), ("verify", doc["verify_points"])):
        for p in pts:
            w.writerow((doc["certificate_id"], kind) + tuple(_csv_value(p[c]) for c in _POINT_COLS))
    return buf.getvalue()


def pumptest_csv(doc: dict[str, Any]) -> str:
    """One row per cup: every figure and the result."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [k for k in doc["cups"][0] if k != "checks"] if doc["cups"] else ["cup"]
    w.writerow(["report_id"] + cols)
    for c in doc["cups"]:
        w.writerow([doc["report_id"]] + [_csv_value(c.get(k)) for k in cols])
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return v


# --------------------------------------------------------------------------
# PDF (Qt, imported here only)
# --------------------------------------------------------------------------

def _ensure_qt_app() -> Any:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.instance() or QGuiApplication([])


def write_pdf(html_text: str, svgs: dict[str, str], path: Path, page_label: str) -> None:
    """Lay ``html_text`` out on A4 pages with ``page_label`` and "page i of n"
    on every page. ``svgs``: image name used in the HTML -> SVG text."""
    app = _ensure_qt_app()  # noqa: F841 - keeps the application alive while painting
    from PySide6.QtCore import QByteArray, QMarginsF, QRectF, QSizeF, Qt, QUrl
    from PySide6.QtGui import (
        QColor,
        QFont,
        QImage,
        QPageLayout,
        QPageSize,
        QPainter,
        QPdfWriter,
        QTextDocument,
    )
    from PySide6.QtSvg import QSvgRenderer

    writer = QPdfWriter(str(path))
    writer.setResolution(300)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)
    writer.setTitle(page_label)
    writer.setCreator("cupmon cupcal")
    rect = writer.pageLayout().paintRectPixels(writer.resolution())
    width, height = rect.width(), rect.height()
    head = int(writer.resolution() * 0.30)   # header band, device px
    foot = int(writer.resolution() * 0.25)
    body = height - head - foot

    doc = QTextDocument()
    doc.documentLayout().setPaintDevice(writer)
    font = QFont("Helvetica")
    font.setPointSizeF(9.0)
    doc.setDefaultFont(font)
    for name, svg in svgs.items():
        renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
        size = renderer.defaultSize()
        scale = 0.92 * width / max(size.width(), 1)
        img = QImage(int(size.width() * scale), int(size.height() * scale),
                     QImage.Format.Format_ARGB32)
        img.fill(QColor("white"))
        p = QPainter(img)
        renderer.render(p)
        p.end()
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), img)
        # Rich text sizes images in 96-dpi pixels on a 300-dpi page: give the
        # size explicitly, so the plot prints at full width and resolution.
        w96 = img.width() * 96.0 / writer.resolution()
        h96 = img.height() * 96.0 / writer.resolution()
        html_text = html_text.replace(f'src="{name}"',
                                      f'src="{name}" width="{w96:.0f}" height="{h96:.0f}"')
    doc.setHtml(html_text)
    doc.setPageSize(QSizeF(width, body))
    pages = max(doc.pageCount(), 1)

    painter = QPainter(writer)
    try:
        label_font = QFont("Helvetica")
        label_font.setPointSizeF(8.0)
        for i in range(pages):
            if i:
                writer.newPage()
            painter.save()
            painter.translate(0, head - i * body)
            doc.drawContents(painter, QRectF(0, i * body, width, body))
            painter.restore()
            painter.setFont(label_font)
            painter.setPen(QColor("#444"))
            painter.drawText(QRectF(0, 0, width, head * 0.8),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                             page_label)
            painter.drawText(QRectF(0, 0, width, head * 0.8),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                             f"page {i + 1} of {pages}")
            painter.drawLine(0, int(head * 0.85), width, int(head * 0.85))
            painter.drawText(QRectF(0, height - foot * 0.8, width, foot * 0.8),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                             "cupmon cupcal")
    finally:
        painter.end()


# --------------------------------------------------------------------------
# Writing the files
# --------------------------------------------------------------------------

def _write_formats(stem: Path, doc: dict[str, Any], formats: Sequence[str], csv_text: Any,
                   html: Any, pdf_plots: Any, pdf_title: str) -> dict[str, Path]:
    """Write ``doc`` as stem.json / .csv / .html / .pdf (those in ``formats``).
    ``csv_text(doc)`` and ``html(doc, images=None)`` render; ``pdf_plots()``
    returns ({png name: image}, {key: png name}) for the PDF's embedded plots."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "json" in formats:
        paths["json"] = _write(stem.with_suffix(".json"), json.dumps(strict_json(doc), indent=2,
                                                                     ensure_ascii=False) + "\n")
    if "csv" in formats:
        paths["csv"] = _write(stem.with_suffix(".csv"), csv_text(doc))
    if "html" in formats:
        paths["html"] = _write(stem.with_suffix(".html"), html(doc))
    if "pdf" in formats:
        plots, images = pdf_plots()
        paths["pdf"] = stem.with_suffix(".pdf")
        write_pdf(html(doc, images=images), plots, paths["pdf"], pdf_title)
    return paths


def write_calibration_certificate(doc: dict[str, Any], out_dir: str | Path,
                                  formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Write the certificate in ``formats`` into ``out_dir`` (created);
    returns {format: path}."""
    tol = doc["tolerance"]["kpa"]

    def plots() -> tuple[dict[str, Any], dict[str, str]]:
        pngs = {f"plot-cup{c['cup']}.png": _calibration_plot(c, tol) for c in doc["cups"]}
        return pngs, {str(c["cup"]): f"plot-cup{c['cup']}.png" for c in doc["cups"]}

    return _write_formats(Path(out_dir) / doc["certificate_id"], doc, formats, calibration_csv,
                          render_calibration_html, plots,
                          f"{doc['title']} {doc['certificate_id']} - "
                          f"{doc['item']['device_serial']}")


def write_pumptest_report(doc: dict[str, Any], out_dir: str | Path,
                          formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Write the pump-test report in ``formats`` into ``out_dir``; {format: path}."""
    crit = doc["criteria"]

    def plots() -> tuple[dict[str, Any], dict[str, str]]:
        pngs, images = {}, {}
        for key, title in _PLOTS:
            trace = doc["traces"].get(key)
            if trace:
                lines = [(crit["band_low_kpa"], "#999"), (crit["band_high_kpa"], "#999")] \
                    if key == "regulation" else []
                pngs[f"plot-{key}.png"] = _trace_plot(trace, title, lines)
                images[key] = f"plot-{key}.png"
        return pngs, images

    return _write_formats(Path(out_dir) / doc["report_id"], doc, formats, pumptest_csv,
                          render_pumptest_html, plots,
                          f"Pump test report {doc['report_id']} - {doc['item']['device_serial']}")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def parse_formats(text: str) -> tuple[str, ...]:
    """``"html,pdf"`` -> ("html", "pdf"); ``all`` -> every format."""
    items = tuple(s.strip().lower() for s in str(text).split(",") if s.strip())
    if items == ("all",):
        return FORMATS
    bad = [s for s in items if s not in FORMATS]
    if bad or not items:
        raise ValueError(f"--formats takes {', '.join(FORMATS)} or all, not {text!r}")
    return items
