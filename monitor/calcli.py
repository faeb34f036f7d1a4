"""``cupcal``: sensor calibration, pump tests and certificates for technicians.

    cupcal calibrate (--port URL | --sim [--sim-offset KPA] [--sim-gain G]) [options]
    cupcal pumptest  (--port URL | --sim SCENARIO) [options]
    cupcal zero      (--port URL | --sim [SCENARIO]) [--cups ...] [--vent] [--force]
    cupcal status    (--port URL | --sim [SCENARIO])
    cupcal history   SERIAL [--cup N]

Every command takes --db PATH. ``--json`` prints one JSON document on
stdout (prompts and progress go to stderr). Exit status: 0 pass / done;
1 fail, refused, aborted or a device problem; 2 bad flags. Errors are one
line. docs/technician.md describes the procedures.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import IO, Any, NoReturn

from monitor.jsonsafe import strict_json

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: How long a device may take to connect and say who it is (s).
CONNECT_TIMEOUT_S = 10.0


class UsageError(Exception):
    """Bad flags: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block.
        raise UsageError(f"{message} ({self.prog} --help shows the options)")


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------

def _positive(kind: type = float, zero_ok: bool = False):
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>= 0' if zero_ok else '> 0'}")
        return v
    return parse


def _device_args(p: argparse.ArgumentParser, sim_help: str, sim_nargs: str | None,
                 sim_default_speed: float = 10.0) -> None:
    src = p.add_argument_group("device (one of)")
    g = src.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", metavar="URL", help="serial device or pyserial URL of the device")
    if sim_nargs is None:
        g.add_argument("--sim", action="store_true", help=sim_help)
    else:
        g.add_argument("--sim", nargs=sim_nargs, const="calibration_rig", metavar="SCENARIO",
                       help=sim_help)
    src.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    sim = p.add_argument_group("simulator")
    sim.add_argument("--sim-cups", type=int, default=2, metavar="N", help="cups (default 2)")
    sim.add_argument("--sim-rate", type=int, default=100, metavar="HZ",
                     help="sample rate (default 100)")
    sim.add_argument("--sim-seed", type=int, default=0, metavar="N", help="seed (serial SIM-N)")
    sim.add_argument("--sim-speed", type=_positive(), default=sim_default_speed, metavar="X",
                     help=f"device seconds per wall second (default {sim_default_speed:g})")
    sim.add_argument("--sim-param", action="append", default=[], metavar="KEY=VALUE",
                     help="extra scenario parameter (repeatable)")
    p.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="session database (default: the user's data directory)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--connect-timeout", type=_positive(), default=CONNECT_TIMEOUT_S, metavar="S",
                   help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cupcal", description="Calibration, pump tests and certificates for "
                "cupmon devices (docs/technician.md).")
    sub = p.add_subparsers(dest="command", metavar="{calibrate,pumptest,zero,status,history}",
                           parser_class=_Parser)

    c = sub.add_parser("calibrate", help="multi-point calibration (EURAMET cg-17)",
                       description="Multi-point calibration after EURAMET cg-17: rising and "
                       "falling series, fit, as-found/as-left, certificate.")
    _device_args(c, "the built-in simulator's calibration rig", None)
    c.add_argument("--sim-offset", type=float, default=None, metavar="KPA",
                   help="simulator: sensor offset error, kPa")
    c.add_argument("--sim-gain", type=float, default=None, metavar="G",
                   help="simulator: sensor gain (1 = exact)")
    c.add_argument("--cups", default="all", metavar="all|1,2", help="cups to calibrate")
    c.add_argument("--points", default=None, metavar="LIST",
                   help="points in kPa suction (default 0,5,10,15,20,25,30)")
    c.add_argument("--no-falling", action="store_true", help="rising series only (not EURAMET)")
    c.add_argument("--repeats", type=int, default=0, metavar="N",
                   help="repeat cycles at mid-span and 0 for repeatability (default 0)")
    c.add_argument("--reference", default=None, metavar="manual|sim|URL",
                   help="reference values: typed (manual), the simulator's true pressure (sim), "
                   "or a gauge on a serial port/URL in text format (default: sim with --sim, "
                   "else manual)")
    c.add_argument("--reference-channel", type=int, default=1, metavar="N",
                   help="which value of the gauge's text lines (default 1)")
    c.add_argument("--reference-id", default="", metavar="ID", help="reference instrument ID")
    c.add_argument("--reference-cert", default="", metavar="NUMBER",
                   help="the reference's calibration certificate number")
    c.add_argument("--reference-uncertainty", type=_positive(zero_ok=True), default=None,
                   metavar="KPA", help="the reference's expanded uncertainty (k=2), kPa")
    c.add_argument("--tolerance", default="0.5", metavar="KPA|PCT%",
                   help="maximum permissible error: kPa (0.5) or %% of span (1%%); default 0.5")
    c.add_argument("--settle-band", type=_positive(), default=0.1, metavar="KPA",
                   help="settled: part means within this (default 0.1 kPa)")
    c.add_argument("--settle-time", type=_positive(), default=5.0, metavar="S",
                   help="... over this much time (default 5 s)")
    c.add_argument("--settle-timeout", type=_positive(), default=120.0, metavar="S",
                   help="give up on a point after this (default 120 s)")
    c.add_argument("--verify", dest="verify", action="store_true", default=None,
                   help="re-measure the rising series with the new coefficients "
                   "(default: when the bench is stepped automatically)")
    c.add_argument("--no-verify", dest="verify", action="store_false")
    c.add_argument("--quad-min-gain", type=_positive(zero_ok=True), default=0.05, metavar="KPA",
                   help="second order only if it lowers the largest residual this much")
    c.add_argument("--technician", default="", metavar="NAME")
    c.add_argument("--laboratory", default="", metavar="NAME")
    c.add_argument("--customer", default="", metavar="NAME")
    c.add_argument("--location", default="", metavar="TEXT")
    c.add_argument("--temperature", type=float, default=None, metavar="C",
                   help="ambient temperature, deg C")
    c.add_argument("--humidity", type=float, default=None, metavar="PCT",
                   help="relative humidity, %%")
    c.add_argument("--pressure", type=float, default=None, metavar="KPA",
                   help="ambient pressure, kPa absolute")
    c.add_argument("--due-months", type=int, default=12, metavar="N",
                   help="calibration interval (default 12 months)")
    c.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="where certificates go (default: next to the database)")
    c.add_argument("--formats", default="all", metavar="LIST",
                   help="html,pdf,json,csv or all (default all)")

    t = sub.add_parser("pumptest", help="pump-down, regulation, leak-down and maximum suction",
                       description="Pump tests, cups sealed on a rigid test volume.")
    _device_args(t, "simulator scenario (pump_test for a healthy unit)", "?")
    t.add_argument("--cups", default="all", metavar="all|1,2")
    t.add_argument("--hold", type=_positive(), default=60.0, metavar="S",
                   help="leak-down hold (default 60 s)")
    t.add_argument("--cup-volume", type=_positive(), default=100.0, metavar="ML",
                   help="cup (test) volume for the leak rate (default 100 mL)")
    t.add_argument("--ambient-pressure", type=_positive(), default=101.325, metavar="KPA",
                   help="ambient pressure for the leak rate (default 101.325 kPa)")
    t.add_argument("--regulate", type=_positive(), default=10.0, metavar="S",
                   help="regulation (ripple) window (default 10 s)")
    t.add_argument("--pumpdown-max", type=_positive(), default=5.0, metavar="S",
                   help="pass: each target within this (default 5 s)")
    t.add_argument("--max-loss", type=_positive(), default=10.0, metavar="PCT",
                   help="pass: loss at most this %% ... (default 10)")
    t.add_argument("--max-loss-per", type=_positive(), default=600.0, metavar="S",
                   help="... per this long, scaled to the hold (default 600 s)")
    t.add_argument("--no-max-suction", action="store_true", help="skip the maximum-suction test")
    t.add_argument("--max-limit", type=_positive(), default=60.0, metavar="KPA",
                   help="interlock limit during the maximum-suction test (default 60)")
    t.add_argument("--max-time", type=_positive(), default=30.0, metavar="S",
                   help="maximum-suction test time (default 30 s)")
    t.add_argument("--min-max-suction", type=_positive(), default=25.0, metavar="KPA",
                   help="pass: maximum suction at least this (default 25 kPa)")
    t.add_argument("--sim-start", type=_positive(zero_ok=True), default=None, metavar="S",
                   help="simulator: start at this device time (default: after the script)")
    t.add_argument("--technician", default="", metavar="NAME")
    t.add_argument("--report", type=Path, default=None, metavar="DIR")
    t.add_argument("--formats", default="all", metavar="LIST")

    z = sub.add_parser("zero", help="tare cups at ambient (checked first)",
                       description="Tare cups at ambient: only when each reads steady near zero.")
    _device_args(z, "simulator scenario (default calibration_rig)", "?")
    z.add_argument("--cups", default="all", metavar="all|1,2")
    z.add_argument("--vent", action="store_true", help="open the valves first")
    z.add_argument("--force", action="store_true", help="zero even a calibrated cup")
    z.add_argument("--max-offset", type=_positive(), default=2.0, metavar="KPA",
                   help="a cup at ambient reads within this of zero (default 2 kPa)")
    z.add_argument("--settle-band", type=_positive(), default=0.1, metavar="KPA")
    z.add_argument("--settle-time", type=_positive(), default=2.0, metavar="S")

    s = sub.add_parser("status", help="the calibration in force for a connected device",
                       description="Connect and show which calibration is in force per cup.")
    _device_args(s, "simulator scenario (default calibration_rig)", "?")

    h = sub.add_parser("history", help="calibration records of a device",
                       description="Calibration records of a device, newest first.")
    h.add_argument("serial", metavar="SERIAL")
    h.add_argument("--cup", type=int, default=None, metavar="N")
    h.add_argument("--db", type=Path, default=None, metavar="PATH")
    h.add_argument("--json", action="store_true")
    return p


# --------------------------------------------------------------------------
# Console I/O
# --------------------------------------------------------------------------

class ConsolePrompter:
    """Guidance on stderr (stdout stays for --json); answers from stdin."""

    def __init__(self, out: IO[str] | None = None, inp: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self.inp = inp or sys.stdin

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def ask(self, text: str) -> str | None:
        print(text, end="", file=self.out, flush=True)
        line = self.inp.readline()
        if not line:
            print(file=self.out, flush=True)
            return None
        return line.rstrip("\r\n")


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------

def _sim_params(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in args.sim_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--sim-param takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def _sim_url(args: argparse.Namespace, scenario: str, extra: dict[str, object]) -> str:
    from sim.protocol_sim import make_url  # importing sim registers sim://

    if not 1 <= args.sim_cups <= 16:
        raise UsageError("--sim-cups must be 1..16")
    params: dict[str, object] = {"cups": args.sim_cups, "rate": args.sim_rate,
                                 "seed": args.sim_seed, "speed": args.sim_speed}
    params.update(extra)
    params.update(_sim_params(args))
    return make_url(scenario, **params)


class Device:
    """A connected device: link, sampler, and the simulator handle if any."""

    def __init__(self, url: str, sim: bool, baud: int, timeout: float, keep_s: float = 300.0):
        from firmware_bridge.link import SerialLink
        from monitor.calibration import Sampler, SimHandle

        self.link = SerialLink(url, baudrate=baud)
        self.sampler = Sampler(keep_s)
        self.link.add_listener(self.sampler)
        self.link.start()  # LinkError (one line) when the port cannot be opened
        self.handle = SimHandle.of(self.link) if sim else None
        if not self.link.wait_connected(timeout) or self.link.info is None:
            self.link.stop()
            raise RuntimeError(f"no cupmon device answered on {url} within {timeout:g} s "
                               "(a text-format sketch cannot be calibrated by cupcal)")
        if not self.sampler.wait_newer(None, timeout):
            self.link.stop()
            raise RuntimeError(f"{url} sends no samples")

    def close(self) -> None:
        self.link.stop()


def _open_device(args: argparse.Namespace, scenario: str | None,
                 extra: dict[str, object] | None = None) -> Device:
    if args.port:
        return Device(args.port, False, args.baud, args.connect_timeout)
    assert scenario is not None
    return Device(_sim_url(args, scenario, extra or {}), True, args.baud, args.connect_timeout)


def _report_dir(args: argparse.Namespace) -> Path:
    if args.report is not None:
        return args.report
    from monitor.store import default_db_path

    base = args.db.parent if args.db is not None else default_db_path().parent
    return base / "certificates"


def _fmt_time(t: float | None) -> str:
    return "-" if t is None else f"{_dt.datetime.fromtimestamp(t):%Y-%m-%d %H:%M}"


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def cmd_calibrate(args: argparse.Namespace, ui: ConsolePrompter) -> int:
    from monitor import calibration as cal
    from monitor.certificate import (
        calibration_document,
        new_id,
        parse_formats,
        write_calibration_certificate,
    )

    try:
        tolerance = cal.Tolerance.parse(args.tolerance)
        points = cal.parse_points(args.points) if args.points else cal.DEFAULT_POINTS_KPA
        settle = cal.SettleCriteria(args.settle_band, args.settle_time,
                                    timeout_s=args.settle_timeout)
        formats = parse_formats(args.formats)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.repeats < 0 or args.due_months < 1:
        raise UsageError("--repeats must be >= 0 and --due-months >= 1")
    if (args.sim_offset is not None or args.sim_gain is not None) and not args.sim:
        raise UsageError("--sim-offset/--sim-gain need --sim")
    reference = args.reference or ("sim" if args.sim else "manual")
    if reference == "sim" and not args.sim:
        raise UsageError("--reference sim needs --sim (the simulator's true pressure)")
    extra: dict[str, object] = {}
    if args.sim_offset is not None:
        extra["sensor_offset_kpa"] = args.sim_offset
    if args.sim_gain is not None:
        extra["sensor_gain"] = args.sim_gain
    ambient = {k: v for k, v in (("temperature_c", args.temperature),
                                 ("humidity_pct", args.humidity),
                                 ("pressure_kpa", args.pressure)) if v is not None}
    ref_u = args.reference_uncertainty if args.reference_uncertainty is not None else 0.0
    options = cal.CalibrationOptions(
        points=points, falling=not args.no_falling, repeats=args.repeats, tolerance=tolerance,
        settle=settle, verify=args.verify, reference_u_kpa=ref_u,
        min_gain_kpa=args.quad_min_gain, technician=args.technician,
        reference_id=args.reference_id or ("SIMULATOR" if reference == "sim" else ""),
        reference_cert=args.reference_cert, ambient=ambient, due_months=args.due_months,
        laboratory=args.laboratory, customer=args.customer, location=args.location)

    dev = _open_device(args, "calibration_rig" if args.sim else None, extra)
    gauge = None
    try:
        info = dev.link.info
        assert info is not None
        try:
            options.cups = cal.parse_cups(args.cups, info.cups)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.reference_uncertainty is None and reference != "sim":
            ui.say("warning: --reference-uncertainty not given: 0 kPa assumed; give the "
                   "reference's expanded uncertainty (k=2) from its certificate")
        bench: Any = cal.SimBench(dev.handle) if dev.handle is not None else cal.OperatorBench()
        if reference == "sim":
            ref: Any = cal.SimReference(dev.handle)
        elif reference == "manual":
            ref = cal.ManualReference()
            ui.say(cal.MANUAL_HELP[0].upper() + cal.MANUAL_HELP[1:] + ".")
        else:
            gauge = _open_gauge(reference, args.connect_timeout)
            ref = cal.GaugeReference(gauge[0], gauge[1], args.reference_channel)
        run = cal.run_calibration(dev.link, dev.sampler, bench, ref, options, ui, db=args.db)
    finally:
        if gauge is not None:
            gauge[0].stop()
        dev.close()

    run.certificate_id = new_id("CAL", run.info.serial, run.started_wall)
    cal.store_run(run, args.db)
    doc = calibration_document(run)
    paths = write_calibration_certificate(doc, _report_dir(args), formats)
    main_file = paths.get("html") or paths.get("pdf") or next(iter(paths.values()), None)
    if args.json:
        out = {"device": run.info.serial, "result": run.result, "aborted": run.aborted,
               "certificate": str(main_file) if main_file else None,
               "certificate_id": run.certificate_id,
               "files": {k: str(v) for k, v in paths.items()},
               "calibration_ids": {str(k): v for k, v in run.calibration_ids.items()},
               "cups": [_cup_json(r) for r in run.results] if run.results else
               [{"cup": c, "points": [p.to_dict() for p in run.points if p.cup == c]}
                for c in run.cups]}
        print(json.dumps(strict_json(out), indent=2))
    else:
        _print_calibration(run, paths)
    return EXIT_OK if run.passed else EXIT_FAIL


def _open_gauge(url: str, timeout: float) -> tuple[Any, Any]:
    from firmware_bridge.link import SerialLink
    from monitor.calibration import Sampler

    if "://" not in url and not url.startswith(("/", "COM")):
        raise UsageError(f"--reference takes manual, sim or a port/URL, not {url!r}")
    if url.startswith("sim://"):
        import sim  # noqa: F401 - registers sim://
    link = SerialLink(url, mode="text")
    sampler = Sampler()
    link.add_listener(sampler)
    link.start()
    if not sampler.wait_newer(None, timeout):
        link.stop()
        raise RuntimeError(f"the reference gauge on {url} sends no readings")
    return link, sampler


def _cup_json(r: Any) -> dict[str, Any]:
    d = r.to_dict()
    return {"cup": r.cup, "result": r.result, "pass": r.passed,
            "as_found": {"max_abs_error_kpa": r.as_found.max_abs_error_kpa,
                         "pass": r.as_found.passed,
                         "expanded_uncertainty_kpa": r.as_found.uncertainty.expanded},
            "as_left": {"max_abs_error_kpa": r.as_left.max_abs_error_kpa, "pass": r.as_left.passed,
                        "method": r.as_left.method, "verified": r.verified,
                        "expanded_uncertainty_kpa": r.as_left.uncertainty.expanded,
                        "computed_max_abs_error_kpa": r.as_left_computed.max_abs_error_kpa},
            "fit": d["fit"], "hysteresis_kpa": r.hysteresis_kpa,
            "nonlinearity_kpa": r.nonlinearity_kpa, "repeatability_kpa": r.repeatability_kpa,
            "points": d["points"],
            "verify_points": [p.to_dict() for p in r.as_left.points] if r.verified else []}


def _print_calibration(run: Any, paths: dict[str, Path]) -> None:
    print(f"Calibration of {run.info.serial}: {run.result}"
          + (f" ({run.abort_reason})" if run.aborted else ""))
    for r in run.results:
        f = r.fit.poly
        print(f"  cup {r.cup}: as found max {r.as_found.max_abs_error_kpa:.3f} kPa "
              f"({'pass' if r.as_found.passed else 'fail'}), as left max "
              f"{r.as_left.max_abs_error_kpa:.3f} kPa +- {r.as_left.uncertainty.expanded:.3f} "
              f"({'re-measured' if r.verified else 'computed'}), hysteresis "
              f"{_n(r.hysteresis_kpa)} kPa; c0 {f.c0:+.4f} c1 {f.c1:.5f} c2 {f.c2:.3g} -> {r.result}")
    if run.aborted:
        taken = len({p.index for p in run.points})
        print(f"  {taken} point(s) taken before the abort are kept (certificate, CSV, JSON, "
              "database)")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    if run.calibration_ids:
        print(f"  recorded as calibration(s) {', '.join(map(str, run.calibration_ids.values()))}")


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def cmd_pumptest(args: argparse.Namespace, ui: ConsolePrompter) -> int:
    from monitor import pumptest as pt
    from monitor.cal_apply import calibration_status
    from monitor.calibration import parse_cups
    from monitor.certificate import new_id, parse_formats, pumptest_document, write_pumptest_report

    try:
        formats = parse_formats(args.formats)
        crit = pt.PumpTestCriteria(
            pumpdown_max_s=args.pumpdown_max, regulate_s=args.regulate, hold_s=args.hold,
            max_loss_pct=args.max_loss, max_loss_per_s=args.max_loss_per,
            max_suction=not args.no_max_suction, max_limit_kpa=args.max_limit,
            max_time_s=args.max_time, max_suction_min_kpa=args.min_max_suction,
            cup_volume_ml=args.cup_volume, ambient_kpa=args.ambient_pressure)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.sim_start is not None and not args.sim:
        raise UsageError("--sim-start needs --sim")
    scenario = args.sim if args.sim else None
    if args.sim == "calibration_rig":
        scenario = "pump_test"  # a bare --sim: the healthy test volume
    dev = _open_device(args, scenario)
    try:
        info = dev.link.info
        assert info is not None
        try:
            cups = parse_cups(args.cups, info.cups)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        status, polys = calibration_status(info, args.db)
        start = args.sim_start
        if dev.handle is not None and start is None:
            start = dev.handle.script_end_s() + 1.0
        run = pt.run_pumptest(dev.link, dev.sampler, cups, crit, ui,
                              polys={} if status.cal_on_device else polys,
                              technician=args.technician, start_after_s=start)
        run.notes += [line.strip() for line in status.lines()[1:]]
    finally:
        dev.close()
    run.report_id = new_id("PT", run.info.serial, run.started_wall)
    doc = pumptest_document(run, pt.pumptest_json(run))
    paths = write_pumptest_report(doc, _report_dir(args), formats)
    main_file = paths.get("html") or paths.get("pdf") or next(iter(paths.values()), None)
    if args.json:
        out = pt.pumptest_json(run, str(main_file) if main_file else None)
        out["files"] = {k: str(v) for k, v in paths.items()}
        print(json.dumps(strict_json(out), indent=2))
    else:
        print(f"Pump test of {run.info.serial}: {run.result}")
        for r in run.results:
            pd = ", ".join(f"0->{k:g} kPa {_n(v)} s" for k, v in sorted(r.pumpdown_s.items()))
            print(f"  cup {r.cup}: {pd}; max {_n(r.max_suction_kpa)} kPa; ripple "
                  f"{_n(r.ripple_kpa_pp)} kPa pp; leak-down {_n(r.leakdown_kpa_per_min)} kPa/min "
                  f"= {_n(r.leak_ml_per_min)} mL/min, loss {_n(r.leak_loss_pct)} % -> "
                  f"{'PASS' if r.passed else 'FAIL'}")
            for c in r.checks:
                if not c.passed:
                    print(f"    failed: {c.criterion} (measured {_n(c.value)} {c.unit})")
        for kind, path in paths.items():
            print(f"  {kind}: {path}")
    return EXIT_OK if run.passed else EXIT_FAIL


def cmd_zero(args: argparse.Namespace, ui: ConsolePrompter) -> int:
    from monitor.calibration import CalibrationError, SettleCriteria, parse_cups, zero_cups

    dev = _open_device(args, args.sim)
    try:
        info = dev.link.info
        assert info is not None
        try:
            cups = parse_cups(args.cups, info.cups)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        settle = SettleCriteria(args.settle_band, args.settle_time, timeout_s=30.0)
        try:
            res = zero_cups(dev.link, dev.sampler, cups, settle=settle, max_kpa=args.max_offset,
                            vent=args.vent, force=args.force, db=args.db)
        except CalibrationError as exc:
            if args.json:
                print(json.dumps({"device": info.serial, "zeroed": False, "error": str(exc)}))
            print(f"cupcal: {exc}", file=sys.stderr)
            return EXIT_FAIL
    finally:
        dev.close()
    if args.json:
        print(json.dumps(strict_json({"device": info.serial, "zeroed": True,
                                  "cups": [r.to_dict() for r in res]}), indent=2))
    else:
        for r in res:
            print(f"cup {r.cup}: read {r.before_kpa:+.3f} kPa at ambient, zeroed; now "
                  f"{_n(r.after_kpa)} kPa")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, ui: ConsolePrompter) -> int:
    from monitor.cal_apply import calibration_status

    dev = _open_device(args, args.sim)
    try:
        status, _ = calibration_status(dev.link.info, args.db)
    finally:
        dev.close()
    if args.json:
        print(json.dumps(strict_json(status.to_dict()), indent=2))
    else:
        print("\n".join(status.lines()))
    return EXIT_OK if status.ok else EXIT_FAIL


def cmd_history(args: argparse.Namespace, ui: ConsolePrompter) -> int:
    from monitor.cal_apply import in_force
    from monitor.store import Store, default_db_path

    path = args.db or default_db_path()
    if not Path(path).exists():
        print(f"cupcal: no database at {path}", file=sys.stderr)
        return EXIT_FAIL
    with Store(path, create=False) as store:
        rows = store.list_calibrations(args.serial, args.cup)
    cups = sorted({r["cup"] for r in rows})
    force = {rec["id"] for rec in in_force(path, args.serial, cups).values()}
    if args.json:
        print(json.dumps(strict_json({"device": args.serial, "calibrations": [
            dict(r, in_force=r["id"] in force) for r in rows]}), indent=2))
        return EXIT_OK
    if not rows:
        print(f"no calibrations of {args.serial}")
        return EXIT_OK
    print(f"{'id':>4} {'date':16} {'cup':>3} {'result':7} {'found':>7} {'left':>7} "
          f"{'due':16} {'state':10} technician / reference / certificate")
    import time as _time
    for r in rows:
        found = (r["as_found"] or {}).get("max_abs_error_kpa") if isinstance(r["as_found"], dict) else None
        left = (r["as_left"] or {}).get("max_abs_error_kpa") if isinstance(r["as_left"], dict) else None
        state = "in force" if r["id"] in force else ("invalid" if not r["valid"] else "superseded")
        if r["id"] in force and r["due_wall"] is not None and r["due_wall"] <= _time.time():
            state = "OVERDUE"
        print(f"{r['id']:>4} {_fmt_time(r['created_wall']):16} {r['cup']:>3} {r['result']:7} "
              f"{_n(found):>7} {_n(left):>7} {_fmt_time(r['due_wall']):16} {state:10} "
              f"{r['technician'] or '-'} / {r['reference_id'] or '-'} "
              f"{r['reference_cert'] or ''} / {r['certificate_id'] or '-'}")
    return EXIT_OK


COMMANDS = {"calibrate": cmd_calibrate, "pumptest": cmd_pumptest, "zero": cmd_zero,
            "status": cmd_status, "history": cmd_history}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if not args.command:
            raise UsageError("give a command: calibrate, pumptest, zero, status or history")
        return COMMANDS[args.command](args, ConsolePrompter())
    except UsageError as exc:
        print(f"cupcal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cupcal: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # one line, never a traceback
        from monitor.errors import user_message

        name = type(exc).__name__
        msg = str(exc).strip().splitlines()[0] if name in ("CalibrationError", "PumpTestError",
                                                           "CalibrationAborted", "RuntimeError",
                                                           "StoreError") and str(exc).strip() \
            else user_message(exc)
        print(f"cupcal: {msg}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
