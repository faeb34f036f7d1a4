"""Commands: seq, ACK/NACK futures, retransmission of the same frame, timeouts."""

from __future__ import annotations

import pytest
from test_link_fakes import Collect, PtyDevice, wait_until

from firmware_bridge.codec import Command, encode_command
from firmware_bridge.errors import CommandNacked, CommandTimeout, LinkError, NotSupported
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import Ack, Nack
from firmware_bridge.protocol import MsgType, NackReason
from firmware_bridge.source import CommandTracker, Source

pytestmark = pytest.mark.timeout(30)

BAND = Command(MsgType.SET_BAND, mask=0b0101, low_kpa=20.0, high_kpa=25.0)


@pytest.fixture
def link_and_device():
    made = []

    def make(policy, **kw):
        dev = PtyDevice(policy)
        c = Collect()
        link = SerialLink(dev.path, keepalive=None, **kw)
        link.add_listener(c)
        link.start()
        assert link.wait_connected(5)
        made.append((link, dev))
        return link, dev, c

    yield make
    for link, dev in made:
        link.stop()
        dev.close()


def test_ack_round_trip(link_and_device):
    link, dev, c = link_and_device(lambda cmd, n: "ack")
    ack = link.command(BAND)
    got = dev.received(MsgType.SET_BAND)
    assert len(got) == 1
    assert got[0].mask == 0b0101 and got[0].low_kpa == pytest.approx(20.0)
    assert got[0].high_kpa == pytest.approx(25.0)
    assert isinstance(ack, Ack) and ack.cmd == MsgType.SET_BAND and ack.seq == got[0].seq
    assert c.wait(lambda c: any(isinstance(m, Ack) and m.seq == ack.seq for m in c.messages))
    # Each command gets the next seq.
    ack2 = link.command(Command(MsgType.START, mask=1))
    assert ack2.seq == (ack.seq + 1) % 65536


def test_nack_fails_with_the_reason(link_and_device):
    def refuse_band(cmd, n):
        return f"nack:{int(NackReason.OUT_OF_RANGE)}" if cmd.type == MsgType.SET_BAND else "ack"

    link, dev, c = link_and_device(refuse_band)
    with pytest.raises(CommandNacked) as exc:
        link.command(BAND)
    assert exc.value.reason == NackReason.OUT_OF_RANGE
    assert "SET_BAND" in str(exc.value) and "OUT_OF_RANGE" in str(exc.value)
    assert len(dev.received(MsgType.SET_BAND)) == 1  # a NACK is an answer: no resend
    assert c.wait(lambda c: any(isinstance(m, Nack) for m in c.messages))


def test_timeout_after_every_attempt_with_the_same_seq(link_and_device):
    def ignore_zero(cmd, n):
        return None if cmd.type == MsgType.ZERO else "ack"

    link, dev, _ = link_and_device(ignore_zero)
    future = link.send_command(Command(MsgType.ZERO, mask=1), timeout=0.1, attempts=3)
    with pytest.raises(CommandTimeout) as exc:
        future.result(timeout=5)
    got = dev.received(MsgType.ZERO)
    assert len(got) == 3 and len({c.seq for c in got}) == 1
    assert "ZERO" in str(exc.value) and "3 attempts" in str(exc.value)
    # The link is fine afterwards.
    assert isinstance(link.command(Command(MsgType.PING)), Ack)


def test_device_answering_only_the_second_attempt(link_and_device):
    def second_time(cmd, n):
        return "ack" if cmd.type != MsgType.VENT or n >= 2 else None

    link, dev, _ = link_and_device(second_time)
    ack = link.command(Command(MsgType.VENT, mask=2), timeout=0.1, attempts=3)
    got = dev.received(MsgType.VENT)
    assert len(got) == 2 and got[0].seq == got[1].seq == ack.seq


def test_text_device_takes_no_commands(link_and_device):
    link, dev, _ = link_and_device(None, mode="text")
    with pytest.raises(NotSupported):
        link.command(BAND)
    assert dev.received(MsgType.SET_BAND) == []


def test_commands_after_stop_fail_at_once():
    dev = PtyDevice()
    try:
        link = SerialLink(dev.path)
        link.start()
        link.stop()
        link.stop()  # idempotent
        with pytest.raises(LinkError):
            link.command(BAND)
    finally:
        dev.close()


def test_base_source_refuses_commands():
    class Quiet(Source):
        def start(self):
            pass

        def stop(self):
            self.notifier.stop()

    with Quiet() as q, pytest.raises(NotSupported):
        q.send_command(BAND)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_retransmits_identical_frames_then_times_out():
    sent: list[bytes] = []
    clock = Clock()
    tr = CommandTracker(sent.append, first_seq=65535, clock=clock)
    f1 = tr.submit(BAND, timeout=0.25, attempts=3)
    f2 = tr.submit(Command(MsgType.PING), timeout=0.25, attempts=1)
    assert len(sent) == 2
    # seq wraps 65535 -> 0 and is in the frame (bytes 5-6, little-endian).
    assert int.from_bytes(sent[0][5:7], "little") == 65535
    assert int.from_bytes(sent[1][5:7], "little") == 0
    assert sent[0] == encode_command(Command(MsgType.SET_BAND, seq=65535, mask=0b0101,
                                             low_kpa=20.0, high_kpa=25.0),
                                     int.from_bytes(sent[0][7:11], "little"))
    clock.now += 0.2
    tr.poll()
    assert len(sent) == 2  # not yet due
    clock.now += 0.1
    tr.poll()
    assert sent[2] == sent[0] and len(sent) == 3  # resent verbatim; PING had one attempt
    assert isinstance(f2.exception(timeout=0), CommandTimeout)
    # An ACK with the right seq but another command type answers nothing.
    assert tr.resolve(Ack(65535, int(MsgType.START))) is None
    clock.now += 0.3
    tr.poll()
    assert sent.count(sent[0]) == 3
    assert not f1.done()
    clock.now += 0.3
    assert tr.poll() is None  # nothing left
    assert isinstance(f1.exception(timeout=0), CommandTimeout)
    assert tr.resolve(Ack(65535, int(MsgType.SET_BAND))) is None  # too late: ignored


def test_tracker_write_failure_counts_as_an_attempt_and_is_reported():
    clock = Clock()

    def broken(frame: bytes) -> None:
        raise LinkError("/dev/ttyUSB0 is not connected")

    tr = CommandTracker(broken, clock=clock)
    f = tr.submit(BAND, timeout=0.1, attempts=2)
    clock.now += 0.1
    tr.poll()
    clock.now += 0.1
    tr.poll()
    exc = f.exception(timeout=0)
    assert isinstance(exc, CommandTimeout) and "not connected" in str(exc)


def test_tracker_duplicate_ack_resolves_once():
    tr = CommandTracker(lambda b: None, first_seq=7)
    f = tr.submit(BAND)
    assert tr.resolve(Ack(7, int(MsgType.SET_BAND))) is not None
    assert tr.resolve(Ack(7, int(MsgType.SET_BAND))) is None
    assert f.result(timeout=0).seq == 7
    assert tr.pending == 0


def test_keepalive_pings_an_idle_binary_device_and_keeps_its_acks_private():
    from firmware_bridge.messages import Ack as AckMsg

    dev = PtyDevice()
    c = Collect()
    link = SerialLink(dev.path, keepalive=0.1)
    link.add_listener(c)
    try:
        link.start()
        assert link.wait_connected(5)
        data, _ = dev.samples(5)  # the stream is binary: keep-alive applies
        dev.write(data)
        assert c.wait(lambda c: c.n_samples >= 5)
        assert wait_until(lambda: len(dev.received(MsgType.PING)) >= 3)
    finally:
        link.stop()
        dev.close()
    pings = dev.received(MsgType.PING)
    assert len({p.seq for p in pings}) == len(pings)  # each a new command, not a retry
    assert not any(isinstance(m, AckMsg) for m in c.messages)  # GET_INFO and PING acks stay inside


def test_tracker_rejects_an_unencodable_command_without_using_a_seq():
    sent: list[bytes] = []
    tr = CommandTracker(sent.append, first_seq=10)
    with pytest.raises(ValueError):
        tr.submit(Command(MsgType.SET_RATE, rate_hz=99999))
    assert sent == [] and tr.pending == 0
    tr.submit(Command(MsgType.SET_RATE, rate_hz=250))
    assert int.from_bytes(sent[0][5:7], "little") == 10
