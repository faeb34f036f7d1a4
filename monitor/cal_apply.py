"""Apply the calibration in force when a device connects (docs/technician.md).

On every (re)connect the monitor looks up, per cup, the newest *valid*
calibration recorded for the device's serial number (``cupcal calibrate``
stores it) and

* **host-applied** (INFO flag CAL_ON_DEVICE clear): corrects every reading,
  ``suction = c0 + c1 raw + c2 raw^2``, before any listener (checker,
  recorder, display) sees the block;
* **device-applied** (CAL_ON_DEVICE set): writes the coefficients with
  WRITE_CAL when the device holds different ones (checked with READ_CAL)
  and passes the readings on untouched.

Never both: a reading the device marks CALIBRATED is never corrected again.
An overdue calibration is still applied (it is the best correction there
is) and reported as overdue; a cup without one is reported as missing.

Wiring (live sources and capture replays; a recorded session is already
corrected)::

    source = open_source(spec)
    cal = apply_calibration_on_connect(source, db=args.db, on_status=show)
    source.add_listener(...)          # after: listeners get corrected blocks
    source.start()

``show(status)`` is called on a worker thread with a :class:`CalibrationStatus`
after each connect; ``status.lines()`` are ready to print.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.listener import Notifier
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import InfoFlags, Status
from firmware_bridge.source import Source

from .calibration import CalibrationError, Poly, read_device_cal, write_device_cal

log = logging.getLogger(__name__)

#: Blocks held back while the device's identity is unknown (about a second of
#: data at the link's connect timeout); beyond this they go on uncorrected.
MAX_HELD_BLOCKS = 4096

StatusCallback = Callable[["CalibrationStatus"], None]


# --------------------------------------------------------------------------
# What is in force
# --------------------------------------------------------------------------

def in_force(db: str | Path | None, serial: str, cups: Sequence[int]) -> dict[int, dict[str, Any]]:
    """{cup: record} of the newest valid calibration per cup (overdue or not),
    from the session database at ``db`` (default location if None). A missing
    database gives {} and is not created."""
    from monitor.store import Store, default_db_path

    path = Path(db) if db is not None else default_db_path()
    if not path.exists() or not serial:
        return {}
    out: dict[int, dict[str, Any]] = {}
    with Store(path, create=False) as store:
        for cup in cups:
            for rec in store.list_calibrations(serial, cup):  # newest first
                if rec["valid"]:
                    out[cup] = rec
                    break
    return out


@dataclass(frozen=True)
class CupCalibrationStatus:
    """One cup: the calibration in force (``calibration_id`` None = missing),
    when it was made and is due (Unix s), who applies it, and the state word:
    ``in force``, ``overdue`` or ``missing``."""

    cup: int
    calibration_id: int | None
    created_wall: float | None
    due_wall: float | None
    coeffs: tuple[float, float, float] | None
    applied_by: str | None          # "host", "device" or None
    certificate_id: str | None = None
    now: float = 0.0

    @property
    def missing(self) -> bool:
        return self.calibration_id is None

    @property
    def overdue(self) -> bool:
        return (not self.missing and self.due_wall is not None
                and self.due_wall <= (self.now or time.time()))

    @property
    def state(self) -> str:
        return "missing" if self.missing else "overdue" if self.overdue else "in force"

    def line(self) -> str:
        if self.missing:
            return f"cup {self.cup}: no valid calibration on record (readings uncorrected)"
        made = _date(self.created_wall)
        due = _date(self.due_wall) if self.due_wall is not None else "not set"
        who = "by the device" if self.applied_by == "device" else "by the host"
        text = f"cup {self.cup}: calibration #{self.calibration_id} of {made} applied {who}, due {due}"
        if self.certificate_id:
            text += f" (certificate {self.certificate_id})"
        return text + (" - OVERDUE: recalibrate" if self.overdue else "")

    def to_dict(self) -> dict[str, Any]:
        return {"cup": self.cup, "state": self.state, "calibration_id": self.calibration_id,
                "created_wall": self.created_wall, "due_wall": self.due_wall,
                "coeffs": list(self.coeffs) if self.coeffs else None,
                "applied_by": self.applied_by, "certificate_id": self.certificate_id}


@dataclass(frozen=True)
class CalibrationStatus:
    """The calibration state of a connected device, per cup. ``error``: why
    nothing could be looked up or written (one line), else ''."""

    device_serial: str
    cal_on_device: bool
    cups: tuple[CupCalibrationStatus, ...] = ()
    error: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def overdue(self) -> list[int]:
        return [c.cup for c in self.cups if c.overdue]

    @property
    def missing(self) -> list[int]:
        return [c.cup for c in self.cups if c.missing]

    @property
    def ok(self) -> bool:
        return not self.error and not self.overdue and not self.missing

    def warnings(self) -> list[str]:
        """The lines a user must see (missing, overdue, errors)."""
        out = [self.error] if self.error else []
        if self.missing:
            out.append(f"calibration missing for cup(s) {_cups(self.missing)} of "
                       f"{self.device_serial or 'this device'}: readings are not corrected "
                       "(cupcal calibrate)")
        if self.overdue:
            out.append(f"calibration overdue for cup(s) {_cups(self.overdue)} of "
                       f"{self.device_serial}: still applied; recalibrate (cupcal calibrate)")
        return out

    def lines(self, brief: bool = False) -> list[str]:
        """Every cup's line, then notes and warnings. ``brief``: leave out the
        lines of cups with no calibration (the warning names them), and the
        heading when no cup line is left (a monitor's start-up message)."""
        who = "the device applies calibration itself" if self.cal_on_device \
            else "cupmon applies calibration"
        head = f"calibration of {self.device_serial or 'unknown device'} ({who}):"
        cups = [c for c in self.cups if not (brief and c.missing)]
        return ([head] if cups or not brief else []) + ["  " + c.line() for c in cups] + \
            list(self.notes) + [f"warning: {w}" for w in self.warnings()]

    def to_dict(self) -> dict[str, Any]:
        return {"device_serial": self.device_serial, "cal_on_device": self.cal_on_device,
                "ok": self.ok, "error": self.error, "notes": list(self.notes),
                "cups": [c.to_dict() for c in self.cups], "warnings": self.warnings()}


def _date(t: float | None) -> str:
    return "?" if t is None else f"{_dt.datetime.fromtimestamp(t):%Y-%m-%d}"


def _cups(cups: list[int]) -> str:
    return ", ".join(map(str, cups))


def calibration_status(info: DeviceInfo | None, db: str | Path | None = None,
                       now: float | None = None) -> tuple[CalibrationStatus, dict[int, Poly]]:
    """Look up what is in force for ``info``'s device: the status and the
    polynomials per cup ({} when there is nothing to apply). Never raises:
    a database problem is reported in ``status.error``."""
    now = time.time() if now is None else now
    if info is None or not info.serial:
        return CalibrationStatus("", False, error="the device sent no serial number: no "
                                 "calibration can be matched, readings are not corrected"), {}
    on_device = bool(info.flags & InfoFlags.CAL_ON_DEVICE)
    cups = list(range(1, info.cups + 1))
    try:
        records = in_force(db, info.serial, cups)
        error = ""
    except Exception as exc:  # a broken database must not stop the monitor
        records, error = {}, f"calibration records unreadable: {' '.join(str(exc).split())}"
    rows, polys = [], {}
    for cup in cups:
        rec = records.get(cup)
        if rec is None:
            rows.append(CupCalibrationStatus(cup, None, None, None, None, None, now=now))
            continue
        poly = Poly(rec["c0"], rec["c1"], rec["c2"])
        polys[cup] = poly
        rows.append(CupCalibrationStatus(cup, rec["id"], rec["created_wall"], rec["due_wall"],
                                         poly.coeffs, "device" if on_device else "host",
                                         rec.get("certificate_id"), now=now))
    return CalibrationStatus(info.serial, on_device, tuple(rows), error), polys


# --------------------------------------------------------------------------
# Correcting blocks
# --------------------------------------------------------------------------

def correct_block(block: SampleBlock, polys: dict[int, Poly]) -> SampleBlock:
    """``block`` with host calibration applied to the cups in ``polys``
    (1-based). Samples the device marked CALIBRATED are left alone (never
    both), NaN stays NaN."""
    if not polys:
        return block
    x = block.suction.astype(np.float32, copy=True)
    calibrated = (block.status & int(Status.CALIBRATED)) != 0
    for cup, p in polys.items():
        j = cup - 1
        if j >= x.shape[1]:
            continue
        col = x[:, j].astype(float)
        fixed = p.c0 + p.c1 * col + p.c2 * col * col
        x[:, j] = np.where(calibrated[:, j], col, fixed).astype(np.float32)
    return SampleBlock(block.t, x, block.status, block.host_time, block.lost_before,
                       block.gap_before)


class CalibratingNotifier(Notifier):
    """A Notifier that applies the calibration in force to every block before
    its listeners get it, looked up afresh on every connect. Blocks that
    arrive before the device has said who it is are held back (at most
    :data:`MAX_HELD_BLOCKS`) so no listener sees an uncorrected reading of
    a calibrated cup."""

    def __init__(self, db: str | Path | None = None, on_status: StatusCallback | None = None,
                 source: Source | None = None, *, queue_blocks: int = 4096,
                 backpressure: bool = False) -> None:
        super().__init__(queue_blocks=queue_blocks, backpressure=backpressure)
        self.db = db
        self.on_status = on_status
        self.source = source
        self._mutex = threading.Lock()
        self._polys: dict[int, Poly] = {}
        self._known = False           # device identity resolved for this connection
        self._serial: str | None = None
        self._held: list[SampleBlock] = []
        self.status: CalibrationStatus | None = None
        self.status_changed = threading.Event()

    # -- publishing (called on the source's thread) --------------------------
    def publish_block(self, block: SampleBlock) -> None:
        with self._mutex:
            if not self._known:
                self._held.append(block)
                if len(self._held) <= MAX_HELD_BLOCKS:
                    return
                log.warning("no device identity after %d blocks: passing them on uncorrected",
                            len(self._held))
                held, self._held = self._held, []
                polys = {}
            else:
                held, polys = [block], self._polys
        for b in held:
            super().publish_block(correct_block(b, polys))

    def publish_message(self, msg: Any) -> None:
        resolved = None
        if isinstance(msg, DeviceInfo):
            resolved = msg
        elif isinstance(msg, LinkEvent):
            if msg.state in (LinkState.CONNECTING, LinkState.LOST, LinkState.RECONNECTING):
                with self._mutex:
                    self._known = False
            elif msg.state in (LinkState.CONNECTED, LinkState.RECONNECTED):
                resolved = msg.info if msg.info is not None else False
        if resolved is not None:
            self._resolve(resolved or None)
        super().publish_message(msg)

    def _resolve(self, info: DeviceInfo | None) -> None:
        serial = info.serial if info is not None else None
        with self._mutex:
            if self._known and serial == self._serial:
                return  # a repeated INFO of the same device: nothing new
        # A quick SQLite read on the source's thread, once per connect: the
        # polynomials must be known before the next block goes out.
        status, polys = calibration_status(info, self.db)
        on_device = info is not None and bool(info.flags & InfoFlags.CAL_ON_DEVICE)
        with self._mutex:
            self._serial = serial
            self._polys = {} if on_device else polys
            self._known = True
            held, self._held = self._held, []
            self.status = status
        for b in held:
            super().publish_block(correct_block(b, {} if on_device else polys))
        # Device writes wait for ACKs, which this (reader) thread delivers:
        # they and the status callback run on a worker thread.
        threading.Thread(target=self._after_connect, args=(status, polys, on_device),
                         name="cal-apply", daemon=True).start()

    def _after_connect(self, status: CalibrationStatus, polys: dict[int, Poly],
                       on_device: bool) -> None:
        if on_device and polys and self.source is not None:
            notes = list(status.notes)
            for cup, poly in sorted(polys.items()):
                try:
                    have, valid = read_device_cal(self.source, cup)
                    same = valid and np.array_equal(np.float32(have.coeffs), np.float32(poly.coeffs))
                    if not same:
                        write_device_cal(self.source, cup, poly)
                        notes.append(f"  cup {cup}: coefficients written to the device")
                except CalibrationError as exc:
                    status = CalibrationStatus(status.device_serial, status.cal_on_device,
                                               status.cups, f"cup {cup}: {exc}", tuple(notes))
                    break
            else:
                status = CalibrationStatus(status.device_serial, status.cal_on_device,
                                           status.cups, status.error, tuple(notes))
            with self._mutex:
                self.status = status
        self.status_changed.set()
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:
                log.exception("calibration status callback failed")

    @property
    def polys(self) -> dict[int, Poly]:
        """The host-side polynomials in force now ({} for device-applied)."""
        with self._mutex:
            return dict(self._polys)


def apply_calibration_on_connect(source: Source, db: str | Path | None = None,
                                 on_status: StatusCallback | None = None) -> CalibratingNotifier:
    """Make ``source`` apply the calibration in force on every connect (module
    doc). Call after building the source and before adding listeners.
    Returns the notifier; its ``status`` is the latest CalibrationStatus."""
    old = source.notifier
    if old.listeners:
        raise ValueError("apply_calibration_on_connect must be called before listeners are added")
    notifier = CalibratingNotifier(db, on_status, source,
                                   backpressure=old.backpressure)
    source.notifier = notifier
    return notifier


__all__ = ["CalibratingNotifier", "CalibrationStatus", "CupCalibrationStatus",
           "apply_calibration_on_connect", "calibration_status", "correct_block", "in_force"]
