"""The reference firmware's C core, compiled for the host and driven with ctypes.

Frames are built and parsed here with ``struct`` straight from
docs/protocol.md and ``firmware_bridge.protocol.crc16_ccitt_false``, so these
tests do not depend on the C encoder they check (the Python codec and the
shared vectors are checked in test_firmware_codec.py).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import cfirmware
from firmware_bridge.conditions import regulator_thresholds
from firmware_bridge.protocol import (
    NO_READING,
    EventCode,
    InfoFlags,
    MsgType,
    NackReason,
    Status,
    crc16_ccitt_false,
)

pytestmark = pytest.mark.skipif(cfirmware.compiler() is None, reason="no C compiler on PATH")


@pytest.fixture(autouse=True, scope="module")
def _built():
    cfirmware.load_library()  # compile once, outside any hypothesis deadline

# --- an independent frame codec, straight from docs/protocol.md ---------------------


@dataclass
class Frame:
    type: int
    seq: int
    t: int
    payload: bytes


def frame_bytes(msg_type: int, seq: int, payload: bytes = b"", t: int = 0) -> bytes:
    body = struct.pack("<BBBHI", 1, msg_type, len(payload), seq & 0xFFFF, t) + payload
    return b"\xa5\x5a" + body + struct.pack("<H", crc16_ccitt_false(body))


def parse(data: bytes) -> list[Frame]:
    """Strict: the device's output must be nothing but good frames."""
    out, i = [], 0
    while i < len(data):
        assert data[i:i + 3] == b"\xa5\x5a\x01", f"garbage at {i}: {data[i:i + 16].hex()}"
        typ, n, seq, t = struct.unpack_from("<BBHI", data, i + 3)
        end = i + 11 + n
        assert end + 2 <= len(data), "truncated frame"
        (crc,) = struct.unpack_from("<H", data, end)
        assert crc == crc16_ccitt_false(data[i + 2:end]), "bad CRC from the device"
        out.append(Frame(typ, seq, t, bytes(data[i + 11:end])))
        i = end + 2
    return out


def sample(f: Frame) -> tuple[np.ndarray, np.ndarray]:
    n = f.payload[0]
    assert len(f.payload) == 1 + 3 * n
    return (np.frombuffer(f.payload, "<i2", n, 1).astype(int),
            np.frombuffer(f.payload, np.uint8, n, 1 + 2 * n).astype(int))


def event(f: Frame) -> tuple[int, int, int]:
    assert f.type == MsgType.EVENT and len(f.payload) == 4
    return struct.unpack("<BBh", f.payload)


def mask_payload(mask: int) -> bytes:
    return struct.pack("<H", mask)


# --- a bench: the firmware plus a crude cup, stepped at the firmware's sample times ----


class Bench:
    """Firmware + a first-order cup: the pump raises suction at `pump_rate` kPa/s,
    a closed cup leaks at `leak` 1/s, an open valve vents at `vent` 1/s.
    Each sample the cup model moves to the sample time and the firmware polls."""

    def __init__(self, cups: int = 4, bits: int = 10, t0: int = 0, **kw) -> None:
        self.dev = cfirmware.CoreDevice(cups, adc_bits=bits, t_us=t0, **kw)
        self.cups, self.bits, self.t = cups, bits, t0
        self.seq = 100
        self.suction = np.zeros(cups)
        self.pump_rate, self.leak, self.vent = 40.0, 0.05, 20.0
        self.override: np.ndarray | None = None  # ADC counts forced by a test
        self.pump = np.zeros(cups, bool)
        self.valve = np.ones(cups, bool)
        self.frames: list[Frame] = parse(self.dev.read())

    def counts(self) -> np.ndarray:
        if self.override is not None:
            return self.override
        return cfirmware.mpxv6115v_counts(self.suction, self.bits)

    def run(self, seconds: float) -> list[Frame]:
        """Advance the device clock by `seconds`, sampling on the firmware's schedule."""
        end = self.t + round(seconds * 1e6)
        got: list[Frame] = []
        while True:
            nxt = self.t + ((self.dev.next_sample_us - self.t) & 0xFFFFFFFF)
            if nxt > end:
                break
            dt = (nxt - self.t) / 1e6
            for i in range(self.cups):
                if self.valve[i]:
                    self.suction[i] *= math.exp(-self.vent * dt)
                elif self.pump[i]:
                    self.suction[i] += self.pump_rate * dt
                else:
                    self.suction[i] *= math.exp(-self.leak * dt)
            self.t = nxt
            self.pump, self.valve = self.dev.step(nxt, self.counts())
            got += parse(self.dev.read())
        self.t = end
        self.dev.set_time(end)
        self.dev.poll()
        got += parse(self.dev.read())
        self.frames += got
        return got

    def command(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> list[Frame]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.dev.set_time(self.t)
        self.dev.feed(frame_bytes(msg_type, seq, payload, self.t & 0xFFFFFFFF))
        got = parse(self.dev.read())
        self.frames += got
        return got

    def ack(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> bytes:
        """Send a command that must be ACKed; return the ACK's data."""
        got = self.command(msg_type, payload, seq)
        acks = [f for f in got if f.type in (MsgType.ACK, MsgType.NACK)]
        assert len(acks) == 1 and acks[0].type == MsgType.ACK, acks
        cseq, ctype = struct.unpack_from("<HB", acks[0].payload)
        assert (cseq, ctype) == ((self.seq if seq is None else seq) & 0xFFFF, msg_type)
        return acks[0].payload[3:]

    def nack(self, msg_type: int, payload: bytes = b"") -> int:
        got = self.command(msg_type, payload)
        (f,) = [f for f in got if f.type in (MsgType.ACK, MsgType.NACK)]
        assert f.type == MsgType.NACK, f
        cseq, ctype, reason = struct.unpack("<HBB", f.payload)
        assert (cseq, ctype) == (self.seq, msg_type)
        return reason


def samples(frames: list[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = [f for f in frames if f.type == MsgType.SAMPLE]
    t = np.array([f.t for f in s], dtype=np.int64)
    su = np.array([sample(f)[0] for f in s])
    stt = np.array([sample(f)[1] for f in s])
    return t, su, stt


def events(frames: list[Frame]) -> list[tuple[int, int, int]]:
    return [event(f) for f in frames if f.type == MsgType.EVENT]


# --- pure functions -------------------------------------------------------------------


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_crc_matches_python(data, init):
    assert cfirmware.crc16(data, init) == crc16_ccitt_false(data, init)


def test_crc_check_value():
    assert cfirmware.crc16(b"123456789") == 0x29B1


@given(st.sampled_from(list(MsgType)), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
       st.binary(max_size=255))
def test_c_encoder_builds_the_documented_frame(msg_type, seq, t, payload):
    assert cfirmware.encode_frame(msg_type, seq, t, payload) == frame_bytes(msg_type, seq,
                                                                            payload, t)


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_counts_to_suction_follows_the_mpxv6115v_datasheet(bits):
    counts = np.arange(0, 1 << bits, 1 if bits <= 10 else 1 + (1 << (bits - 10)) // 3)
    c = np.array([cfirmware.counts_to_centi(int(k), bits) for k in counts])
    # suction = -P, Vout/Vs = counts/2^bits = 0.007652 P + 0.92
    exact = (0.92 - counts / (1 << bits)) / 0.007652 * 100
    # rounding to 0.01 kPa (0.5) plus the int32 fixed point (< 0.04, i.e. 0.0004 kPa)
    assert np.max(np.abs(c - exact)) <= 0.54
    assert abs(np.mean(c - exact)) < 0.05  # and no bias
    assert cfirmware.counts_to_centi(942, 10) == round((0.92 - 942 / 1024) / 0.007652 * 100)


def test_sensor_model_round_trip_within_one_count():
    s = np.linspace(-5, 110, 500)
    for bits in (10, 12):
        back = np.array([cfirmware.counts_to_centi(int(k), bits) / 100
                         for k in cfirmware.mpxv6115v_counts(s, bits)])
        lsb_kpa = 1 / (1 << bits) / 0.007652
        assert np.max(np.abs(back - s)) <= lsb_kpa / 2 + 0.006


def reference_rule(pump_on: bool, s: int, low: int, high: int) -> bool:
    """conditions.regulator_thresholds, evaluated exactly (Fractions of 0.01 kPa)."""
    q = Fraction(high - low, 4)
    on, off = low + q, high - q
    if s < on:
        return True
    if s >= off:
        return False
    return pump_on


@settings(max_examples=400)
@given(st.booleans(), st.integers(-32767, 32767), st.integers(-8000, 8000),
       st.integers(1, 8000))
def test_c_regulator_is_the_shared_rule(pump_on, s, low, width):
    high = low + width
    assert cfirmware.regulate(pump_on, s, low, high) == reference_rule(pump_on, s, low, high)


def test_default_band_switch_points_are_exact():
    on, off = regulator_thresholds(20.0, 25.0)
    assert (on, off) == (21.25, 23.75)
    r = cfirmware.regulate
    assert r(False, 2124, 2000, 2500) and not r(False, 2125, 2000, 2500)
    assert r(True, 2374, 2000, 2500) and not r(True, 2375, 2000, 2500)


# --- boot, INFO, samples ----------------------------------------------------------------


def test_boot_sends_info_then_boot_event():
    b = Bench(cups=3, serial="UNO-0042", reset_cause=2)
    assert [f.type for f in b.frames] == [MsgType.INFO, MsgType.EVENT]
    assert [f.seq for f in b.frames] == [0, 1]
    info = struct.unpack("<16s3BBHBBBh", b.frames[0].payload)
    assert info[0].rstrip(b"\0") == b"UNO-0042"
    assert info[1:4] == (1, 0, 0)
    assert info[4:] == (3, 100, 1, InfoFlags.CAL_ON_DEVICE, 10, 3000)
    assert event(b.frames[1]) == (EventCode.BOOT, 0, 2)


def test_idle_samples_at_100_hz_with_vented_cups_and_consecutive_seq():
    b = Bench(cups=2)
    b.suction[:] = [0.0, 0.0]
    got = b.run(1.0)
    t, su, stt = samples(got)
    assert len(t) == 101  # t = 0 .. 1 s inclusive
    assert np.all(np.diff(t) == 10_000)
    assert np.all(su == su[0, 0]) and abs(su[0, 0]) <= 13  # one 10-bit count of 0 kPa
    assert np.all(stt == Status.VALVE_OPEN)
    seqs = [f.seq for f in b.frames]
    assert seqs == list(range(len(seqs)))


def test_sample_rate_setting_and_fractional_period():
    b = Bench(cups=1)
    b.run(0.05)
    b.ack(MsgType.SET_RATE, struct.pack("<H", 300))
    got = b.run(1.0)
    t, _, _ = samples(got)
    assert len(t) == 300
    # 1e6/300 is not an integer: periods are 3333 or 3334 us, never drifting
    assert set(np.diff(t)) <= {3333, 3334}
    assert t[-1] - t[0] == round(299 * 1e6 / 300) or abs(t[-1] - t[0] - 299e6 / 300) < 1
    b.command(MsgType.GET_INFO)
    info = [f for f in b.frames if f.type == MsgType.INFO][-1]
    assert struct.unpack_from("<H", info.payload, 20)[0] == 300
    for bad in (9, 2001, 0):
        assert b.nack(MsgType.SET_RATE, struct.pack("<H", bad)) == NackReason.OUT_OF_RANGE


def test_clock_wrap_keeps_sampling_evenly():
    b = Bench(cups=1, t0=2**32 - 50_000)
    got = b.run(0.2)
    t, _, _ = samples(got)
    assert len(t) == 21
    assert np.all(np.diff(t.astype(np.int64)) % 2**32 == 10_000)
    assert t.min() < 100_000 < 2**32 - 60_000 < t.max()


# --- commands, the parser --------------------------------------------------------------


def test_ping_and_get_info_answer_with_the_command_seq():
    b = Bench()
    assert b.ack(MsgType.PING) == b""
    got = b.command(MsgType.GET_INFO, seq=0xFFFF)
    assert [f.type for f in got] == [MsgType.ACK, MsgType.INFO]
    assert struct.unpack("<HB", got[0].payload) == (0xFFFF, MsgType.GET_INFO)


@pytest.mark.parametrize("msg_type,payload,reason", [
    (0x20, b"", NackReason.UNKNOWN_COMMAND),
    (MsgType.SAMPLE, b"\x00", NackReason.UNKNOWN_COMMAND),
    (0x0F, b"", NackReason.UNKNOWN_COMMAND),
    (MsgType.START, b"\x01", NackReason.BAD_LENGTH),
    (MsgType.PING, b"\x00", NackReason.BAD_LENGTH),
    (MsgType.WRITE_CAL, b"\x01" * 12, NackReason.BAD_LENGTH),
    (MsgType.START, mask_payload(0), NackReason.BAD_CUP),
    (MsgType.STOP, mask_payload(1 << 4), NackReason.BAD_CUP),   # 4 cups: bit 4 = cup 5
    (MsgType.VENT, mask_payload(0x8001), NackReason.BAD_CUP),
    (MsgType.READ_CAL, b"\x00", NackReason.BAD_CUP),
    (MsgType.READ_CAL, b"\x05", NackReason.BAD_CUP),
    (MsgType.SET_BAND, struct.pack("<Hhh", 1, 2500, 2000), NackReason.OUT_OF_RANGE),
    (MsgType.SET_BAND, struct.pack("<Hhh", 1, 2000, 2000), NackReason.OUT_OF_RANGE),
    (MsgType.SET_BAND, struct.pack("<Hhh", 1, -100, 2000), NackReason.OUT_OF_RANGE),
    (MsgType.SET_BAND, struct.pack("<Hhh", 1, 2000, 3001), NackReason.OUT_OF_RANGE),
    (MsgType.SET_LIMIT, struct.pack("<h", 99), NackReason.OUT_OF_RANGE),
    (MsgType.SET_LIMIT, struct.pack("<h", 10001), NackReason.OUT_OF_RANGE),
    (MsgType.SET_LIMIT, struct.pack("<h", 2499), NackReason.OUT_OF_RANGE),  # under a band
])
def test_bad_commands_get_the_right_nack(msg_type, payload, reason):
    b = Bench(cups=4)
    b.run(0.02)
    assert b.nack(msg_type, payload) == reason
    # nothing changed: still idle, vented
    _, _, stt = samples(b.run(0.02))
    assert np.all(stt == Status.VALVE_OPEN)


def test_commands_survive_garbage_split_bytes_and_corrupt_frames():
    b = Bench()
    ping1 = frame_bytes(MsgType.PING, 1)
    bad = bytearray(frame_bytes(MsgType.PING, 2))
    bad[-1] ^= 0x40  # CRC error: must be ignored
    false_sync = b"\xa5\x5a\x01\x10\xf0"  # claims a 240-byte payload: cannot be a command
    ping3 = frame_bytes(MsgType.PING, 3)
    truncated = frame_bytes(MsgType.START, 4, mask_payload(1))[:9]  # swallows what follows
    ping5 = frame_bytes(MsgType.PING, 5)
    ping6 = frame_bytes(MsgType.PING, 6)
    stream = (b"\x00\xff\xa5garbage\xa5\x5a" + ping1 + bytes(bad) + false_sync + ping3
              + truncated + ping5 + ping6)
    for byte in stream:  # one byte at a time, as the UART delivers them
        b.dev.feed(bytes([byte]))
    got = parse(b.dev.read())
    acked = [struct.unpack_from("<H", f.payload)[0] for f in got if f.type == MsgType.ACK]
    assert acked == [1, 3, 5, 6]
    assert not [f for f in got if f.type == MsgType.NACK]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(0, 0xFFFF)), min_size=1,
                max_size=12), st.integers(1, 64))
def test_every_command_between_random_garbage_is_answered_once(chunks, cut):
    b = Bench(cups=1)
    stream, want = b"", []
    for garbage, seq in chunks:
        # the garbage may even end in a sync and a plausible header that swallows
        # the real frame: the parser must rescan and still find it
        stream += garbage + frame_bytes(MsgType.PING, seq)
        want.append(seq)
    for i in range(0, len(stream), cut):
        b.dev.feed(stream[i:i + cut])
    got = parse(b.dev.read())
    acked = [struct.unpack_from("<H", f.payload)[0] for f in got if f.type == MsgType.ACK]
    # a retry with the seq of the previous command is answered but not re-run; both
    # count as an answer here
    assert acked == want


def test_repeated_seq_is_re_acked_without_re_executing():
    b = Bench(cups=1)
    b.run(0.05)
    start = frame_bytes(MsgType.START, 7, mask_payload(1))
    b.dev.feed(start)
    b.run(0.5)
    over = cfirmware.mpxv6115v_counts(31.0, 10)  # over the hard limit
    b.override = np.array([over])
    b.run(0.05)
    assert (EventCode.INTERLOCK_TRIPPED, 1,
            cfirmware.counts_to_centi(int(over), 10)) in events(b.frames)
    b.override = None
    b.suction[:] = 0
    b.run(0.1)
    before = len(b.frames)
    b.dev.feed(start)  # the host's retry of START seq 7: same answer, not run again
    got = parse(b.dev.read())
    assert [(f.type, f.payload) for f in got] == [(MsgType.ACK, struct.pack("<HB", 7, 0x12))]
    _, _, stt = samples(b.run(0.1))
    assert np.all(stt[:, 0] & Status.INTERLOCK) and not np.any(stt[:, 0] & Status.REGULATING)
    assert EventCode.INTERLOCK_CLEARED not in [e[0] for e in events(b.frames[before:])]
    # a new START (new seq) does clear the latch
    b.ack(MsgType.START, mask_payload(1), seq=8)
    assert (EventCode.INTERLOCK_CLEARED, 1, 0) in events(b.frames)
    _, _, stt = samples(b.run(0.1))
    assert np.all(stt[:, 0] & Status.REGULATING) and not np.any(stt[:, 0] & Status.INTERLOCK)


def test_same_seq_with_another_command_is_executed():
    b = Bench(cups=1)
    b.ack(MsgType.PING, seq=9)
    assert b.ack(MsgType.READ_CAL, b"\x01", seq=9)[0] == 1


# --- regulation and interlock -------------------------------------------------------------


def test_regulates_inside_the_band_with_the_shared_rule():
    b = Bench(cups=2)
    b.run(0.1)
    b.ack(MsgType.START, mask_payload(0xFFFF))
    got = b.run(20.0)
    t, su, stt = samples(got)
    pump = (stt & Status.PUMP_ON) > 0
    assert np.all(stt & Status.REGULATING) and not np.any(stt & Status.VALVE_OPEN)
    # the pump decision in each sample is the rule applied to that sample's reading
    prev = np.zeros(2, bool)
    for k in range(len(t)):
        for c in range(2):
            assert pump[k, c] == reference_rule(prev[c], su[k, c], 2000, 2500), (k, c)
        prev = pump[k]
    settled = su[t > t[0] + 2_000_000]
    assert settled.min() >= 2000 - 15 and settled.max() <= 2500
    assert pump[:, 0].sum() > 10 and (~pump[:, 0]).sum() > 10  # it really cycles


def test_set_band_moves_the_regulated_band_of_the_selected_cups_only():
    b = Bench(cups=2)
    b.ack(MsgType.SET_BAND, struct.pack("<Hhh", 0b10, 1000, 1400))
    b.ack(MsgType.START, mask_payload(0b11))
    t, su, _ = samples(b.run(15.0))
    late = su[t > t[0] + 5_000_000]
    assert 2000 - 15 <= late[:, 0].min() and late[:, 0].max() <= 2500
    assert 1000 - 15 <= late[:, 1].min() and late[:, 1].max() <= 1400


def test_stop_holds_and_vent_releases():
    b = Bench(cups=1)
    b.ack(MsgType.START, mask_payload(1))
    b.run(3.0)
    b.ack(MsgType.STOP, mask_payload(1))
    _, su, stt = samples(b.run(1.0))
    assert np.all(stt == 0)  # pump off, valve closed, not regulating
    assert su[-1, 0] > 1900  # the cup holds (slow leak only)
    b.ack(MsgType.VENT, mask_payload(1))
    _, su, stt = samples(b.run(1.0))
    assert np.all(stt == Status.VALVE_OPEN)
    assert su[-1, 0] < 50


def counts_for_centi(bits: int, centi: int) -> int:
    """ADC counts whose reading is exactly `centi` (0.01 kPa): searched next to
    the ideal inverse of the datasheet formula."""
    k0 = int(cfirmware.mpxv6115v_counts(centi / 100, bits))
    for k in sorted(range(max(k0 - 8, 0), min(k0 + 9, 1 << bits)), key=lambda k: abs(k - k0)):
        if cfirmware.counts_to_centi(k, bits) == centi:
            return k
    raise AssertionError(centi)


def test_interlock_trips_above_the_limit_only_and_latches_until_start():
    b = Bench(cups=2, bits=16)
    b.ack(MsgType.START, mask_payload(0b11))
    b.run(3.0)
    at_limit = counts_for_centi(16, 3000)
    above = counts_for_centi(16, 3001)
    normal = int(cfirmware.mpxv6115v_counts(22.0, 16))
    b.override = np.array([at_limit, normal])
    b.run(0.1)
    assert not [e for e in events(b.frames) if e[0] == EventCode.INTERLOCK_TRIPPED]
    b.override = np.array([above, normal])
    got = b.run(0.02)
    assert (EventCode.INTERLOCK_TRIPPED, 1, 3001) in events(got)
    b.override = None  # the real cup again: it vents
    _, su, stt = samples(b.run(2.0))
    assert np.all(stt[:, 0] == Status.VALVE_OPEN | Status.INTERLOCK)
    assert su[-1, 0] < 50
    assert np.all(stt[:, 1] & Status.REGULATING)  # the other cup carries on
    b.ack(MsgType.STOP, mask_payload(0b11))  # STOP does not close a latched cup's valve
    _, _, stt = samples(b.run(0.1))
    assert np.all(stt[:, 0] == Status.VALVE_OPEN | Status.INTERLOCK)
    b.ack(MsgType.START, mask_payload(1))
    assert events(b.frames)[-1] == (EventCode.INTERLOCK_CLEARED, 1, 0)
    _, su, stt = samples(b.run(3.0))
    assert np.all(stt[:, 0] & Status.REGULATING) and su[-1, 0] > 2000


def test_interlock_also_guards_a_holding_cup():
    # a stopped cup with its valve closed: ambient pressure rises (aircraft descent)
    b = Bench(cups=1)
    b.ack(MsgType.START, mask_payload(1))
    b.run(3.0)
    b.ack(MsgType.STOP, mask_payload(1))
    b.suction[0] = 35.0
    got = b.run(0.05)
    assert [e[:2] for e in events(got)] == [(EventCode.INTERLOCK_TRIPPED, 1)]
    _, _, stt = samples(got)
    assert stt[-1, 0] == Status.VALVE_OPEN | Status.INTERLOCK


def test_set_limit_changes_the_trip_point_and_info():
    b = Bench(cups=1)
    b.ack(MsgType.SET_BAND, struct.pack("<Hhh", 1, 1000, 1500))
    b.ack(MsgType.SET_LIMIT, struct.pack("<h", 1800))
    b.command(MsgType.GET_INFO)
    info = [f for f in b.frames if f.type == MsgType.INFO][-1]
    assert struct.unpack_from("<h", info.payload, 25)[0] == 1800
    b.ack(MsgType.START, mask_payload(1))
    b.run(2.0)
    assert not events(b.frames)[1:]
    b.suction[0] = 19.0
    got = b.run(0.02)
    assert [e[:2] for e in events(got)] == [(EventCode.INTERLOCK_TRIPPED, 1)]


# --- sensor faults -------------------------------------------------------------------------


def raw_centi(kpa: float, bits: int = 10) -> int:
    return cfirmware.counts_to_centi(int(cfirmware.mpxv6115v_counts(kpa, bits)), bits)


@pytest.mark.parametrize("counts", [0, 5, 1023, 1000, 157])
def test_out_of_range_reading_stops_the_pump_and_recovers(counts):
    # 0, 5: cut wire / short to ground (~120 kPa); 1023, 1000: short to 5 V or
    # pushed (-10.5, -7.4 kPa); 157: 100.1 kPa. Valid: -3.00 .. 100.00 kPa
    b = Bench(cups=2)
    b.ack(MsgType.START, mask_payload(0b11))
    b.run(0.3)  # pumping down
    assert b.pump[0]
    b.override = np.array([counts, int(cfirmware.mpxv6115v_counts(b.suction[1], 10))])
    got = b.run(0.2)
    assert events(got)[0] == (EventCode.SENSOR_FAULT, 1, cfirmware.counts_to_centi(counts, 10))
    _, su, stt = samples(got)
    assert np.all(su[:, 0] == NO_READING)
    assert np.all(stt[:, 0] == Status.SENSOR_FAULT | Status.REGULATING)  # pump off
    assert not b.pump[0]
    assert b.nack(MsgType.START, mask_payload(1)) == NackReason.SENSOR_FAULT
    assert b.nack(MsgType.ZERO, mask_payload(1)) == NackReason.SENSOR_FAULT
    b.override = None
    got = b.run(0.6)
    _, su, stt = samples(got)
    # clears after 0.5 s (50 samples at 100 Hz) without a fault sign
    assert np.all(stt[:49, 0] & Status.SENSOR_FAULT)
    assert not np.any(stt[50:, 0] & Status.SENSOR_FAULT)
    assert (EventCode.SENSOR_OK, 1, 0) in events(got)
    assert np.any(stt[50:, 0] & Status.PUMP_ON)  # regulation resumes
    assert np.all(su[:, 0] != NO_READING)  # in range again: real values while flagged


@pytest.mark.parametrize("kpa,fault", [(-2.9, False), (-3.2, True), (99.9, False),
                                       (100.2, True)])
def test_range_limits(kpa, fault):
    b = Bench(cups=1, bits=16)
    b.override = np.array([cfirmware.mpxv6115v_counts(kpa, 16)])
    got = b.run(0.05)
    assert (EventCode.SENSOR_FAULT in [e[0] for e in events(got)]) == fault


def test_stuck_reading_with_the_pump_running_is_a_fault():
    b = Bench(cups=1)
    b.ack(MsgType.START, mask_payload(1))
    b.run(0.1)
    assert b.pump[0]
    frozen = b.counts().copy()
    b.override = frozen
    got = b.run(0.98)  # 99 identical samples while pumping (0.1 s .. 1.08 s): not yet
    assert not events(got) and b.pump[0]
    got = b.run(0.02)  # the 100th: 1 s at 100 Hz
    (ev,) = events(got)
    assert ev == (EventCode.SENSOR_FAULT, 1, cfirmware.counts_to_centi(int(frozen[0]), 10))
    assert not b.pump[0]
    # it stays faulted (pump off) for as long as the counts stay frozen
    _, su, stt = samples(b.run(3.0))
    assert np.all(stt[:, 0] & Status.SENSOR_FAULT) and not np.any(stt[:, 0] & Status.PUMP_ON)
    assert np.all(su[:, 0] != NO_READING)  # a stuck value is still a value
    b.override = frozen + 1  # the reading moves again
    got = b.run(0.6)
    assert events(got) == [(EventCode.SENSOR_OK, 1, 0)]


def test_stuck_detection_needs_20_samples_at_low_rates():
    b = Bench(cups=1)
    b.ack(MsgType.SET_RATE, struct.pack("<H", 10))
    b.ack(MsgType.START, mask_payload(1))
    b.run(0.1)
    b.override = b.counts().copy()
    b.ack(MsgType.PING)
    assert not events(b.run(1.85))  # 19 samples at 10 Hz
    assert events(b.run(0.1))[0][0] == EventCode.SENSOR_FAULT


def test_a_steady_reading_with_the_pump_off_is_not_a_fault():
    b = Bench(cups=1)
    b.run(0.1)
    b.override = b.counts().copy()
    b.run(20.0)
    assert not events(b.frames)[1:]


# --- host loss ---------------------------------------------------------------------------------


def test_host_lost_after_5_s_and_regulation_and_interlock_carry_on():
    b = Bench(cups=1)
    b.run(1.0)
    assert not events(b.frames)[1:]  # no host yet: nothing to lose
    b.ack(MsgType.START, mask_payload(1))
    t_cmd = b.t
    got = b.run(4.99)
    assert not events(got)
    got = b.run(0.02)
    assert [(e, f.t - t_cmd) for f in got if f.type == MsgType.EVENT
            for e in [event(f)]] == [((EventCode.HOST_LOST, 0, 0), 5_000_000)]
    _, su, stt = samples(b.run(10.0))
    assert np.all(stt[:, 0] & Status.REGULATING)
    assert np.any(stt[:, 0] & Status.PUMP_ON) and np.any(~stt[:, 0] & Status.PUMP_ON)
    assert 1985 <= su[:, 0].min() and su[:, 0].max() <= 2500
    assert [e[0] for e in events(b.frames)].count(EventCode.HOST_LOST) == 1
    b.suction[0] = 40.0
    assert events(b.run(0.02))[0][:2] == (EventCode.INTERLOCK_TRIPPED, 1)
    # the host comes back, then goes away again: a second HOST_LOST
    b.ack(MsgType.PING)
    b.run(6.0)
    assert [e[0] for e in events(b.frames)].count(EventCode.HOST_LOST) == 2


# --- overrun -------------------------------------------------------------------------------------


def test_samples_that_do_not_fit_the_uart_are_counted_and_reported():
    b = Bench(cups=4)
    b.run(0.1)
    b.dev.set_tx_room(20)  # a 4-cup SAMPLE frame is 26 bytes
    got = b.run(2.05)
    assert not [f for f in got if f.type == MsgType.SAMPLE]
    # at most one report a second, each with the samples lost since the last one:
    # 0.11 .. 1.00 s and 1.01 .. 2.00 s
    assert [e for e in events(got) if e[0] == EventCode.OVERRUN] == [
        (EventCode.OVERRUN, 0, 90), (EventCode.OVERRUN, 0, 100)]
    b.dev.set_tx_room(0xFFFF)
    assert [f for f in b.run(0.1) if f.type == MsgType.SAMPLE]
    assert b.ack(MsgType.PING) == b""  # ACKs are never dropped


def test_late_polls_skip_slots_and_count_them():
    b = Bench(cups=1)
    b.run(0.05)
    t = b.t + 1_500_000  # the main loop stalled for 1.5 s
    b.dev.set_time(t)
    b.dev.poll()
    got = parse(b.dev.read())
    assert [f.type for f in got] == [MsgType.SAMPLE, MsgType.EVENT]
    assert event(got[1])[:2] == (EventCode.OVERRUN, 0) and event(got[1])[2] >= 145
    assert got[0].t == t


# --- calibration, tare, EEPROM ------------------------------------------------------------------


def cal_payload(cup, c0, c1, c2):
    return struct.pack("<Bfff", cup, c0, c1, c2)


@pytest.mark.parametrize("fill", [0xFF, 0x00])
def test_blank_eeprom_means_identity(fill):
    b = Bench(cups=4, eeprom=bytes([fill]) * 1024)
    for cup in range(1, 5):
        data = b.ack(MsgType.READ_CAL, bytes([cup]))
        assert struct.unpack("<BfffB", data) == (cup, 0.0, 1.0, 0.0, 0)
    _, _, stt = samples(b.run(0.05))
    assert not np.any(stt & Status.CALIBRATED)


def test_write_cal_is_applied_persisted_and_read_back():
    b = Bench(cups=2, bits=12)
    coeffs = (0.5, 1.02, -0.0004)
    b.ack(MsgType.WRITE_CAL, cal_payload(2, *coeffs))
    data = b.ack(MsgType.READ_CAL, b"\x02")
    got = struct.unpack("<BfffB", data)
    assert got[0] == 2 and got[4] == 1
    assert got[1:4] == tuple(struct.unpack("<3f", struct.pack("<3f", *coeffs)))
    b.override = np.array([cfirmware.mpxv6115v_counts(22.0, 12)] * 2)
    _, su, stt = samples(b.run(0.05))
    raw = cfirmware.counts_to_centi(int(b.override[0]), 12) / 100
    assert su[-1, 0] == cfirmware.counts_to_centi(int(b.override[0]), 12)
    assert su[-1, 1] == round((0.5 + 1.02 * raw - 0.0004 * raw * raw) * 100)
    assert stt[-1, 0] & Status.CALIBRATED == 0 and stt[-1, 1] & Status.CALIBRATED
    # power cycle: the EEPROM keeps it
    b.dev.boot(b.t)
    data = b.ack(MsgType.READ_CAL, b"\x02")
    assert struct.unpack("<BfffB", data)[4] == 1
    _, su2, stt2 = samples(b.run(0.05))
    assert su2[-1, 1] == su[-1, 1] and stt2[-1, 1] & Status.CALIBRATED


@pytest.mark.parametrize("coeffs", [
    (math.nan, 1.0, 0.0), (0.0, math.inf, 0.0), (0.0, 0.0, 0.0), (0.0, -1.0, 0.0),
    (25.0, 1.0, 0.0), (0.0, 1.0, 0.05),
])
def test_implausible_calibration_is_refused(coeffs):
    b = Bench(cups=1)
    assert b.nack(MsgType.WRITE_CAL, cal_payload(1, *coeffs)) == NackReason.OUT_OF_RANGE
    assert b.dev.eeprom_writes == 0


def test_storage_failure_is_nacked_and_nothing_changes():
    b = Bench(cups=1)
    b.ack(MsgType.WRITE_CAL, cal_payload(1, 0.25, 1.0, 0.0))
    b.dev.set_eeprom_fail(True)
    assert b.nack(MsgType.WRITE_CAL, cal_payload(1, 1.0, 1.1, 0.0)) == NackReason.STORAGE
    assert struct.unpack("<BfffB", b.ack(MsgType.READ_CAL, b"\x01")) == (1, 0.25, 1.0, 0.0, 1)
    assert b.nack(MsgType.WRITE_CAL, cal_payload(2, 0, 1, 0)) == NackReason.BAD_CUP


def test_corrupt_record_falls_back_to_identity():
    b = Bench(cups=2)
    b.ack(MsgType.WRITE_CAL, cal_payload(1, 1.0, 1.0, 0.0))
    b.ack(MsgType.WRITE_CAL, cal_payload(2, 1.0, 1.0, 0.0))
    ee = bytearray(b.dev.eeprom)
    ee[18 + 3] ^= 0x01  # one bit of cup 2's c0
    b2 = Bench(cups=2, eeprom=bytes(ee))
    assert struct.unpack("<BfffB", b2.ack(MsgType.READ_CAL, b"\x01"))[4] == 1
    assert struct.unpack("<BfffB", b2.ack(MsgType.READ_CAL, b"\x02")) == (2, 0.0, 1.0, 0.0, 0)


def test_zero_tares_a_resting_cup_and_persists():
    b = Bench(cups=2)
    b.override = np.array([cfirmware.mpxv6115v_counts(2.0, 10)] * 2)
    _, su, _ = samples(b.run(0.05))
    offset = su[-1, 0]
    assert 180 <= offset <= 220
    b.ack(MsgType.ZERO, mask_payload(0b01))
    _, su, _ = samples(b.run(0.05))
    assert su[-1, 0] == 0 and su[-1, 1] == offset
    b.dev.boot(b.t)
    _, su, stt = samples(b.run(0.05))
    assert su[-1, 0] == 0 and su[-1, 1] == offset
    assert not np.any(stt & Status.CALIBRATED)  # a tare is not a calibration
    # the retry of the same ZERO is not executed again (no EEPROM writes)
    writes = b.dev.eeprom_writes
    b.ack(MsgType.ZERO, mask_payload(0b10), seq=500)
    assert b.dev.eeprom_writes > writes
    writes = b.dev.eeprom_writes
    b.ack(MsgType.ZERO, mask_payload(0b10), seq=500)
    assert b.dev.eeprom_writes == writes


def test_zero_is_refused_under_suction_or_while_regulating():
    b = Bench(cups=1)
    b.override = np.array([cfirmware.mpxv6115v_counts(8.0, 10)])
    b.run(0.05)
    assert b.nack(MsgType.ZERO, mask_payload(1)) == NackReason.OUT_OF_RANGE
    b.override = None
    b.ack(MsgType.START, mask_payload(1))
    b.run(0.05)
    assert b.nack(MsgType.ZERO, mask_payload(1)) == NackReason.BUSY
    assert b.nack(MsgType.WRITE_CAL, cal_payload(1, 0, 1, 0)) == NackReason.BUSY
    assert b.dev.eeprom_writes == 0


# --- the Uno's buffer sizes -----------------------------------------------------------------


def session(bench: Bench) -> bytes:
    """A session touching every frame type and command; returns all device bytes."""
    b = bench
    b.ack(MsgType.PING)
    b.command(MsgType.GET_INFO)
    b.ack(MsgType.SET_BAND, struct.pack("<Hhh", 0b0010, 1500, 2000))
    b.ack(MsgType.WRITE_CAL, cal_payload(3, 0.1, 1.01, 0.0001))
    b.ack(MsgType.READ_CAL, b"\x03")
    b.ack(MsgType.START, mask_payload(0xFFFF))
    b.run(3.0)
    b.nack(MsgType.ZERO, mask_payload(1))
    b.suction[3] = 33.0
    b.run(0.5)
    b.ack(MsgType.SET_RATE, struct.pack("<H", 250))
    b.ack(MsgType.STOP, mask_payload(0b0101))
    b.ack(MsgType.VENT, mask_payload(0xFFFF))
    b.run(6.0)
    b.ack(MsgType.ZERO, mask_payload(0xFFFF))
    b.ack(MsgType.SET_LIMIT, struct.pack("<h", 2800))
    b.run(0.2)
    return b"".join(frame_bytes(f.type, f.seq, f.payload, f.t) for f in b.frames)


def test_uno_sized_build_behaves_exactly_like_the_host_build():
    uno = session(Bench(cups=4, max_cups=4))  # CM_MAX_CUPS=4: the AVR image's buffers
    host = session(Bench(cups=4))
    assert uno == host
    kinds = {f.type for f in parse(uno)}
    assert kinds == {MsgType.INFO, MsgType.EVENT, MsgType.SAMPLE, MsgType.ACK, MsgType.NACK}


@pytest.mark.parametrize("max_cups", [4, 16])
def test_session_is_memory_clean_under_address_sanitizer(max_cups):
    # the same session replayed through a separate executable built with ASan and
    # UBSan (a ctypes library cannot host ASan): buffer overruns, use of
    # uninitialised stack and undefined behaviour abort the replay
    b = Bench(cups=4, max_cups=max_cups, record=True)
    session(b)
    assert b.dev.local(MsgType.START, mask_payload(0b0110)) is None  # front-panel start
    assert b.dev.local(MsgType.SET_RATE, struct.pack("<H", 5)) == NackReason.OUT_OF_RANGE
    b.run(0.5)
    b.dev.set_eeprom_fail(True)
    b.nack(MsgType.WRITE_CAL, cal_payload(1, 0.0, 1.0, 0.0))
    b.dev.set_tx_room(0)
    b.run(1.2)
    b.dev.feed(b"\xa5\x5a\x01\x12\x02" + bytes(range(256)) * 2)  # garbage, false syncs
    b.dev.read()
    assert cfirmware.replay(bytes(b.dev.script), max_cups) == bytes(b.dev.sent)


def test_local_commands_act_without_a_reply_and_keep_the_retry_memory():
    b = Bench(cups=2)
    assert b.dev.local(MsgType.START, mask_payload(0b01)) is None
    assert b.dev.read() == b""  # no ACK on the wire
    assert b.dev.local(MsgType.START, mask_payload(0b100)) == NackReason.BAD_CUP
    _, _, stt = samples(b.run(0.1))
    assert np.all(stt[:, 0] & Status.REGULATING) and not np.any(stt[:, 1] & Status.REGULATING)
    # host START (seq 40) of cup 2, then the practitioner vents it on the unit; the
    # host's retry of seq 40 is still a retry: answered, not run again
    b.ack(MsgType.START, mask_payload(0b10), seq=40)
    assert b.dev.local(MsgType.VENT, mask_payload(0b10)) is None
    b.ack(MsgType.START, mask_payload(0b10), seq=40)
    _, _, stt = samples(b.run(0.1))
    assert np.all(stt[:, 1] == Status.VALVE_OPEN)
