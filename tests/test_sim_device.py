"""VirtualDevice against the real Simulation, decoded by the real Decoder:
boot, the sample stream, seq accounting, every command, retries, noise,
silence, the text format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from firmware_bridge.codec import Command, Decoder, decode_cal_data, encode_command, encode_frame
from firmware_bridge.conditions import SIGNAL_LOSS
from firmware_bridge.messages import Ack, DeviceEvent, DeviceInfo, Nack
from firmware_bridge.protocol import HEADER_SIZE, EventCode, MsgType, NackReason, Status
from sim.device import HOST_LOST_S, SimController, VirtualDevice, make_simulation
from sim.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(60)


class Host:
    """Plays the host: sends commands, decodes everything the device sends."""

    def __init__(self, device: VirtualDevice) -> None:
        self.dev = device
        self.dec = Decoder("auto")
        self.blocks: list = []
        self.messages: list = []
        self.seq = 100

    def feed(self, data: bytes) -> list:
        res = self.dec.feed(data)
        self.blocks += res.blocks
        self.messages += res.messages
        return res.blocks

    def run_to(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance to device time t_s; (t, suction, status) of the new samples."""
        blocks = self.feed(self.dev.produce_until(t_s))
        cups = self.dev.sim.cups
        if not blocks:
            return np.zeros(0), np.zeros((0, cups)), np.zeros((0, cups), np.uint8)
        return (np.concatenate([b.t for b in blocks]),
                np.concatenate([b.suction for b in blocks]),
                np.concatenate([b.status for b in blocks]))

    def send(self, cmd: Command) -> Ack | Nack:
        """Send ``cmd`` with a fresh seq (unless it has one) and return the answer."""
        if not cmd.seq:
            self.seq += 1
            cmd = Command(**{**cmd.__dict__, "seq": self.seq})
        return self.send_raw(encode_command(cmd), cmd.seq)

    def send_raw(self, frame: bytes, seq: int) -> Ack | Nack:
        before = len(self.messages)
        self.dev.receive(frame)
        self.feed(self.dev.produce_until(self.dev.t_s))  # replies go out at once
        answers = [m for m in self.messages[before:] if isinstance(m, (Ack, Nack))]
        assert len(answers) == 1, answers
        assert answers[0].seq == seq
        return answers[0]


def device(scenario: str = "normal", cups: int = 4, rate: int = 100, seed: int = 0,
           fmt: str = "binary", **params) -> VirtualDevice:
    return VirtualDevice(make_simulation(scenario, cups=cups, rate_hz=rate, seed=seed, **params),
                         fmt, seed)


def mask(*cups: int) -> int:
    return sum(1 << (c - 1) for c in cups)


# -- the stream ---------------------------------------------------------------------

def test_boot_sends_info_then_boot_event_then_samples():
    dev = device(cups=3, rate=50)
    host = Host(dev)
    t, suction, _ = host.run_to(1.0)
    info, boot = host.messages[:2]
    assert info == dev.sim.info and isinstance(info, DeviceInfo) and info.cups == 3
    assert isinstance(boot, DeviceEvent) and boot.code == EventCode.BOOT
    assert suction.shape == (50, 3)
    assert np.allclose(np.diff(t), 0.02)
    assert dev.counters.samples_sent == 50
    assert host.dec.stats.frames_ok == dev.counters.frames_sent
    assert host.dec.stats.crc_errors == 0


def test_produce_n_gives_n_samples_and_the_device_clock_follows():
    dev = device(rate=200)
    host = Host(dev)
    host.feed(dev.produce(300))
    assert sum(b.n for b in host.blocks) == 300
    assert host.blocks[0].t[0] == 0.0 and host.blocks[-1].t[-1] == pytest.approx(1.495)
    assert dev.t_s == pytest.approx(1.5)  # the time of the next sample


def test_same_seed_same_bytes():
    a = device("normal", seed=4).produce_until(5.0)
    b = device("normal", seed=4).produce_until(5.0)
    assert a == b
    assert a != device("normal", seed=5).produce_until(5.0)


def _window(scenario: str, condition: str | None = None) -> tuple[float, float]:
    sim = make_simulation(scenario, cups=4, rate_hz=100, seed=0)
    sim.advance_to(sim.duration_s or 120.0)
    spans = [(r.t_start, r.t_end) for r in sim.truth if condition in (None, r.condition)]
    assert spans, f"{scenario} injects nothing"
    return spans[0]


@pytest.mark.skipif("dropped_frames" not in SCENARIOS, reason="no dropped_frames scenario")
def test_dropped_frames_show_as_seq_gaps_of_exactly_the_dropped_count():
    t0, t1 = _window("dropped_frames")
    dev = device("dropped_frames")
    host = Host(dev)
    host.run_to(t1 + 1.0)
    dev.receive(encode_command(Command(MsgType.PING, seq=1)))  # a last frame closes any gap
    host.feed(dev.produce_until(dev.t_s))
    assert dev.counters.samples_dropped > 0
    assert host.dec.stats.frames_lost == dev.counters.samples_dropped == dev.counters.frames_unsent
    assert sum(b.lost_before for b in host.blocks) == dev.counters.samples_dropped
    assert sum(b.n for b in host.blocks) == dev.counters.samples_sent
    assert host.dec.stats.crc_errors == 0


@pytest.mark.skipif(SIGNAL_LOSS not in SCENARIOS, reason="no signal_loss scenario")
def test_signal_loss_is_silence_both_ways():
    t0, t1 = _window(SIGNAL_LOSS, SIGNAL_LOSS)
    dev = device(SIGNAL_LOSS)
    host = Host(dev)
    host.run_to(t0 + 0.5 * (t1 - t0))
    before = len(host.messages)
    dev.receive(encode_command(Command(MsgType.PING, seq=9)))  # the cable is cut
    assert dev.counters.bytes_ignored > 0
    t, _, _ = host.run_to(t1 + 2.0)
    t_all = np.concatenate([b.t for b in host.blocks])
    assert not np.any((t_all >= t0 + 0.02) & (t_all < t1 - 0.02))
    assert t[-1] == pytest.approx(t1 + 2.0, abs=0.02)  # talking again afterwards
    assert not any(isinstance(m, (Ack, Nack)) for m in host.messages[before:])
    gap = [b for b in host.blocks if b.t[0] >= t1 - 0.02][0]
    assert gap.gap_before and gap.lost_before > 0


@pytest.mark.skipif("noisy_link" not in SCENARIOS, reason="no noisy_link scenario")
def test_noisy_link_corrupts_counted_bytes_independent_of_chunking():
    end = 5.0
    one = device("noisy_link", seed=2)
    whole = one.produce_until(end)
    steps = device("noisy_link", seed=2)
    chunked = b"".join(steps.produce_until(t) for t in np.arange(0.037, end, 0.037).tolist()
                       + [end])
    assert whole == chunked
    assert one.counters.corrupted_bytes > 0
    dec = Decoder("binary")
    res = dec.feed(whole)
    assert dec.stats.crc_errors > 0
    assert sum(b.n for b in res.blocks) < one.counters.samples_sent
    # Corruption is the only difference from the same device on a clean link.
    clean_dev = device("noisy_link", seed=2)
    clean_dev.sim.link_corruption_rate = 0.0  # the link model off, nothing else
    clean = clean_dev.produce_until(end)
    diff = np.frombuffer(whole, np.uint8) != np.frombuffer(clean, np.uint8)
    assert int(diff.sum()) == one.counters.corrupted_bytes


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(type, seq, time_us) of every frame of a clean stream, from the headers."""
    out, pos = [], 0
    while pos < len(data):
        _, _, msg_type, length, seq, t_us = struct.unpack_from("<2sBBBHI", data, pos)
        out.append((msg_type, seq, t_us))
        pos += HEADER_SIZE + length + 2
    assert pos == len(data)
    return out


def test_device_events_go_out_in_time_order_between_samples():
    name = "interlock" if "interlock" in SCENARIOS else "over_suction"
    t0, t1 = _window(name)
    dev = device(name)
    frames = _frames(dev.produce_until(t1 + 2.0))
    events = [f for f in frames if f[0] == MsgType.EVENT][1:]  # after BOOT
    assert events, "the scenario raises a device event"
    assert [f[1] for f in frames] == list(range(len(frames)))  # every frame takes the next seq
    times = [f[2] for f in frames]
    assert times == sorted(times)  # events sit between the samples around them
    assert dev.counters.events_sent == len(events) + 1


# -- commands ------------------------------------------------------------------------

def test_ping_and_get_info():
    dev = device(cups=2)
    host = Host(dev)
    host.run_to(0.5)
    assert isinstance(host.send(Command(MsgType.PING)), Ack)
    n = len(host.messages)
    ack = host.send(Command(MsgType.GET_INFO))
    assert isinstance(ack, Ack) and ack.cmd == MsgType.GET_INFO
    assert isinstance(host.messages[n + 1], DeviceInfo)  # INFO right after the ACK


def test_set_band_regulates_the_cup_to_the_new_band():
    dev = device(cups=2)
    host = Host(dev)
    host.run_to(1.0)
    assert isinstance(host.send(Command(MsgType.START, mask=mask(1, 2))), Ack)
    ack = host.send(Command(MsgType.SET_BAND, mask=mask(1), low_kpa=10.0, high_kpa=12.0))
    assert isinstance(ack, Ack)
    host.run_to(20.0)
    _, suction, status = host.run_to(30.0)
    assert np.all(status[:, 0] & Status.REGULATING)
    assert 9.0 <= np.nanmin(suction[:, 0]) and np.nanmax(suction[:, 0]) <= 13.0
    assert 19.0 <= np.nanmin(suction[:, 1]) and np.nanmax(suction[:, 1]) <= 26.0


def test_vent_empties_the_cup_and_stop_holds_it():
    dev = device(cups=2)
    host = Host(dev)
    host.run_to(1.0)
    host.send(Command(MsgType.START, mask=0xFFFF))
    host.run_to(20.0)
    assert isinstance(host.send(Command(MsgType.VENT, mask=mask(1))), Ack)
    assert isinstance(host.send(Command(MsgType.STOP, mask=mask(2))), Ack)
    _, held0, _ = host.run_to(20.5)
    _, suction, status = host.run_to(30.0)
    assert abs(suction[-1, 0]) < 1.0                       # vented to ambient
    assert np.all(status[-100:, 0] & Status.VALVE_OPEN)
    assert not np.any(status[-100:, 0] & Status.REGULATING)
    assert not np.any(status[:, 1] & (Status.PUMP_ON | Status.REGULATING))  # stopped
    assert suction[-1, 1] > 15.0                           # ...and holding its vacuum
    assert suction[-1, 1] == pytest.approx(held0[-1, 1], rel=0.1)


def test_zero_tares_the_present_reading():
    # A sensor 1.5 kPa off, cup still at ambient (the session starts it at 1 s).
    dev = device(cups=1, sensor_offset_kpa=1.5)
    host = Host(dev)
    _, before, _ = host.run_to(0.5)
    assert float(np.nanmean(before[:, 0])) == pytest.approx(1.5, abs=0.3)
    ack = host.send(Command(MsgType.ZERO, mask=mask(1)))
    assert isinstance(ack, Ack)
    _, after, _ = host.run_to(0.95)
    assert abs(float(np.nanmean(after[:, 0]))) < 0.3  # the present reading became 0 kPa


def test_read_cal_returns_what_write_cal_wrote():
    dev = device(cups=4)
    host = Host(dev)
    host.run_to(0.5)
    coeffs = (0.75, 1.0125, 0.001)
    assert isinstance(host.send(Command(MsgType.WRITE_CAL, cup=3, coeffs=coeffs)), Ack)
    ack = host.send(Command(MsgType.READ_CAL, cup=3))
    cup, got, valid = decode_cal_data(ack.data)
    assert cup == 3 and valid
    assert got == tuple(float(np.float32(c)) for c in coeffs)
    _, other, _ = decode_cal_data(host.send(Command(MsgType.READ_CAL, cup=2)).data)
    assert other == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("cmd", [
    Command(MsgType.READ_CAL, cup=0),
    Command(MsgType.READ_CAL, cup=5),
    Command(MsgType.WRITE_CAL, cup=9, coeffs=(0.0, 1.0, 0.0)),
    Command(MsgType.VENT, mask=1 << 4),
    Command(MsgType.START, mask=0),
    Command(MsgType.SET_BAND, mask=mask(2, 6), low_kpa=20.0, high_kpa=25.0),
], ids=lambda c: f"{c.type.name}-cup{c.cup}-mask{c.mask:x}")
def test_a_cup_the_device_does_not_have_is_nacked_bad_cup(cmd):
    host = Host(device(cups=4))
    host.run_to(0.2)
    nack = host.send(cmd)
    assert isinstance(nack, Nack) and nack.reason == NackReason.BAD_CUP


def test_malformed_frames_are_nacked_with_the_reason():
    host = Host(device())
    host.run_to(0.2)
    short = host.send_raw(encode_frame(MsgType.START, b"\x01", 40, 0), 40)
    assert short.reason == NackReason.BAD_LENGTH and short.cmd == MsgType.START
    unknown = host.send_raw(encode_frame(0x1F, b"", 41, 0), 41)
    assert unknown.reason == NackReason.UNKNOWN_COMMAND and unknown.cmd == 0x1F


def test_out_of_range_is_the_simulations_answer():
    host = Host(device())
    host.run_to(0.2)
    nack = host.send(Command(MsgType.SET_BAND, mask=0xFFFF, low_kpa=25.0, high_kpa=20.0))
    assert isinstance(nack, Nack) and nack.reason == NackReason.OUT_OF_RANGE
    nack = host.send(Command(MsgType.SET_RATE, rate_hz=5))
    assert isinstance(nack, Nack) and nack.reason == NackReason.OUT_OF_RANGE


def test_set_rate_changes_the_sample_spacing_and_info():
    dev = device(rate=100)
    host = Host(dev)
    host.run_to(1.0)
    assert isinstance(host.send(Command(MsgType.SET_RATE, rate_hz=250)), Ack)
    host.run_to(1.02)
    t, _, _ = host.run_to(2.0)
    assert np.allclose(np.diff(t), 0.004)
    n = len(host.messages)
    host.send(Command(MsgType.GET_INFO))
    assert host.messages[n + 1].rate_hz == 250


class CountingController(SimController):
    def __init__(self, sim) -> None:
        super().__init__(sim)
        self.executed: list[Command] = []

    def execute(self, cmd: Command):
        self.executed.append(cmd)
        return super().execute(cmd)


def test_a_retry_with_the_same_seq_is_answered_again_but_executed_once():
    sim = make_simulation("normal", cups=2, rate_hz=100)
    ctl = CountingController(sim)
    dev = VirtualDevice(sim, controller=ctl)
    host = Host(dev)
    host.run_to(0.5)
    write = Command(MsgType.WRITE_CAL, seq=7, cup=1, coeffs=(0.5, 1.0, 0.0))
    first = host.send(write)
    again = host.send(write)
    assert first == again and isinstance(first, Ack)
    assert ctl.executed == [write]
    assert dev.counters.commands_repeated == 1
    # A NACKed command is answered again with the same NACK.
    bad = Command(MsgType.READ_CAL, seq=8, cup=7)
    assert host.send(bad) == host.send(bad)
    # The same seq after another command is a new command: executed.
    host.send(Command(MsgType.PING, seq=9))
    host.send(write)
    assert ctl.executed.count(write) == 2


def test_host_lost_once_after_five_silent_seconds_and_again_after_the_host_returns():
    dev = device()
    host = Host(dev)
    host.run_to(1.0)
    host.run_to(1.0 + 2 * HOST_LOST_S)  # never heard a host: no HOST_LOST
    assert not [m for m in host.messages if getattr(m, "code", None) == EventCode.HOST_LOST]
    host.send(Command(MsgType.PING))
    heard = dev.t_s
    host.run_to(heard + 3 * HOST_LOST_S)
    lost = [m for m in host.messages if getattr(m, "code", None) == EventCode.HOST_LOST]
    assert len(lost) == 1 and lost[0].t == pytest.approx(heard + HOST_LOST_S, abs=0.02)
    host.send(Command(MsgType.PING))
    host.run_to(dev.t_s + HOST_LOST_S + 0.1)
    assert len([m for m in host.messages if getattr(m, "code", None) == EventCode.HOST_LOST]) == 2


# -- text format -----------------------------------------------------------------------

def test_text_format_parses_and_ignores_commands():
    dev = device(cups=3, rate=20, fmt="text")
    data = dev.produce_until(1.0)
    lines = data.decode("ascii").splitlines()
    assert len(lines) == 20 and lines[0].startswith("t:0.000 cup1:")
    dev.receive(encode_command(Command(MsgType.PING, seq=1)))
    more = dev.produce_until(2.0)
    assert dev.counters.bytes_ignored > 0
    dec = Decoder("auto")
    res = dec.feed(data + more)
    assert dec.mode == "text" and dec.stats.text_errors == 0
    assert not res.messages
    t = np.concatenate([b.t for b in res.blocks])
    assert t[-1] == pytest.approx(1.95) and res.blocks[0].cups == 3


def test_bad_format_is_refused():
    with pytest.raises(ValueError, match="format"):
        VirtualDevice(make_simulation("normal"), "hex")


def test_device_clock_wraps_at_2_to_32_us_and_the_host_unwraps_it():
    dev = device(cups=1, rate=100, t0_s=4294.0)  # the u32 µs clock wraps at 4294.967296 s
    host = Host(dev)
    t, _, _ = host.run_to(4296.0)
    assert t[0] == pytest.approx(4294.0)
    assert np.all(np.diff(t) > 0) and t[-1] == pytest.approx(4295.99)
    assert host.dec.stats.frames_lost == 0 and sum(b.n for b in host.blocks) == 200
