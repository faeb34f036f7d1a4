"""The C firmware and the simulator agree: the C regulator gives the engine's
pump sequence on the engine's own readings, and a scenario run by the C core
(sim/firmware_device.py) looks to the monitor like the Python device."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import numpy as np
import pytest
import serial

from firmware_bridge import cfirmware
from firmware_bridge import conditions as C
from firmware_bridge.codec import Command, Decoder, encode_command
from firmware_bridge.messages import Ack, DeviceEvent, DeviceInfo, Nack
from firmware_bridge.protocol import EventCode, InfoFlags, MsgType, SensorModel, Status
from monitor.pipeline import MonitorPipeline
from sim.device import SimConfigError, VirtualDevice, make_simulation
from sim.firmware_device import FirmwareDevice
from sim.transports import PtyTransport, write_capture

pytestmark = pytest.mark.skipif(cfirmware.compiler() is None, reason="no C compiler on PATH")


@pytest.fixture(autouse=True, scope="module")
def _built():
    cfirmware.load_library()


class Run:
    """A device's whole output, decoded by the host's Decoder."""

    def __init__(self, data: bytes) -> None:
        self.decoder = Decoder("binary")
        res = self.decoder.feed(data, host_time=0.0)
        self.blocks = res.blocks
        self.messages = res.messages
        self.t = np.concatenate([b.t for b in res.blocks])
        self.suction = np.concatenate([b.suction for b in res.blocks])
        self.status = np.concatenate([b.status for b in res.blocks])
        self.events = [m for m in res.messages if isinstance(m, DeviceEvent)]
        self.info = [m for m in res.messages if isinstance(m, DeviceInfo)]

    def first(self, cup: int, bit: int) -> float:
        """Device time of the first sample with ``bit`` set on 1-based ``cup``."""
        return float(self.t[np.argmax(self.status[:, cup - 1] & bit > 0)])


def both(scenario: str, seconds: float, **kw) -> tuple[Run, Run, FirmwareDevice]:
    kw = {"cups": 4, "rate_hz": 100, "seed": 5, "duration_s": seconds, **kw}
    py = VirtualDevice(make_simulation(scenario, **kw))
    fw = FirmwareDevice(make_simulation(scenario, **kw))
    return Run(py.produce_until(seconds)), Run(fw.produce_until(seconds)), fw


# --- the regulator itself, on the engine's readings ------------------------------------


def test_c_regulator_reproduces_the_engines_pump_sequence():
    sim = make_simulation("normal", cups=4, rate_hz=100, seed=3, duration_s=60)
    first = sim.advance_to(20.0)
    assert sim.set_band(0b0110, 18.5, 23.25) is None  # cups 2, 3: another band
    second = sim.advance_to(40.0)
    reading = np.concatenate([first.suction_kpa, second.suction_kpa]).astype(np.float64)
    status = np.concatenate([first.status, second.status])
    band = np.tile([2000, 2500], (reading.shape[0], 4, 1))
    band[first.time_us.shape[0]:, 1:3] = [1850, 2325]
    compared = switches = 0
    for c in range(4):
        pump = False  # the C regulator's own state: a sequence, not a sample-wise check
        for k in range(reading.shape[0]):
            s = int(status[k, c])
            if not s & Status.REGULATING or s & (Status.SENSOR_FAULT | Status.INTERLOCK):
                pump = False
                continue
            wire = int(round(reading[k, c] * 100))  # what goes on the wire, 0.01 kPa
            new = cfirmware.regulate(pump, wire, int(band[k, c, 0]), int(band[k, c, 1]))
            assert new == bool(s & Status.PUMP_ON), (c, k, reading[k, c])
            switches += new != pump
            pump = new
            compared += 1
    assert compared > 10_000 and switches >= 8  # every cup pumped down and topped up


# --- a scenario on the C core, seen by the host ------------------------------------------


def test_firmware_device_holds_the_same_band_as_the_python_device():
    py, fw, dev = both("normal", 40.0)
    assert (py.decoder.stats.crc_errors, fw.decoder.stats.crc_errors) == (0, 0)
    assert fw.decoder.stats.frames_lost == 0 and fw.decoder.internal_errors == 0
    (info,) = fw.info
    assert (info.cups, info.rate_hz, info.hard_limit_kpa) == (4, 100, 30.0)
    assert info.sensor_model == SensorModel.SIMULATED
    assert info.flags == InfoFlags.SIMULATED | InfoFlags.CAL_ON_DEVICE
    assert np.array_equal(py.t, fw.t)  # the firmware samples on the engine's grid
    for cup in range(1, 5):
        # the scripted practitioner starts each cup at the same sample on both
        start = py.first(cup, Status.REGULATING)
        assert fw.first(cup, Status.REGULATING) == start
        # pump-down to the switch-off point takes the same time (+- 2 samples)
        def reached(run, t0=start, c=cup):
            i = np.argmax((run.t >= t0) & (run.suction[:, c - 1] >= 23.75))
            return float(run.t[i])
        assert abs(reached(py) - reached(fw)) <= 0.025
        # then both hold the band between the switch points (+ one step of overshoot)
        for run in (py, fw):
            held = run.suction[run.t > start + 3.0, cup - 1]
            assert held.min() >= 21.25 - 0.6 and held.max() <= 23.75 + 0.6
        a = py.suction[py.t > start + 3.0, cup - 1]
        b = fw.suction[fw.t > start + 3.0, cup - 1]
        assert abs(float(a.mean()) - float(b.mean())) < 0.3
    assert [e.code for e in fw.events] == [EventCode.BOOT]
    assert dev.counters.local_commands == 4 and dev.counters.local_refused == 0


def test_interlock_trips_on_the_same_cup_at_the_same_time():
    py, fw, _ = both("over_suction", 25.0, fault_at_s=12.0)
    trips = [[(e.cup, e.t) for e in run.events if e.code == EventCode.INTERLOCK_TRIPPED]
             for run in (py, fw)]
    assert len(trips[0]) == len(trips[1]) == 1
    (cup_py, t_py), (cup_fw, t_fw) = trips[0][0], trips[1][0]
    assert cup_py == cup_fw == 2 and abs(t_py - t_fw) <= 0.05
    for run, t_trip in ((py, t_py), (fw, t_fw)):
        after = run.t > t_trip + 1.0
        assert np.all(run.status[after, 1] & Status.INTERLOCK)
        assert np.all(run.status[after, 1] & Status.VALVE_OPEN)
        assert run.suction[after, 1].max() < 5.0  # vented, the stuck pump loses to the valve
        assert np.all(run.status[after, 0] & Status.REGULATING)  # the others carry on


def pipeline_alarms(run: Run) -> set[tuple[int | None, str]]:
    anchor = (0.0, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    pipe = MonitorPipeline(clock=lambda: 0.0, wall_anchor=anchor, batch_s=0.0)
    for m in run.messages:
        if isinstance(m, DeviceInfo):
            pipe.on_message(m)
    for b in run.blocks:
        pipe.on_block(b)
    for e in run.events:
        pipe.on_message(e)
    pipe.flush()
    return {(e.cup, e.condition) for e in pipe.events() if e.event == "raised"}


@pytest.mark.parametrize("scenario,kw,expect", [
    ("over_suction", {"fault_at_s": 12.0}, {(2, C.INTERLOCK)}),
    ("cup_detached", {"fault_at_s": 12.0}, {(2, C.DETACHED)}),
])
def test_the_monitor_raises_the_same_alarms(scenario, kw, expect):
    py, fw, _ = both(scenario, 25.0, **kw)
    alarms_py, alarms_fw = pipeline_alarms(py), pipeline_alarms(fw)
    assert expect <= alarms_py
    assert alarms_fw == alarms_py


def test_host_commands_run_on_the_firmware():
    sim = make_simulation("normal", cups=2, rate_hz=100, seed=1, duration_s=60)
    dev = FirmwareDevice(sim)
    dev.produce_until(5.0)
    dev.receive(encode_command(Command(type=MsgType.SET_BAND, seq=1, mask=0b10,
                                       low_kpa=25.0, high_kpa=28.0)))
    dev.receive(encode_command(Command(type=MsgType.SET_RATE, seq=2, rate_hz=250)))
    dev.receive(encode_command(Command(type=MsgType.READ_CAL, seq=3, cup=7)))
    run = Run(dev.produce_until(20.0))
    replies = [m for m in run.messages if isinstance(m, (Ack, Nack))]
    assert [(type(m), m.seq) for m in replies] == [(Ack, 1), (Ack, 2), (Nack, 3)]
    assert dev.rate_hz == 250
    assert np.all(np.diff(run.t[run.t > 5.1]) == pytest.approx(0.004))
    late = run.t > 15.0
    assert 20.5 <= run.suction[late, 0].min() and run.suction[late, 0].max() <= 24.5
    assert 25.0 <= run.suction[late, 1].min() and run.suction[late, 1].max() <= 28.0
    dev.receive(encode_command(Command(type=MsgType.VENT, seq=4, mask=0xFFFF)))
    run = Run(dev.produce_until(22.0))
    assert run.suction[-1].max() < 1.0 and np.all(run.status[-1] & Status.VALVE_OPEN)


def test_silence_and_host_loss():
    sim = make_simulation("signal_loss", cups=1, rate_hz=100, seed=2, duration_s=40,
                          fault_at_s=20.0, gap_s=3.0)
    dev = FirmwareDevice(sim)
    dev.produce_until(2.0)
    dev.receive(encode_command(Command(type=MsgType.PING, seq=1)))
    run = Run(dev.produce_until(30.0))
    lost = [e.t for e in run.events if e.code == EventCode.HOST_LOST]
    assert lost == [pytest.approx(7.0, abs=0.011)]  # 5 s after the PING, once
    gap = np.diff(run.t).max()
    assert gap == pytest.approx(3.0, abs=0.02) and run.t[np.argmax(np.diff(run.t))] < 20.0
    assert run.decoder.stats.frames_lost >= 299  # the firmware kept counting seq


def test_capture_file_and_firmware_paths(tmp_path):
    # cupsim --out on the firmware device: the file transport takes any ByteDevice
    sim = make_simulation("normal", cups=2, rate_hz=100, seed=1, duration_s=8)
    summary = write_capture(FirmwareDevice(sim), tmp_path / "run.bin", duration_s=8.0)
    data = (tmp_path / "run.bin").read_bytes()
    run = Run(data)
    assert summary.bytes == len(data) and run.t.shape[0] == 800
    assert summary.frames == run.decoder.stats.frames_ok == 802  # + INFO and BOOT
    # --firmware DIR: a source tree is built; --firmware FILE: a built library is loaded
    src = tmp_path / "fw"
    shutil.copytree(cfirmware.FIRMWARE_DIR, src)
    lib = cfirmware.build_library()
    outs = []
    for firmware in (src, lib):
        dev = FirmwareDevice(make_simulation("normal", cups=2, rate_hz=100, seed=1,
                                             duration_s=8), firmware=firmware)
        outs.append(dev.produce_until(8.0))
    assert outs[0] == outs[1] == data
    with pytest.raises(cfirmware.FirmwareBuildError):
        FirmwareDevice(sim, firmware=tmp_path / "nothing-here")


def test_firmware_device_output_hook_and_locked_call_over_a_pty():
    sim = make_simulation("normal", cups=2, rate_hz=100, seed=1, duration_s=60)
    dev = FirmwareDevice(sim)
    heard: list[bytes] = []
    # The samples are the C core's: a hook gets the bytes, and None for them.
    dev.add_output_hook(lambda data, samples: heard.append(data) if samples is None else None)
    tr = PtyTransport(dev, speed=4.0, duration_s=8.0)  # ends by itself: nothing cut off
    dec = Decoder("binary")
    blocks: list = []
    chunks: list[bytes] = []

    def read() -> bool:
        """Read what is there; False once the transport has hung up."""
        try:
            data = port.read(4096)
        except serial.SerialException:
            return False
        chunks.append(data)
        blocks.extend(dec.feed(data).blocks)
        return bool(data) or not tr.join(0)

    with serial.Serial(tr.path, timeout=0.05) as port:
        tr.start()
        try:
            # Regulating from 2.0 s (the script): vent cup 1 from this thread, and
            # learn under the same lock the time of the first sample it acts on.
            deadline = time.monotonic() + 20
            while not any(b.status[-1, 0] & Status.REGULATING for b in blocks):
                assert read() and time.monotonic() < deadline
            vent = encode_command(Command(type=MsgType.VENT, seq=9, mask=0b1))
            t_next = dev.call_locked(lambda d: (d.receive(vent), d.t_s)[1])
            while read():  # to the end of the run
                assert time.monotonic() < deadline
        finally:
            tr.stop()
    assert tr.join(10) and tr.stats.bytes_dropped == 0
    assert b"".join(chunks) == b"".join(heard) and len(heard) > 10
    assert t_next < 7.0 and blocks[-1].t[-1] > 7.9
    t = np.concatenate([b.t for b in blocks])
    vented = (np.concatenate([b.status for b in blocks])[:, 0] & Status.VALVE_OPEN) > 0
    assert not vented[(t >= 2.5) & (t < t_next - 1e-7)].any() and vented[t >= t_next - 1e-7].all()


def test_settings_the_firmware_cannot_take_are_refused_in_one_line():
    with pytest.raises(SimConfigError, match="binary") as e:
        FirmwareDevice(make_simulation("normal", duration_s=5), fmt="text")
    assert "\n" not in str(e.value)
    with pytest.raises(SimConfigError, match="gauge"):
        FirmwareDevice(make_simulation("normal", duration_s=5, sensor="absolute"))


def test_bench_without_interlock_gets_the_firmwares_top_limit():
    # the calibration rig has no interlock fitted; the firmware's is always on, so
    # it moves to 100 kPa and the 30 kPa rig step does not vent
    dev = FirmwareDevice(make_simulation("calibration_rig", cups=1, duration_s=60,
                                         points="0,30", falling=False))
    run = Run(dev.produce_until(30.0))
    assert run.info[0].hard_limit_kpa == 100.0
    assert run.suction[-1, 0] == pytest.approx(30.0, abs=0.3)
    assert not [e for e in run.events if e.code == EventCode.INTERLOCK_TRIPPED]


def test_sensor_rail_fault_is_flagged_by_the_firmware():
    py, fw, _ = both("sensor_fault", 20.0, fault_at_s=10.0, fault="rail_low")
    for run in (py, fw):
        ev = [(e.code, e.cup) for e in run.events]
        assert (EventCode.SENSOR_FAULT, 2) in ev
        t_fault = next(e.t for e in run.events if e.code == EventCode.SENSOR_FAULT)
        assert t_fault == pytest.approx(10.0, abs=0.02)
        after = run.t > t_fault + 0.1
        assert np.all(run.status[after, 1] & Status.SENSOR_FAULT)
        assert not np.any(run.status[after, 1] & Status.PUMP_ON)
