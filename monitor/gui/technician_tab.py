"""The Technician tab: zero, calibration and pump tests from the window.

It drives the very implementations ``cupcal`` uses (``monitor.calibration``,
``monitor.pumptest``, ``monitor.certificate``) on a worker thread with its
own connection to the device; the GUI thread only shows what the worker
says (queued signals) and hands back the technician's answers. The current
instruction is shown large; a question (manual reference entry) enables the
answer field. Abort stops the procedure, keeping the points taken.

``install(window)`` adds the tab to a :class:`~monitor.gui.main_window.MainWindow`
(the window calls it when this module exists).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from monitor.errors import user_message

#: The tab's own default device: the simulated calibration rig with a sensor
#: that needs calibrating (offset 1.2 kPa, gain +5 %), 20x real time.
DEFAULT_URL = ("sim://calibration_rig?cups=2&speed=20&sensor_offset_kpa=1.2&sensor_gain=1.05")
REFERENCES = (("sim", "Simulator true pressure (sim:// only; not traceable)"),
              ("manual", "Reference gauge read by the technician (type its value)"),
              ("gauge", "Reference gauge on a serial port (text format)"))
CONNECT_TIMEOUT_S = 10.0


class _Bridge(QtCore.QObject):
    """Signals from the worker thread to the GUI thread (queued)."""

    said = QtCore.Signal(str)
    asked = QtCore.Signal(str)
    finished = QtCore.Signal(object)


class GuiPrompter:
    """The procedure's Prompter for the tab: lines and questions go to the GUI
    as signals; an answer comes back through a queue (None = abort)."""

    def __init__(self, bridge: _Bridge, stop: threading.Event) -> None:
        self.bridge, self.stop = bridge, stop
        self.answers: queue.Queue[str | None] = queue.Queue()

    def say(self, text: str) -> None:
        self.bridge.said.emit(text)

    def ask(self, text: str) -> str | None:
        self.bridge.asked.emit(text)
        while not self.stop.is_set():
            try:
                return self.answers.get(timeout=0.1)
            except queue.Empty:
                continue
        return None


class TechnicianTab(QtWidgets.QWidget):
    """Zero / Calibrate / Pump test on a device, with on-screen guidance.

    ``db``: the session database (calibrations are recorded there and apply
    on the monitor's next connect); ``report_dir``: where certificates go
    (default: ``certificates`` next to the database)."""

    #: A job ended: the result dict (kind, result, paths, error ...).
    jobFinished = QtCore.Signal(object)

    def __init__(self, db: str | Path | None = None, report_dir: str | Path | None = None,
                 parent: QtWidgets.QWidget | None = None,
                 db_provider: Callable[[], Any] | None = None) -> None:
        super().__init__(parent)
        from monitor.store import default_db_path

        self._db = Path(db) if db else default_db_path()
        self._db_provider = db_provider
        self.report_dir = Path(report_dir) if report_dir else None
        self.bridge = _Bridge(self)
        self.stop_event = threading.Event()
        self.prompter: GuiPrompter | None = None
        self.worker: threading.Thread | None = None
        self.last_result: dict[str, Any] | None = None
        self._build()
        self.bridge.said.connect(self._on_said)
        self.bridge.asked.connect(self._on_asked)
        self.bridge.finished.connect(self._on_finished)
        self._set_busy(False)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        lay = QtWidgets.QVBoxLayout(self)
        form = QtWidgets.QGridLayout()
        self.url = QtWidgets.QLineEdit(DEFAULT_URL)
        self.url.setToolTip("Device port or URL: /dev/ttyACM0, socket://host:port, sim://...")
        self.cups = QtWidgets.QLineEdit("all")
        self.technician = QtWidgets.QLineEdit()
        self.reference = QtWidgets.QComboBox()
        for key, text in REFERENCES:
            self.reference.addItem(text, key)
        self.gauge_url = QtWidgets.QLineEdit()
        self.gauge_url.setPlaceholderText("gauge port, e.g. /dev/ttyUSB1")
        self.reference_id = QtWidgets.QLineEdit()
        self.reference_cert = QtWidgets.QLineEdit()
        self.reference_u = _spin(0.0, 0.0, 5.0, 0.005, 3, " kPa")
        self.points = QtWidgets.QLineEdit("0,5,10,15,20,25,30")
        self.tolerance = QtWidgets.QLineEdit("0.5")
        self.tolerance.setToolTip("kPa (0.5) or % of span (1%)")
        self.settle_band = _spin(0.1, 0.01, 5.0, 0.01, 2, " kPa")
        self.settle_time = _spin(5.0, 0.2, 120.0, 0.5, 1, " s")
        self.hold = _spin(60.0, 1.0, 3600.0, 10.0, 0, " s")
        self.cup_volume = _spin(100.0, 1.0, 5000.0, 10.0, 0, " mL")
        rows = [("Device", self.url, "Cups", self.cups),
                ("Technician", self.technician, "Reference", self.reference),
                ("Reference ID", self.reference_id, "Gauge port", self.gauge_url),
                ("Its certificate", self.reference_cert, "Its uncertainty (k=2)", self.reference_u),
                ("Points (kPa)", self.points, "Tolerance", self.tolerance),
                ("Settle band", self.settle_band, "Settle time", self.settle_time),
                ("Leak-down hold", self.hold, "Cup volume", self.cup_volume)]
        for r, (a, wa, b, wb) in enumerate(rows):
            form.addWidget(QtWidgets.QLabel(a), r, 0)
            form.addWidget(wa, r, 1)
            form.addWidget(QtWidgets.QLabel(b), r, 2)
            form.addWidget(wb, r, 3)
        lay.addLayout(form)

        buttons = QtWidgets.QHBoxLayout()
        self.zero_button = QtWidgets.QPushButton("Zero")
        self.zero_button.setToolTip("Tare the cups at ambient (checked first: steady, near 0)")
        self.calibrate_button = QtWidgets.QPushButton("Calibrate")
        self.pumptest_button = QtWidgets.QPushButton("Pump test")
        self.pumptest_button.setToolTip("Cups on a rigid test volume, never on a person")
        self.abort_button = QtWidgets.QPushButton("Abort")
        self.abort_button.setToolTip("Stop; the points taken so far are kept")
        for b in (self.zero_button, self.calibrate_button, self.pumptest_button,
                  self.abort_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay.addLayout(buttons)

        self.instruction = QtWidgets.QLabel("Choose the device and press Calibrate, "
                                            "Pump test or Zero.")
        self.instruction.setWordWrap(True)
        font = self.instruction.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.instruction.setFont(font)
        self.instruction.setMinimumHeight(60)
        lay.addWidget(self.instruction)

        answer_row = QtWidgets.QHBoxLayout()
        self.answer = QtWidgets.QLineEdit()
        self.answer.setPlaceholderText("reference reading in kPa, or c VALUE / r / s / a")
        self.answer_button = QtWidgets.QPushButton("Enter")
        answer_row.addWidget(self.answer, 1)
        answer_row.addWidget(self.answer_button)
        lay.addLayout(answer_row)

        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        lay.addWidget(self.log, 1)
        self.result = QtWidgets.QLabel("")
        self.result.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.result.setOpenExternalLinks(True)
        self.result.setWordWrap(True)
        lay.addWidget(self.result)

        self.zero_button.clicked.connect(lambda: self.start("zero"))
        self.calibrate_button.clicked.connect(lambda: self.start("calibrate"))
        self.pumptest_button.clicked.connect(lambda: self.start("pumptest"))
        self.abort_button.clicked.connect(self.abort)
        self.answer_button.clicked.connect(self._send_answer)
        self.answer.returnPressed.connect(self._send_answer)

    # --------------------------------------------------------------- actions
    @property
    def db(self) -> Path:
        """The session database: the window's current one when installed there."""
        if self._db_provider is not None:
            value = self._db_provider()
            if value:
                return Path(value)
        return self._db

    @property
    def busy(self) -> bool:
        return self.worker is not None and self.worker.is_alive()

    def start(self, kind: str) -> bool:
        """Start ``kind`` ("calibrate", "pumptest", "zero") on a worker thread;
        False (and a line saying why) if the settings are wrong or a job runs."""
        if self.busy:
            return False
        try:
            params = self._params(kind)
        except ValueError as exc:
            self._show_result(f"<b>Not started:</b> {_esc(str(exc))}", "#b71c1c")
            return False
        self.stop_event = threading.Event()
        self.prompter = GuiPrompter(self.bridge, self.stop_event)
        self.log.clear()
        self.result.clear()
        self.last_result = None
        self.instruction.setText({"calibrate": "Calibrating: follow the instructions here.",
                                  "pumptest": "Pump test: cups sealed on a rigid test volume.",
                                  "zero": "Zero: cups must be open to ambient."}[kind])
        self.worker = threading.Thread(target=self._run_job, args=(kind, params),
                                       name=f"technician-{kind}", daemon=True)
        self._set_busy(True)
        self.worker.start()
        return True

    def abort(self) -> None:
        """Stop the running job; points taken are kept."""
        self.stop_event.set()
        if self.prompter is not None:
            self.prompter.answers.put(None)
        self.instruction.setText("Aborting ...")

    def answer_question(self, text: str) -> None:
        """Hand ``text`` to the procedure's pending question."""
        if self.prompter is not None:
            self.log.appendPlainText(f"> {text}")
            self.prompter.answers.put(text)
        self.answer.clear()
        self.answer.setEnabled(False)
        self.answer_button.setEnabled(False)

    def _send_answer(self) -> None:
        if self.answer.isEnabled():
            self.answer_question(self.answer.text())

    def shutdown(self, timeout: float = 10.0) -> None:
        """Abort and wait for the worker (window closing, tests)."""
        if self.busy:
            self.abort()
            assert self.worker is not None
            self.worker.join(timeout)

    # ----------------------------------------------------------- GUI updates
    def _set_busy(self, busy: bool) -> None:
        for b in (self.zero_button, self.calibrate_button, self.pumptest_button):
            b.setEnabled(not busy)
        self.abort_button.setEnabled(busy)
        if not busy:
            self.answer.setEnabled(False)
            self.answer_button.setEnabled(False)

    def _on_said(self, text: str) -> None:
        self.log.appendPlainText(text)
        if not text.startswith("Point "):
            self.instruction.setText(text)

    def _on_asked(self, text: str) -> None:
        self.instruction.setText(text.rstrip(": "))
        self.log.appendPlainText(text)
        self.answer.setEnabled(True)
        self.answer_button.setEnabled(True)
        self.answer.setFocus()

    def _on_finished(self, res: dict[str, Any]) -> None:
        self.last_result = res
        self._set_busy(False)
        if res.get("error"):
            self.instruction.setText("Stopped.")
            self._show_result(f"<b>{_esc(res['kind'])} failed:</b> {_esc(res['error'])}",
                              "#b71c1c")
        else:
            ok = res.get("result") == "PASS"
            text = f"<b>{_esc(res['kind'])}: {_esc(res.get('result', ''))}</b>"
            if res.get("aborted"):
                text += " (aborted; points kept)"
            for line in res.get("lines", []):
                text += f"<br>{_esc(line)}"
            for kind, path in res.get("paths", {}).items():
                text += f'<br>{kind}: <a href="{Path(path).as_uri()}">{_esc(str(path))}</a>'
            self.instruction.setText("Done.")
            self._show_result(text, "#1e7d32" if ok else "#b71c1c")
        self.jobFinished.emit(res)

    def _show_result(self, html: str, color: str) -> None:
        self.result.setStyleSheet(f"color: {color};")
        self.result.setText(html)

    # ------------------------------------------------------------ the worker
    def _params(self, kind: str) -> dict[str, Any]:
        """Read and check the settings on the GUI thread (ValueError: one line)."""
        from monitor.calibration import SettleCriteria, Tolerance, parse_points

        url = self.url.text().strip()
        if not url:
            raise ValueError("give the device's port or URL")
        ref = self.reference.currentData()
        if kind == "calibrate" and ref == "sim" and not url.startswith("sim://"):
            raise ValueError("the simulator's true pressure needs a sim:// device; choose "
                             "another reference")
        if kind == "calibrate" and ref == "gauge" and not self.gauge_url.text().strip():
            raise ValueError("give the reference gauge's port")
        return {"url": url, "cups": self.cups.text().strip() or "all",
                "technician": self.technician.text().strip(), "reference": ref,
                "gauge_url": self.gauge_url.text().strip(),
                "reference_id": self.reference_id.text().strip(),
                "reference_cert": self.reference_cert.text().strip(),
                "reference_u": self.reference_u.value(),
                "points": parse_points(self.points.text()),
                "tolerance": Tolerance.parse(self.tolerance.text()),
                "settle": SettleCriteria(self.settle_band.value(), self.settle_time.value()),
                "hold": self.hold.value(), "cup_volume": self.cup_volume.value()}

    def _run_job(self, kind: str, p: dict[str, Any]) -> None:
        res: dict[str, Any] = {"kind": kind}
        dev = None
        try:
            dev = _Device(p["url"])
            res.update(getattr(self, f"_job_{kind}")(dev, p))
        except Exception as exc:  # shown as one line, never raised into Qt
            res["error"] = _one_line(exc)
        finally:
            if dev is not None:
                dev.close()
        try:
            self.bridge.finished.emit(res)
        except RuntimeError:  # the tab was deleted meanwhile
            pass

    def _reports(self) -> Path:
        return self.report_dir or self.db.parent / "certificates"

    def _job_calibrate(self, dev: _Device, p: dict[str, Any]) -> dict[str, Any]:
        from monitor import calibration as cal
        from monitor.certificate import calibration_document, new_id, write_calibration_certificate

        assert self.prompter is not None
        info = dev.info
        opts = cal.CalibrationOptions(
            cups=cal.parse_cups(p["cups"], info.cups), points=p["points"],
            tolerance=p["tolerance"], settle=p["settle"], reference_u_kpa=p["reference_u"],
            technician=p["technician"], reference_cert=p["reference_cert"],
            reference_id=p["reference_id"] or ("SIMULATOR" if p["reference"] == "sim" else ""))
        bench: Any = cal.SimBench(dev.handle) if dev.handle is not None else cal.OperatorBench()
        gauge = None
        try:
            if p["reference"] == "sim":
                ref: Any = cal.SimReference(dev.handle)
            elif p["reference"] == "manual":
                ref = cal.ManualReference()
                self.prompter.say(cal.MANUAL_HELP[0].upper() + cal.MANUAL_HELP[1:] + ".")
            else:
                gauge = _Device(p["gauge_url"], text=True)
                ref = cal.GaugeReference(gauge.link, gauge.sampler)
            run = cal.run_calibration(dev.link, dev.sampler, bench, ref, opts, self.prompter,
                                      self.stop_event, db=self.db)
        finally:
            if gauge is not None:
                gauge.close()
        run.certificate_id = new_id("CAL", info.serial, run.started_wall)
        cal.store_run(run, self.db)
        paths = write_calibration_certificate(calibration_document(run), self._reports())
        lines = [f"cup {r.cup}: as found {r.as_found.max_abs_error_kpa:.3f} kPa, as left "
                 f"{r.as_left.max_abs_error_kpa:.3f} kPa -> {r.result}" for r in run.results]
        return {"result": run.result, "aborted": run.aborted, "lines": lines,
                "paths": {k: str(v) for k, v in paths.items()},
                "certificate_id": run.certificate_id, "run": run}

    def _job_pumptest(self, dev: _Device, p: dict[str, Any]) -> dict[str, Any]:
        from monitor import pumptest as pt
        from monitor.cal_apply import calibration_status
        from monitor.calibration import parse_cups
        from monitor.certificate import new_id, pumptest_document, write_pumptest_report

        status, polys = calibration_status(dev.info, self.db)
        crit = pt.PumpTestCriteria(hold_s=p["hold"], cup_volume_ml=p["cup_volume"])
        start = dev.handle.script_end_s() + 1.0 if dev.handle is not None else None
        run = pt.run_pumptest(dev.link, dev.sampler, parse_cups(p["cups"], dev.info.cups), crit,
                              self.prompter, self.stop_event,
                              polys={} if status.cal_on_device else polys,
                              technician=p["technician"], start_after_s=start)
        run.report_id = new_id("PT", dev.info.serial, run.started_wall)
        paths = write_pumptest_report(pumptest_document(run, pt.pumptest_json(run)),
                                      self._reports())
        lines = [f"cup {r.cup}: " + ", ".join(f"{c.name} {'pass' if c.passed else 'FAIL'}"
                                              for c in r.checks) for r in run.results]
        return {"result": run.result, "aborted": run.aborted, "lines": lines,
                "paths": {k: str(v) for k, v in paths.items()}, "run": run}

    def _job_zero(self, dev: _Device, p: dict[str, Any]) -> dict[str, Any]:
        from monitor.calibration import parse_cups, zero_cups

        res = zero_cups(dev.link, dev.sampler, parse_cups(p["cups"], dev.info.cups),
                        settle=p["settle"], db=self.db, stop=self.stop_event)
        return {"result": "PASS", "lines": [f"cup {r.cup}: {r.before_kpa:+.3f} kPa -> "
                                            f"{r.after_kpa if r.after_kpa is None else round(r.after_kpa, 3)} kPa"
                                            for r in res]}


class _Device:
    """The tab's own connection (worker thread): link, sampler, simulator handle."""

    def __init__(self, url: str, text: bool = False) -> None:
        from firmware_bridge.link import SerialLink
        from monitor.calibration import Sampler, SimHandle

        sim = url.startswith("sim://")
        if sim:
            import sim as _sim  # noqa: F401 - registers sim://
        self.link: Any = SerialLink(url, mode="text" if text else "auto")
        self.sampler = Sampler(300.0)
        self.link.add_listener(self.sampler)
        self.link.start()
        self.handle = SimHandle.of(self.link) if sim and not text else None
        if not text and (not self.link.wait_connected(CONNECT_TIMEOUT_S) or self.link.info is None):
            self.close()
            raise RuntimeError(f"no cupmon device answered on {url} (if the monitor is "
                               "connected to it, disconnect it first)")
        if not self.sampler.wait_newer(None, CONNECT_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"{url} sends no readings")

    @property
    def info(self) -> Any:
        return self.link.info

    def close(self) -> None:
        self.link.stop()


def _spin(value: float, lo: float, hi: float, step: float, decimals: int,
          suffix: str) -> QtWidgets.QDoubleSpinBox:
    s = QtWidgets.QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(step)
    s.setValue(value)
    s.setSuffix(suffix)
    return s


def _one_line(exc: BaseException) -> str:
    from monitor.calibration import CalibrationError

    if isinstance(exc, CalibrationError | RuntimeError) and str(exc).strip():
        return " ".join(str(exc).split())
    return user_message(exc)


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def install(window: Any) -> TechnicianTab:
    """Add the Technician tab to ``window`` (a MainWindow), recording into the
    window's session database; stop its job when the window closes."""
    tab = TechnicianTab(db=getattr(window, "db_path", None),
                        db_provider=lambda: getattr(window, "db_path", None))
    window.add_tab(tab, "Technician")
    window.technician_tab = tab
    app = QtWidgets.QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(tab.shutdown)
    return tab
