"""Applying the calibration in force on connect: which record is in force,
overdue and missing cups, correcting blocks (never a device-calibrated one),
holding blocks until the device has said who it is, and a reconnect to
another device."""

import threading
import time

import numpy as np
import pytest

from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import InfoFlags, Status
from firmware_bridge.source import Source
from monitor.cal_apply import (
    apply_calibration_on_connect,
    calibration_status,
    correct_block,
    in_force,
)
from monitor.calibration import Poly
from monitor.store import Store

NOW = 1_750_000_000.0
DAY = 86400.0


def _db(tmp_path):
    path = tmp_path / "cupmon.db"
    with Store(path) as s:
        s.add_calibration("SN-1", 1, (-1.0, 1.0, 0.0), created_wall=NOW - 10 * DAY,
                          due_wall=NOW + 355 * DAY, certificate_id="CAL-A")
        s.add_calibration("SN-1", 2, (0.5, 1.0, 0.0), created_wall=NOW - 400 * DAY,
                          due_wall=NOW - 35 * DAY)                       # overdue
        s.add_calibration("SN-1", 3, (9.0, 1.0, 0.0), created_wall=NOW - DAY, valid=False)
        s.add_calibration("SN-1", 4, (0.1, 2.0, 0.0), created_wall=NOW - 20 * DAY,
                          due_wall=NOW + 300 * DAY)
        s.add_calibration("SN-1", 4, (7.0, 1.0, 0.0), created_wall=NOW - DAY,
                          valid=False, result="FAIL")                    # newer, failed
        s.add_calibration("SN-2", 1, (3.0, 1.0, 0.0), created_wall=NOW - DAY,
                          due_wall=NOW + DAY)
    return path


def test_status_per_cup_in_force_overdue_and_missing(tmp_path):
    db = _db(tmp_path)
    info = DeviceInfo("SN-1", (1, 0, 0), 4, 100)
    status, polys = calibration_status(info, db, now=NOW)
    assert [c.state for c in status.cups] == ["in force", "overdue", "missing", "in force"]
    assert status.overdue == [2] and status.missing == [3] and not status.ok
    # overdue is still applied (the best correction there is); a failed newer record is not
    assert polys == {1: Poly(-1.0, 1.0, 0.0), 2: Poly(0.5, 1.0, 0.0), 4: Poly(0.1, 2.0, 0.0)}
    warn = " ".join(status.warnings())
    assert "missing for cup(s) 3" in warn and "overdue for cup(s) 2" in warn
    lines = status.lines()
    assert "cupmon applies calibration" in lines[0]
    assert "certificate CAL-A" in lines[1] and "OVERDUE" in lines[2]
    # brief (cupmon's start-up): the missing cup only in the warning, not twice
    brief = status.lines(brief=True)
    assert len(brief) == len(lines) - 1 and not any("cup 3:" in ln for ln in brief)
    assert any("missing for cup(s) 3" in ln for ln in brief)
    d = status.to_dict()
    assert d["cups"][0]["calibration_id"] == 1 and d["cups"][2]["state"] == "missing"
    # what in_force picks, straight from the store
    assert {c: r["id"] for c, r in in_force(db, "SN-1", [1, 2, 3, 4]).items()} == \
        {1: 1, 2: 2, 4: 4}


def test_no_serial_or_no_database_is_reported_not_raised(tmp_path):
    status, polys = calibration_status(None, tmp_path / "cupmon.db")
    assert polys == {} and "no serial number" in status.error and not status.ok
    missing = tmp_path / "none.db"
    status, polys = calibration_status(DeviceInfo("SN-1", (1, 0, 0), 2, 100), missing)
    assert polys == {} and status.missing == [1, 2] and not missing.exists()
    assert len(status.lines(brief=True)) == 1                 # the one warning line
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    status, _ = calibration_status(DeviceInfo("SN-1", (1, 0, 0), 2, 100), bad)
    assert "unreadable" in status.error and "\n" not in status.error


def _block(t0, values, status=0):
    x = np.asarray(values, dtype=np.float32)
    t = t0 + np.arange(x.shape[0]) * 0.01
    return SampleBlock(t, x, np.full(x.shape, status, dtype=np.uint8))


def test_correct_block_applies_the_polynomial_but_never_twice():
    b = _block(0.0, [[10.0, 10.0], [np.nan, 20.0]])
    st = b.status.copy()
    st[0, 1] = Status.CALIBRATED         # the device applied its own calibration here
    b = SampleBlock(b.t, b.suction, st)
    out = correct_block(b, {1: Poly(-1.0, 1.0, 0.0), 2: Poly(0.0, 2.0, 0.0)})
    assert out.suction[0, 0] == pytest.approx(9.0) and np.isnan(out.suction[1, 0])
    assert out.suction[0, 1] == pytest.approx(10.0)       # left alone
    assert out.suction[1, 1] == pytest.approx(40.0)
    assert out.suction.dtype == np.float32 and b.suction[0, 0] == 10.0   # input untouched


class _Fake(Source):
    def start(self):
        pass

    def stop(self):
        self.notifier.stop()


class _Got(Listener):
    idle_interval = None

    def __init__(self):
        self.blocks, self.messages = [], []
        self.cond = threading.Condition()

    def on_block(self, block):
        with self.cond:
            self.blocks.append(block)
            self.cond.notify_all()

    def on_message(self, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, n, timeout=5.0):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.blocks) < n and time.monotonic() < end:
                self.cond.wait(0.05)
        return len(self.blocks) >= n


def test_blocks_wait_for_the_device_and_follow_a_reconnect_to_another(tmp_path):
    db = _db(tmp_path)
    src = _Fake()
    statuses = []
    notifier = apply_calibration_on_connect(src, db=db, on_status=statuses.append)
    got = _Got()
    src.add_listener(got)
    try:
        notifier.publish_message(LinkEvent(LinkState.CONNECTING, 0.0))
        # Before INFO: held back (had it gone out, it would be uncorrected below).
        notifier.publish_block(_block(0.0, [[10.0] * 4]))
        info = DeviceInfo("SN-1", (1, 0, 0), 4, 100)
        notifier.publish_message(info)
        notifier.publish_message(LinkEvent(LinkState.CONNECTED, 0.0, "", info))
        notifier.publish_block(_block(1.0, [[10.0] * 4]))
        assert got.wait(2) and notifier.status_changed.wait(5)
        first, second = got.blocks
        assert first.t[0] == 0.0 and second.t[0] == 1.0        # order kept
        for b in (first, second):
            assert b.suction[0].tolist() == pytest.approx([9.0, 10.5, 10.0, 20.1])
        assert statuses[0].device_serial == "SN-1"
        # Unplugged, and another device comes back on the same port.
        notifier.status_changed.clear()
        notifier.publish_message(LinkEvent(LinkState.LOST, 0.0))
        notifier.publish_message(LinkEvent(LinkState.RECONNECTING, 0.0))
        other = DeviceInfo("SN-2", (1, 0, 0), 2, 100)
        notifier.publish_block(_block(2.0, [[10.0, 10.0]]))
        notifier.publish_message(other)
        notifier.publish_message(LinkEvent(LinkState.RECONNECTED, 0.0, "", other))
        assert got.wait(3) and notifier.status_changed.wait(5)
        assert got.blocks[2].suction[0].tolist() == pytest.approx([13.0, 10.0])
        assert statuses[-1].device_serial == "SN-2" and statuses[-1].missing == [2]
    finally:
        src.stop()


def test_a_device_that_calibrates_itself_gets_no_host_correction(tmp_path):
    db = _db(tmp_path)
    src = _Fake()
    notifier = apply_calibration_on_connect(src, db=db)
    got = _Got()
    src.add_listener(got)
    try:
        info = DeviceInfo("SN-1", (1, 0, 0), 4, 100, flags=int(InfoFlags.CAL_ON_DEVICE))
        notifier.publish_message(info)
        notifier.publish_block(_block(0.0, [[10.0] * 4]))
        assert got.wait(1) and notifier.status_changed.wait(5)
        assert got.blocks[0].suction[0].tolist() == [10.0] * 4
        assert notifier.polys == {}
        # a _Fake source takes no commands: the write fails and says so, in one line
        assert notifier.status.cal_on_device and "cup 1" in notifier.status.error
    finally:
        src.stop()


def test_must_be_installed_before_listeners():
    src = _Fake()
    src.add_listener(_Got())
    try:
        with pytest.raises(ValueError, match="before listeners"):
            apply_calibration_on_connect(src)
    finally:
        src.stop()


def test_a_replay_keeps_its_backpressure_through_the_calibrating_notifier():
    # A replay's notifier makes the reader wait instead of dropping blocks;
    # installing the calibration must not turn that into a lossy live notifier.
    from firmware_bridge.listener import Notifier

    for backpressure in (True, False):
        src = _Fake(Notifier(backpressure=backpressure))
        try:
            notifier = apply_calibration_on_connect(src)
            assert notifier.backpressure is backpressure
            assert src.notifier is notifier
        finally:
            src.stop()
