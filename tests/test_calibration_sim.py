"""Calibration end to end on the simulator, through the real serial link:
a device that applies calibration itself, a reference gauge on a second
port, zeroing, and the ways a procedure ends early."""

import contextlib
import os
import re
import threading
import tty

import numpy as np
import pytest

import sim  # noqa: F401 - registers sim://
from firmware_bridge.link import SerialLink
from firmware_bridge.protocol import InfoFlags, Status
from monitor.cal_apply import apply_calibration_on_connect
from monitor.calibration import (
    CalibrationError,
    CalibrationOptions,
    CupState,
    GaugeReference,
    OperatorBench,
    Procedure,
    Sampler,
    SettleCriteria,
    SimBench,
    SimHandle,
    SimReference,
    make_plan,
    read_device_cal,
    run_calibration,
    store_run,
    wait_settled,
    zero_cups,
)
from sim.protocol_sim import make_url

SPEED = 40          # device seconds per wall second: a 13-point run takes ~2 s
FAST = SettleCriteria(band_kpa=0.1, time_s=1.0, timeout_s=30.0)


@contextlib.contextmanager
def device(url):
    link = SerialLink(url)
    sampler = Sampler()
    link.add_listener(sampler)
    link.start()
    try:
        assert link.wait_connected(10) and sampler.wait_newer(None, 10)
        yield link, sampler
    finally:
        link.stop()


class Said:
    def __init__(self):
        self.lines = []
        self.taken = threading.Event()

    def say(self, text):
        self.lines.append(text)
        if sum(line.startswith("Point ") for line in self.lines) >= 2:
            self.taken.set()

    def ask(self, text):
        return None


def test_device_applied_calibration_is_written_checked_and_restored_on_connect(tmp_path):
    db = tmp_path / "cal.db"
    url = make_url("calibration_rig", cups=2, rate=100, seed=11, speed=SPEED, cal_on_device=True,
                   sensor_offset_kpa=1.2, sensor_gain=1.05)
    with device(url) as (link, sampler):
        assert link.info.flags & InfoFlags.CAL_ON_DEVICE
        h = SimHandle.of(link)
        run = run_calibration(link, sampler, SimBench(h), SimReference(h),
                              CalibrationOptions(settle=FAST, points=(0, 10, 20, 30)), db=db)
        assert run.device_applies and run.passed, [r.as_left.to_dict() for r in run.results]
        for r in run.results:
            assert not r.as_found.passed and r.verified and r.as_left.max_abs_error_kpa <= 0.1
            # The device stores exactly the fit (float32 on the wire) and applies it itself.
            back, valid = read_device_cal(link, r.cup)
            assert valid and np.allclose(back.coeffs, r.fit.poly.coeffs, rtol=1e-6, atol=1e-6)
            assert run.written[r.cup] == r.fit.poly.coeffs
        v = run.verify_points[-1]
        _, _, st = sampler.window(v.t0, v.t1)
        assert (st & Status.CALIBRATED).all()
        store_run(run, db)
    # A fresh device of the same serial holds no coefficients: on connect they
    # are written, and the host corrects nothing (never both).
    statuses = []
    link = SerialLink(url)
    notifier = apply_calibration_on_connect(link, db=db, on_status=statuses.append)
    sampler = Sampler()
    link.add_listener(sampler)
    link.start()
    try:
        assert link.wait_connected(10) and notifier.status_changed.wait(10)
        st = statuses[0]
        assert st.cal_on_device and st.ok and not st.error
        assert [c.state for c in st.cups] == ["in force", "in force"]
        assert all(c.applied_by == "device" for c in st.cups)
        assert sum("written to the device" in n for n in st.notes) == 2
        assert notifier.polys == {}
        for r in run.results:
            back, valid = read_device_cal(link, r.cup)
            assert valid and np.allclose(back.coeffs, r.fit.poly.coeffs, rtol=1e-6, atol=1e-6)
        h = SimHandle.of(link)
        readings = wait_settled(sampler, [0, 1], FAST, after_t=h.set_reference(22.0))
        truth = h.true_mean(0, readings[0].t0, readings[0].t1)
        assert all(abs(r.mean_kpa - truth) <= 0.1 for r in readings)
        _, _, status = sampler.window(readings[0].t0, readings[0].t1)
        assert (status & Status.CALIBRATED).all()
    finally:
        link.stop()


class PtyGauge:
    """A reference gauge on a real pseudo-terminal speaking the text format
    (``t:... cup1:...``), reading the device's own bench chamber (the
    simulator's true pressure with 2 Pa of noise) as a second instrument on
    the same manifold would."""

    def __init__(self, handle):
        self.handle = handle
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self._stop = threading.Event()
        self._rng = np.random.default_rng(7)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last = -1.0
        while not self._stop.wait(0.01):
            t, v = self.handle.truth(last)
            if t.size:
                last = float(t[-1])
                noisy = v[:, 0] + self._rng.normal(0, 0.002, t.size)
                text = "".join(f"t:{a:.3f} cup1:{b:.4f}\n" for a, b in zip(t, noisy, strict=True))
                try:
                    os.write(self.master, text.encode())
                except OSError:
                    return

    def close(self):
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self._slave)


class Technician(Said):
    """Reads the prompts and sets the (simulated) bench as asked, as a person
    at the hand pump would: the procedure is never outrun by the bench."""

    def __init__(self, handle):
        super().__init__()
        self.handle = handle

    def say(self, text):
        super().say(text)
        m = re.match(r"Bring the bench to about ([\d.]+) kPa", text)
        if m:
            self.handle.set_reference(float(m.group(1)))


def test_reference_gauge_on_a_second_port_follows_the_bench():
    url = make_url("calibration_rig", cups=1, rate=100, seed=21, speed=SPEED, rig_tau_s=0.3,
                   sensor_offset_kpa=0.8)
    with device(url) as (link, sampler):
        handle = SimHandle.of(link)
        pty = PtyGauge(handle)
        gauge = SerialLink(pty.path, mode="text")
        gs = Sampler()
        gauge.add_listener(gs)
        tech = Technician(handle)
        try:
            gauge.start()
            assert gs.wait_newer(None, 10)
            ref = GaugeReference(gauge, gs, timeout_s=60.0)
            run = run_calibration(link, sampler, OperatorBench(), ref,
                                  CalibrationOptions(settle=FAST), ui=tech)
        finally:
            gauge.stop()
            pty.close()
    assert any("Bring the bench to about 30 kPa" in line for line in tech.lines)
    assert len(run.points) == 13 and not run.verify_points   # no automatic re-measuring
    r = run.results[0]
    nominal = np.array([p.nominal_kpa for p in r.as_found.points])
    ref_vals = np.array([p.reference_kpa for p in r.as_found.points])
    assert np.abs(ref_vals - nominal).max() < 1.0      # each point on its own plateau
    assert r.as_found.max_abs_error_kpa == pytest.approx(0.8, abs=0.15)
    assert r.fit.poly.c0 == pytest.approx(-0.8, abs=0.1)
    assert run.passed and r.as_left.max_abs_error_kpa < 0.1 and "computed" in r.as_left.method


def test_zero_only_when_open_to_ambient(tmp_path):
    url = make_url("calibration_rig", cups=2, rate=100, seed=31, speed=SPEED,
                   sensor_offset_kpa="1.2,0.4")
    settle = SettleCriteria(band_kpa=0.1, time_s=1.0, timeout_s=20.0)
    with device(url) as (link, sampler):
        h = SimHandle.of(link)
        wait_settled(sampler, [0, 1], FAST, after_t=h.set_reference(10.0))
        with pytest.raises(CalibrationError) as exc:
            zero_cups(link, sampler, [1, 2], settle=settle, db=tmp_path / "none.db")
        msg = str(exc.value)
        assert re.search(r"cup 1 reads 1[01]\.\d\d kPa", msg) and "\n" not in msg
        assert re.search(r"cup 2 reads 10\.\d\d kPa", msg)
        assert "not open to ambient" in msg
        # Well settled at ambient (the rig decays with a 1 s time constant).
        wait_settled(sampler, [0, 1], FAST, after_t=h.set_reference(0.0) + 5.0)
        res = zero_cups(link, sampler, [1, 2], settle=settle, db=tmp_path / "none.db")
        assert [r.before_kpa for r in res] == pytest.approx([1.2, 0.4], abs=0.05)
        assert all(abs(r.after_kpa) < 0.05 for r in res)
        # A cup with a calibration made on the present zero is refused unless forced.
        from monitor.store import Store

        with Store(tmp_path / "cal.db") as s:
            s.add_calibration(link.info.serial, 2, (-0.4, 1.0, 0.0))
        with pytest.raises(CalibrationError, match="cup 2 has a calibration"):
            zero_cups(link, sampler, [2], settle=settle, db=tmp_path / "cal.db")
        assert zero_cups(link, sampler, [2], settle=settle, db=tmp_path / "cal.db", force=True)


def test_a_reading_that_never_settles_is_one_line_after_the_timeout():
    url = make_url("calibration_rig", cups=1, rate=100, seed=41, speed=SPEED, noise_kpa=2.0)
    with device(url) as (link, sampler):
        h = SimHandle.of(link)
        proc_crit = SettleCriteria(band_kpa=0.05, time_s=1.0, timeout_s=3.0)
        with pytest.raises(CalibrationError) as exc:
            run_calibration(link, sampler, SimBench(h), SimReference(h),
                            CalibrationOptions(settle=proc_crit, points=(0, 10)))
        assert "did not settle within 3 s" in str(exc.value) and "\n" not in str(exc.value)


def test_stop_ends_the_procedure_keeping_the_points_taken():
    url = make_url("calibration_rig", cups=1, rate=100, seed=51, speed=SPEED)
    with device(url) as (link, sampler):
        h = SimHandle.of(link)
        said, stop = Said(), threading.Event()
        proc = Procedure(sampler, [1], SimBench(h), SimReference(h), FAST, said,
                         {1: CupState()}, stop)
        out = []
        worker = threading.Thread(target=lambda: out.append(proc.run(make_plan())))
        worker.start()
        assert said.taken.wait(30)
        stop.set()
        worker.join(30)
        assert not worker.is_alive() and proc.aborted
        points = out[0]
        assert 2 <= len(points) < 13
        assert [p.index for p in points] == list(range(1, len(points) + 1))
        assert any("points taken so far are kept" in line for line in said.lines)


def test_sim_handle_records_every_sample_the_open_link_takes_and_needs_a_sim_port():
    url = make_url("calibration_rig", cups=2, rate=100, seed=2, speed=SPEED)
    with device(url) as (link, sampler):
        h = SimHandle.of(link)           # through SerialLink.port and the device's output hook
        assert h.device is link.port.device
        t_set = h.set_reference(15.0)    # under the device lock: from the next sample
        readings = wait_settled(sampler, [0, 1], FAST, after_t=t_set)
        t, true = h.truth(t_set - 1e-7, readings[0].t1)
        assert t[0] == pytest.approx(t_set) and np.all(np.diff(t) == pytest.approx(0.01))
        assert true.shape == (t.shape[0], 2)
        # No sensor error in this rig: the true mean is what the device read, over that window.
        assert abs(h.true_mean(0, readings[0].t0, readings[0].t1) - readings[0].mean_kpa) <= 0.05
        assert 14.0 < readings[0].mean_kpa < 15.5
        assert h.now_s >= readings[0].t1
    with pytest.raises(CalibrationError, match="open SerialLink"):
        SimHandle.of(link)               # stopped: no port
    loop = SerialLink("loop://", keepalive=None)
    loop.start()
    try:
        with pytest.raises(CalibrationError, match="built-in simulator"):
            SimHandle.of(loop)
    finally:
        loop.stop()
