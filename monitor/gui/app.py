"""Start the GUI from the ``cupmon`` command line, or render a screenshot.

``run_gui(args)`` takes the namespace of ``monitor.cli.build_parser()``.
``render_screenshot(url, path, after_s)`` opens the window offscreen-capable
at 1366x768, lets ``after_s`` seconds of live data arrive, and saves a PNG.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from firmware_bridge.protocol import DEFAULT_BAUD
from firmware_bridge.source import Source
from monitor.config import MonitorConfig, load_config

from .main_window import REPLAY_PREFIX, MainWindow, SourceFactory

log = logging.getLogger(__name__)

SCREEN_SIZE = (1366, 768)  # the smallest screen the window is laid out for


def ensure_app() -> QtWidgets.QApplication:
    """The QApplication (created once, named so QSettings find their file)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        # Qt Multimedia lists every codec library it cannot load on stderr; a
        # missing sound card is reported in the window instead.
        os.environ.setdefault("QT_LOGGING_RULES", "qt.multimedia.*=false")
        QtCore.QCoreApplication.setOrganizationName("cupmon")
        QtCore.QCoreApplication.setApplicationName("cupmon")
        app = QtWidgets.QApplication(sys.argv[:1])
    return app  # type: ignore[return-value]


def build_config(args: argparse.Namespace) -> MonitorConfig:
    """Checking configuration from --config, --band, --set and --unit."""
    overrides = list(getattr(args, "set", None) or [])
    band = getattr(args, "band", None)
    if band:
        try:
            low, high = (float(x) for x in str(band).split(","))
        except ValueError:
            raise ValueError(f"--band {band!r}: expected LOW,HIGH in kPa, e.g. 20,25") from None
        overrides = [f"band_low_kpa={low}", f"band_high_kpa={high}", *overrides]
    unit = getattr(args, "unit", None)
    if unit:
        overrides.append(f"unit={unit}")
    return load_config(getattr(args, "config", None), overrides)


def _spec(args: argparse.Namespace):
    from monitor.sources import SourceSpec

    params = []
    for item in getattr(args, "sim_param", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--sim-param {item!r}: expected KEY=VALUE")
        params.append((key.strip(), value.strip()))
    sim = getattr(args, "sim", None)
    port = getattr(args, "port", None)
    replay = getattr(args, "replay", None)
    if not (sim or port or replay):
        sim = "normal"
    return SourceSpec(port=port, sim=sim, replay=replay, cups=getattr(args, "cups", 4),
                      rate_hz=getattr(args, "rate", 100), seed=getattr(args, "seed", 0),
                      speed=getattr(args, "speed", None),
                      baud=getattr(args, "baud", None) or DEFAULT_BAUD,
                      db=getattr(args, "db", None), sim_params=tuple(params))


def _wait(seconds: float) -> None:
    """Run the event loop for ``seconds`` (timers, redraws and data go on)."""
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def _bright_phase(win: MainWindow, timeout_s: float = 1.5) -> None:
    """Wait for the bright half of a flashing alarm, so a still picture shows
    its colour rather than the dark half of the flash."""
    prio = win.banner.priority
    if prio is None or not win.banner.flashing or win.flasher.is_on(prio):
        return
    loop = QtCore.QEventLoop()

    def toggled(_severity: str) -> None:
        if win.flasher.is_on(prio):
            loop.quit()

    win.flasher.toggled.connect(toggled)
    QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    win.flasher.toggled.disconnect(toggled)


def render_screenshot(url: str | None, path: str | Path, after_s: float = 5.0, *,
                      source: Source | None = None, config: MonitorConfig | None = None,
                      source_factory: SourceFactory | None = None,
                      size: tuple[int, int] = SCREEN_SIZE, db_path: str | Path | None = None,
                      session: int | None = None, speed: float | None = 1.0) -> Path:
    """Open the window at ``size`` on ``url`` (or a ready ``source``, or stored
    ``session`` of ``db_path`` reviewed with its timeline at ``speed``), let
    ``after_s`` seconds of data arrive, save a PNG at ``path``.

    The PNG is written even when the source cannot be opened (it shows the
    message the user would see); the error is raised afterwards.
    """
    ensure_app()
    win = MainWindow(config, persist=False, source_factory=source_factory, audio=False,
                     db_path=db_path,
                     settings=QtCore.QSettings(QtCore.QSettings.Format.IniFormat,
                                               QtCore.QSettings.Scope.UserScope,
                                               "cupmon", "cupmon-screenshot"))
    win.resize(*size)
    win.show()
    try:
        if session is not None:
            win.open_session(session, speed=speed)
            ok = True
        elif source is not None:
            win.connection.choose_url(url or "")
            ok = win.attach_source(source, url or "replay")
        else:
            assert url is not None, "give a url or a source"
            win.connection.choose_url(url)
            ok = win.connect_url(url)
        ok = ok and win.wait_started()
        _wait(after_s if ok else 0.2)
        win.tick()
        _bright_phase(win)
        win.traces.redraw(force=True)
        QtWidgets.QApplication.processEvents()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not win.grab().save(str(out), "PNG"):
            raise OSError(f"cannot write the screenshot {out}")
        if not ok and win.last_exception is not None:
            raise win.last_exception
        return out
    finally:
        win.close()
        win.deleteLater()


def run_gui(args: argparse.Namespace) -> int:
    """The ``cupmon`` GUI: open the source the arguments name and run until
    the window closes. Returns the process exit code."""
    config = build_config(args)
    spec = _spec(args)
    if spec.replay is not None and spec.speed is None:
        from dataclasses import replace

        spec = replace(spec, speed=1.0)   # the window replays in real time unless told
    app = ensure_app()
    from monitor.sources import open_source, sim_url

    if spec.sim:
        label = sim_url(spec)
    elif spec.port:
        label = spec.port
    else:  # the connection bar can reopen it: replay:ID|PATH
        label = f"{REPLAY_PREFIX}{spec.replay}"
    screenshot = getattr(args, "screenshot", None)
    stored = spec.replay is not None and spec.replay.strip().isdigit()
    if screenshot:
        after = float(getattr(args, "after", 5.0))
        if stored:
            out = render_screenshot(label, screenshot, after, config=config, db_path=spec.db,
                                    session=int(spec.replay), speed=spec.speed)
        else:
            src = open_source(spec) if spec.replay is not None else None
            out = render_screenshot(label, screenshot, after, source=src, config=config)
        print(f"cupmon: screenshot saved to {out}", file=sys.stderr)
        return 0
    win = MainWindow(config, db_path=getattr(args, "db", None))
    win.session_defaults = {k: str(getattr(args, k, "") or "")
                            for k in ("therapist", "patient", "notes")}
    if getattr(args, "unit", None):
        win.set_unit(args.unit)  # the command line wins over the saved choice
    if not win.settings.contains("window/geometry"):
        win.resize(*SCREEN_SIZE)
    win.show()
    win.connection.choose_url(label)
    if stored:
        # A stored session: reviewed with the timeline, read on a worker.
        win.open_session(int(spec.replay), speed=spec.speed)
        return int(app.exec())
    try:
        source = open_source(spec)
    except Exception as exc:  # shown in the window; the user can pick another source
        win.show_failure(label, exc)
    else:
        win.attach_source(source, label)
    return int(app.exec())
