"""The virtual device over real transports: a pty, TCP on 127.0.0.1, a file and
``sim://`` URLs, each with a decoder (or cupmon's SerialLink) on the far end."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest
import serial

import sim  # noqa: F401  (registers sim://)
from firmware_bridge.codec import Command, Decoder, encode_command
from firmware_bridge.errors import CommandNacked
from firmware_bridge.link import SerialLink
from firmware_bridge.listener import Listener
from firmware_bridge.messages import Ack, DeviceInfo, LinkState
from firmware_bridge.protocol import HEADER_SIZE, SYNC, MsgType, NackReason, Status
from sim.device import VirtualDevice, make_simulation
from sim.protocol_sim import make_url, parse_url
from sim.scenarios import SCENARIOS
from sim.transports import PtyTransport, TcpTransport, TransportError, write_capture

pytestmark = pytest.mark.timeout(60)

NOISY = "noisy_link"
TRANSPORTS = ("pty", "tcp", "file", "url")


def wait_until(cond, timeout: float = 10.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def frame_seqs(data: bytes) -> list[int]:
    """Seq of every frame of an uncorrupted stream, walking the headers (struct,
    not the codec, so the test does not trust what it tests)."""
    seqs, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 2] == SYNC, f"no frame at byte {pos}"
        length = data[pos + 4]
        seqs.append(struct.unpack_from("<H", data, pos + 5)[0])
        pos += HEADER_SIZE + length + 2
    assert pos == len(data)
    return seqs


# -- the four transports, each returning (device, all bytes received) ----------

def _via_pty(device: VirtualDevice, duration: float) -> bytes:
    tr = PtyTransport(device, speed=20.0, duration_s=duration)
    chunks = []
    # Open before starting: pyserial flushes the input on open.
    with serial.Serial(tr.path, timeout=0.05) as port:
        tr.start()
        while True:
            try:
                data = port.read(65536)
            except serial.SerialException:  # the transport hung up: the run is over
                break
            chunks.append(data)
            if not data and tr.join(0):
                break
    assert tr.join(10)
    assert tr.stats.bytes_dropped == 0
    return b"".join(chunks)


def _via_tcp(device: VirtualDevice, duration: float) -> bytes:
    tr = TcpTransport(device, 0, speed=20.0, duration_s=duration)
    chunks = []
    with socket.create_connection(("127.0.0.1", tr.port), timeout=10) as s:
        tr.start()
        while data := s.recv(65536):
            chunks.append(data)
    assert tr.join(10)
    assert tr.stats.bytes_dropped == 0
    return b"".join(chunks)


def _via_file(device: VirtualDevice, tmp_path) -> bytes:
    path = tmp_path / "capture.bin"
    summary = write_capture(device, path)
    data = path.read_bytes()
    assert summary.bytes == len(data)
    assert summary.frames == device.counters.frames_sent
    return data


def _via_url(url: str) -> tuple[VirtualDevice, bytes]:
    chunks = []
    with serial.serial_for_url(url, timeout=0.05) as port:
        while data := port.read(65536):
            chunks.append(data)
        device = port.device
    return device, b"".join(chunks)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_over_every_transport(scenario, transport, tmp_path):
    cups, rate, duration = 3, 100, 1.0
    if transport == "url":
        device, data = _via_url(make_url(scenario, cups=cups, rate=rate, seed=5, speed=0,
                                         duration=duration))
    else:
        device = VirtualDevice(make_simulation(scenario, cups=cups, rate_hz=rate, seed=5,
                                               duration_s=duration), seed=5)
        if transport == "pty":
            data = _via_pty(device, duration)
        elif transport == "tcp":
            data = _via_tcp(device, duration)
        else:
            data = _via_file(device, tmp_path)
    c = device.counters
    assert len(data) == c.bytes_out
    dec = Decoder("auto")
    res = dec.feed(data)
    assert dec.mode == "binary"
    assert sum(b.n for b in res.blocks) <= c.samples_sent
    assert all(b.cups == cups for b in res.blocks)
    if scenario == NOISY and c.corrupted_bytes:
        return  # corrupted frames are lost; test_sim_device checks that stream
    assert isinstance(res.messages[0], DeviceInfo) and res.messages[0].cups == cups
    assert sum(b.n for b in res.blocks) == c.samples_sent
    assert dec.stats.crc_errors == 0 and dec.stats.bytes_discarded == 0
    # Every seq the device used is either received or counted as not sent.
    seqs = frame_seqs(data)
    gaps = int(np.sum((np.diff(seqs) - 1) % 65536))
    trailing = (device.seq - 1 - seqs[-1]) % 65536
    assert dec.stats.frames_lost == gaps
    assert gaps + trailing == c.frames_unsent
    assert len(seqs) == c.frames_sent


# -- pty ----------------------------------------------------------------------------

def _device(scenario="normal", cups=2, rate=100, fmt="binary", **params):
    return VirtualDevice(make_simulation(scenario, cups=cups, rate_hz=rate, seed=1, **params), fmt)


def test_pty_survives_nobody_reading_and_counts_what_it_dropped():
    tr = PtyTransport(_device(cups=16, rate=2000), speed=3.0, duration_s=1.5)
    tr.start()
    assert tr.join(20)
    assert tr.error is None
    assert tr.stats.bytes_written > 0
    assert tr.stats.bytes_dropped > 0
    assert tr.stats.bytes_written + tr.stats.bytes_dropped == tr.device.counters.bytes_out


def test_pty_can_be_opened_again_and_answers_commands():
    with PtyTransport(_device(), speed=2.0) as tr:
        tr.start()
        with serial.Serial(tr.path, timeout=0.05) as port:
            dec = Decoder("binary")
            assert wait_until(lambda: any(b.n for b in dec.feed(port.read(4096)).blocks))
        with serial.Serial(tr.path, timeout=0.05) as port:
            port.write(encode_command(Command(MsgType.READ_CAL, seq=77, cup=9)))
            got = []
            assert wait_until(lambda: got.extend(dec.feed(port.read(4096)).messages)
                              or any(getattr(m, "seq", None) == 77 for m in got))
            nack = next(m for m in got if getattr(m, "seq", None) == 77)
            assert nack.reason == NackReason.BAD_CUP
    assert tr.join(5)


@pytest.mark.parametrize("scenario", ["normal", NOISY])
def test_output_hook_receives_exactly_the_bytes_read_from_the_pty(scenario):
    dev = _device(scenario, cups=3)
    heard: list[tuple[bytes, object]] = []
    dev.add_output_hook(lambda data, samples: heard.append((data, samples)))

    def broken(data, samples):
        raise RuntimeError("a hook with a bug")

    dev.add_output_hook(broken)  # logged at every call; the device and other hooks carry on
    read = _via_pty(dev, 2.0)
    data = b"".join(d for d, _ in heard)
    assert read == data and len(data) == dev.counters.bytes_out > 1000
    # The samples behind the bytes: every sample taken, once, in order.
    t_us = np.concatenate([s.time_us for _, s in heard if s is not None])
    assert t_us.shape[0] == dev.counters.samples_sent + dev.counters.samples_dropped
    assert np.all(np.diff(t_us) == 10_000)
    if scenario == "normal":  # what the host decodes is what the samples said
        blocks = Decoder("binary").feed(read).blocks
        got = np.concatenate([b.suction for b in blocks])
        sent = np.concatenate([s.suction_kpa for _, s in heard if s is not None])
        np.testing.assert_allclose(got, sent, atol=0.005)
    dev.remove_output_hook(broken)
    n = len(heard)
    assert dev.produce(5) and len(heard) == n + 1


def test_call_locked_change_lands_between_two_samples_of_a_running_pty():
    dev = _device("normal", cups=2)
    tr = PtyTransport(dev, speed=4.0, duration_s=30.0)
    dec = Decoder("binary")
    blocks: list = []
    status = Status.REGULATING | Status.VALVE_OPEN
    with serial.Serial(tr.path, timeout=0.05) as port:
        tr.start()
        try:
            def read_until(cond) -> bool:
                return wait_until(lambda: blocks.extend(dec.feed(port.read(4096)).blocks)
                                  or cond())

            # Cup 1 regulates from 2.0 s (the script); vent it from another thread.
            assert read_until(lambda: any(b.status[-1, 0] & Status.REGULATING for b in blocks))
            reply, t_next = dev.call_locked(lambda d: (d.sim.vent(0b1), d.sim.t_s))
            assert reply is None
            assert read_until(lambda: blocks[-1].t[-1] >= t_next + 0.5)
        finally:
            tr.stop()
    assert tr.join(10)
    t = np.concatenate([b.t for b in blocks])
    st = np.concatenate([b.status for b in blocks])[:, 0] & status
    before, after = (t >= 2.0) & (t < t_next - 1e-7), t >= t_next - 1e-7
    assert before.any() and after.any()
    # Regulating up to the last sample before the call, vented from the very next one.
    assert np.all(st[before] == Status.REGULATING) and np.all(st[after] == Status.VALVE_OPEN)


def test_call_locked_holds_the_device_lock_and_hooks_may_reenter():
    dev = _device("normal", cups=2)
    other = threading.Event()
    waiter = threading.Thread(target=lambda: dev.call_locked(lambda d: other.set()))

    def inside(d):
        waiter.start()
        # Another thread's locked call cannot run while this one does (not a
        # sleep for luck: the assertion holds however long the wait).
        assert not other.wait(0.2)
        return d.produce(10)

    assert dev.call_locked(inside)
    assert other.wait(5)
    waiter.join(5)
    # A hook runs on the producing thread under the lock: it may call in again.
    seen = []
    dev.add_output_hook(lambda data, s: seen.append(dev.call_locked(lambda d: d.counters.bytes_out)))
    dev.produce(3)
    assert seen == [dev.counters.bytes_out]


class Collect(Listener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocks = []
        self.messages = []

    def on_block(self, block) -> None:
        with self.lock:
            self.blocks.append(block)

    def on_message(self, msg) -> None:
        with self.lock:
            self.messages.append(msg)

    def samples(self) -> int:
        with self.lock:
            return sum(b.n for b in self.blocks)


def _link_round_trip(url: str) -> Collect:
    """cupmon's SerialLink on ``url``: it connects with INFO, samples flow,
    commands are ACKed or NACKed."""
    c = Collect()
    link = SerialLink(url, reconnect=False)
    link.add_listener(c)
    link.start()
    try:
        assert wait_until(lambda: c.samples() >= 20)
        assert wait_until(lambda: any(getattr(m, "state", None) == LinkState.CONNECTED
                                      and m.info is not None for m in list(c.messages)))
        ack = link.send_command(Command(MsgType.PING)).result(5)
        assert isinstance(ack, Ack) and ack.cmd == MsgType.PING
        with pytest.raises(CommandNacked) as err:
            link.send_command(Command(MsgType.VENT, mask=1 << 7)).result(5)
        assert err.value.reason == NackReason.BAD_CUP
    finally:
        link.stop()
    return c


def test_serial_link_over_pty():
    with PtyTransport(_device(cups=2), speed=1.0) as tr:
        tr.start()
        _link_round_trip(tr.path)


def test_serial_link_over_tcp():
    with TcpTransport(_device(cups=2), 0, speed=1.0) as tr:
        tr.start()
        _link_round_trip(tr.url)


def test_serial_link_over_sim_url():
    c = _link_round_trip(make_url("normal", cups=2, rate=100, speed=1))
    info = next(m for m in c.messages if isinstance(m, DeviceInfo))
    assert info.cups == 2 and info.rate_hz == 100


# -- TCP ------------------------------------------------------------------------------

def test_tcp_one_client_at_a_time_and_a_late_client_hears_now():
    with TcpTransport(_device(), 0, speed=10.0) as tr:
        tr.start()
        first = socket.create_connection(("127.0.0.1", tr.port), timeout=5)
        assert wait_until(lambda: tr.connected)
        second = socket.create_connection(("127.0.0.1", tr.port), timeout=5)
        assert second.recv(100) == b""  # closed at once: the line is taken
        second.close()
        assert first.recv(100)
        first.close()
        assert wait_until(lambda: not tr.connected)
        assert wait_until(lambda: tr.pacer.cursor_s > 3.0)
        with socket.create_connection(("127.0.0.1", tr.port), timeout=5) as late:
            dec = Decoder("binary")
            blocks = []
            assert wait_until(lambda: blocks.extend(dec.feed(late.recv(4096)).blocks) or blocks)
        assert blocks[0].t[0] > 3.0  # the live stream from "now", not a replay from 0
        assert tr.stats.clients == 2


def test_tcp_port_in_use_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(TransportError, match="already in use") as err:
            TcpTransport(_device(), s.getsockname()[1])
        assert "\n" not in str(err.value)


# -- sim:// --------------------------------------------------------------------------

def test_make_url_round_trips_through_parse_url():
    url = make_url("calibration_rig", cups=1, rate=250, seed=9, speed=0, format="text",
                   duration=12.5, sensor_offset_kpa=1.2, flag=True)
    cfg = parse_url(url)
    assert (cfg.scenario, cfg.cups, cfg.rate_hz, cfg.seed, cfg.speed, cfg.fmt,
            cfg.duration_s) == ("calibration_rig", 1, 250, 9, 0.0, "text", 12.5)
    assert cfg.params == {"sensor_offset_kpa": "1.2", "flag": "true"}  # the scenario coerces


@pytest.mark.parametrize("url, words", [
    ("sim://no_such_scenario", "unknown scenario"),
    ("sim://normal?cups=0", "cups"),
    ("sim://normal?cups=17", "cups"),
    ("sim://normal?rate=abc", "rate"),
    ("sim://normal?rate=5", "rate"),
    ("sim://normal?speed=-1", "speed"),
    ("sim://normal?format=xml", "format"),
    ("sim://normal?duration=-3", "duration"),
    ("sim://normal?no_such_parameter=1", "no_such_parameter"),
    ("sim://normal?cups=2&cups=3", "twice"),
])
def test_bad_sim_urls_raise_one_line(url, words):
    with pytest.raises(serial.SerialException) as err:
        serial.serial_for_url(url)
    text = str(err.value)
    assert words in text and "\n" not in text


def test_sim_url_paced_never_runs_ahead_of_the_wall_clock():
    with serial.serial_for_url("sim://normal?cups=1&rate=200&speed=2", timeout=0.02) as port:
        t0 = time.monotonic()
        dec = Decoder("binary")
        last = 0.0
        while time.monotonic() - t0 < 0.4:
            for b in dec.feed(port.read(4096)).blocks:
                last = float(b.t[-1])
            # Device time may lag (a busy machine) but never lead wall x speed.
            assert last <= (time.monotonic() - t0) * 2 + 0.02
        assert last > 0


def test_sim_url_speed_zero_reads_the_whole_run_then_falls_silent():
    url = make_url("normal", cups=4, rate=500, speed=0, duration=3)
    with serial.serial_for_url(url, timeout=0.05) as port:
        assert port.read(0) == b""
        first = port.read(100)
        assert len(first) == 100  # read(size) gives no more than size
        rest = b""
        while data := port.read(100000):
            rest += data
        assert port.in_waiting == 0
        dec = Decoder("binary")
        res = dec.feed(first + rest)
        assert sum(b.n for b in res.blocks) == 1500
        assert res.blocks[-1].t[-1] == pytest.approx(2.998)  # samples at 0 .. 3 s - 2 ms


def test_sim_url_commands_take_effect():
    # VENT over the URL: the cup reads ambient (about 0 kPa suction) soon after.
    url = make_url("normal", cups=2, rate=100, speed=0, duration=60)
    with serial.serial_for_url(url, timeout=0.05) as port:
        dec = Decoder("binary")
        dec.feed(port.read(100 * 21 * 10))  # 10 s of samples (frames of 21 bytes)
        port.write(encode_command(Command(MsgType.START, seq=1, mask=0xFFFF)))
        dec.feed(port.read(100 * 21 * 15))
        port.write(encode_command(Command(MsgType.VENT, seq=2, mask=0b01)))
        res = dec.feed(port.read(100 * 21 * 10))
        acks = [m for m in res.messages if isinstance(m, Ack)]
        assert [a.seq for a in acks][-1] == 2
        suction = np.concatenate([b.suction for b in res.blocks])
        assert abs(suction[-1, 0]) < 1.0  # vented
        assert suction[-1, 1] > 15.0      # the other cup still holds vacuum


def test_sim_url_text_format_is_detected_as_text_by_the_link():
    c = Collect()
    link = SerialLink(make_url("normal", cups=3, rate=50, speed=1, format="text"),
                      reconnect=False)
    link.add_listener(c)
    link.start()
    try:
        assert wait_until(lambda: c.samples() >= 10)
        assert link.detected_mode == "text"
    finally:
        link.stop()
    assert all(b.cups == 3 for b in c.blocks)


def test_sim_url_cancel_read_and_close_unblock_a_reader():
    port = serial.serial_for_url("sim://normal?rate=10&speed=0.001", timeout=None)
    port.read(port.in_waiting)  # INFO and BOOT
    got = []
    t = threading.Thread(target=lambda: got.append(port.read(10_000)))
    t.start()
    port.cancel_read()
    t.join(5)
    assert not t.is_alive()
    port.close()


def _mean_reading(url: str) -> float:
    with serial.serial_for_url(url, timeout=0.05) as port:
        data = b""
        while chunk := port.read(65536):
            data += chunk
    res = Decoder("binary").feed(data)
    return float(np.nanmean(np.concatenate([b.suction for b in res.blocks])))


def test_sim_url_passes_scenario_parameters_through():
    # The rig's chamber sits at ambient for the first seconds: a sensor offset
    # shows as the reading itself.
    base = dict(cups=1, rate=100, speed=0, duration=0.5)
    plain = _mean_reading(make_url("calibration_rig", **base))
    offset = _mean_reading(make_url("calibration_rig", sensor_offset_kpa=1.2, **base))
    assert offset - plain == pytest.approx(1.2, abs=0.15)
