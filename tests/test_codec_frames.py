"""Encoders and payload decoders of the codec: every message type round-trips,
wire units are exact, and the vectorised encoder/CRC equal the per-frame ones."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from firmware_bridge.codec import (
    Command,
    Decoder,
    crc16_rows,
    decode_cal_data,
    encode_ack,
    encode_cal_data,
    encode_command,
    encode_event,
    encode_frame,
    encode_info,
    encode_nack,
    encode_samples,
    kpa_to_raw,
    raw_to_kpa,
)
from firmware_bridge.messages import Ack, DeviceEvent, DeviceInfo, Nack
from firmware_bridge.protocol import (
    NO_READING,
    EventCode,
    MsgType,
    NackReason,
    crc16_ccitt_false,
)


def decode_one(data: bytes):
    d = Decoder("binary")
    res = d.feed(data, host_time=5.0)
    assert d.internal_errors == 0
    assert d.stats.crc_errors == 0 and d.stats.bytes_discarded == 0
    return res, d


def test_frame_layout_matches_spec():
    f = encode_frame(0x03, b"\x01\x02\x03\x04", seq=0x1234, time_us=0x0A0B0C0D)
    assert f[:11] == bytes.fromhex("a55a" "01" "03" "04" "3412" "0d0c0b0a")
    assert f[11:15] == b"\x01\x02\x03\x04"
    assert struct.unpack("<H", f[15:])[0] == crc16_ccitt_false(f[2:15])
    assert len(f) == 13 + 4


def test_seq_and_time_are_taken_modulo():
    assert encode_frame(1, b"", 65536 + 5, (1 << 32) + 7) == encode_frame(1, b"", 5, 7)
    assert encode_frame(1, b"", -1, -1) == encode_frame(1, b"", 65535, (1 << 32) - 1)


def test_payload_too_long_is_refused():
    with pytest.raises(ValueError):
        encode_frame(1, bytes(256), 0, 0)


@pytest.mark.parametrize("cups", [1, 3, 8, 16])
def test_samples_round_trip(cups):
    rng = np.random.default_rng(cups)
    n = 50
    t = 1_000_000 + np.arange(n) * 4000
    suction = np.round(rng.uniform(-50, 300, (n, cups)), 2)
    suction[rng.random((n, cups)) < 0.1] = np.nan
    status = rng.integers(0, 64, (n, cups), dtype=np.uint8)
    data, nxt = encode_samples(t, suction, status, seq0=65530)
    assert nxt == (65530 + n) % 65536
    assert len(data) == n * (13 + 1 + 3 * cups)
    res, d = decode_one(data)
    assert len(res.blocks) == 1 and not res.messages
    b = res.blocks[0]
    assert b.t.dtype == np.float64 and b.suction.dtype == np.float32 and b.status.dtype == np.uint8
    assert b.suction.shape == (n, cups)
    np.testing.assert_array_equal(b.t, t / 1e6)
    np.testing.assert_array_equal(b.suction, suction.astype(np.float32))  # NaN == NaN here
    np.testing.assert_array_equal(b.status, status)
    assert (b.host_time, b.gap_before, b.lost_before) == (5.0, False, 0)
    assert d.stats.samples == n and d.stats.frames_ok == n


def test_encode_samples_equals_per_frame_encoding():
    rng = np.random.default_rng(1)
    n, cups = 20, 5
    t = rng.integers(0, 1 << 40, n)
    suction = rng.uniform(-400, 400, (n, cups))
    suction[0, 0] = np.nan
    status = rng.integers(0, 256, (n, cups), dtype=np.uint8)
    data, _ = encode_samples(t, suction, status, seq0=70000)
    raw = kpa_to_raw(suction)
    expected = b"".join(
        encode_frame(MsgType.SAMPLE,
                     struct.pack(f"<B{cups}h{cups}B", cups, *raw[i].tolist(), *status[i].tolist()),
                     70000 + i, int(t[i]))
        for i in range(n))
    assert data == expected


def test_no_reading_and_clipping():
    raw = kpa_to_raw(np.array([np.nan, 400.0, -400.0, np.inf, -np.inf, 22.104, 22.106, -0.004]))
    assert raw.tolist() == [NO_READING, 32767, -32767, 32767, -32767, 2210, 2211, 0]
    kpa = raw_to_kpa(np.array([NO_READING, 2210, -32767, 0], dtype=np.int16))
    assert np.isnan(kpa[0]) and kpa.dtype == np.float32
    assert kpa[1:].tolist() == [np.float32(22.10), np.float32(-327.67), 0.0]


def test_encode_samples_rejects_bad_shapes():
    with pytest.raises(ValueError):
        encode_samples(np.arange(3), np.zeros(3), np.zeros(3, np.uint8), 0)
    with pytest.raises(ValueError):
        encode_samples(np.arange(3), np.zeros((3, 17)), np.zeros((3, 17), np.uint8), 0)
    with pytest.raises(ValueError):
        encode_samples(np.arange(2), np.zeros((3, 2)), np.zeros((3, 2), np.uint8), 0)
    assert encode_samples(np.zeros(0), np.zeros((0, 2)), np.zeros((0, 2), np.uint8), 9) == (b"", 9)


def test_info_round_trip():
    info = DeviceInfo(serial="CUP-42", firmware=(1, 0, 7), cups=8, rate_hz=500,
                      sensor_model=3, flags=5, adc_bits=10, hard_limit_kpa=29.5)
    res, _ = decode_one(encode_info(info, seq=3, time_us=10))
    assert res.messages == [info]


def test_info_serial_is_cut_to_16_ascii_bytes():
    info = DeviceInfo(serial="ABCDEFGHIJKLMNOPQRST", firmware=(1, 0, 0), cups=1, rate_hz=10)
    res, _ = decode_one(encode_info(info, 0, 0))
    assert res.messages[0].serial == "ABCDEFGHIJKLMNOP"


def test_event_round_trip_carries_device_time():
    res, _ = decode_one(encode_event(EventCode.INTERLOCK_TRIPPED, 4, -3012, seq=9,
                                     time_us=123_456_789))
    assert res.messages == [DeviceEvent(code=1, cup=4, value=-3012, t=123.456789, host_time=5.0)]


def test_ack_nack_round_trip():
    data = encode_cal_data(3, (0.5, 1.25, -0.0625), True)
    res, _ = decode_one(encode_ack(70000, MsgType.READ_CAL, 1, 2, data)
                        + encode_ack(5, MsgType.PING, 2, 3)
                        + encode_nack(6, MsgType.SET_RATE, NackReason.OUT_OF_RANGE, 3, 4))
    assert res.messages == [Ack(seq=70000 % 65536, cmd=MsgType.READ_CAL, data=data),
                            Ack(seq=5, cmd=MsgType.PING),
                            Nack(seq=6, cmd=MsgType.SET_RATE, reason=NackReason.OUT_OF_RANGE)]
    assert decode_cal_data(res.messages[0].data) == (3, (0.5, 1.25, -0.0625), True)


def test_cal_data_of_wrong_length_does_not_raise():
    assert decode_cal_data(b"\x01\x02") == (0, (0.0, 1.0, 0.0), False)
    assert decode_cal_data(encode_cal_data(2, (0, 1, 0), False)) == (2, (0.0, 1.0, 0.0), False)


COMMANDS = [
    Command(MsgType.PING, seq=1),
    Command(MsgType.GET_INFO, seq=2),
    Command(MsgType.START, seq=3, mask=0xFFFF),
    Command(MsgType.STOP, seq=4, mask=0x0005),
    Command(MsgType.SET_BAND, seq=5, mask=0x00FF, low_kpa=20.0, high_kpa=25.5),
    Command(MsgType.VENT, seq=6, mask=0x8000),
    Command(MsgType.ZERO, seq=7, mask=1),
    Command(MsgType.SET_RATE, seq=8, rate_hz=2000),
    Command(MsgType.WRITE_CAL, seq=9, cup=16, coeffs=(-0.5, 1.03125, 0.25)),
    Command(MsgType.READ_CAL, seq=10, cup=1),
    Command(MsgType.SET_LIMIT, seq=65535, limit_kpa=-12.34),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.type.name)
def test_command_round_trip(cmd):
    res, d = decode_one(encode_command(cmd, time_us=99))
    assert res.messages == [cmd]
    assert d.stats.unknown_messages == 0 and not res.blocks


def test_command_sends_only_its_own_fields():
    # A stray field of another command must not change the frame.
    assert encode_command(Command(MsgType.PING, seq=1, mask=5, rate_hz=9)) == \
        encode_command(Command(MsgType.PING, seq=1))
    assert len(encode_command(Command(MsgType.SET_RATE, rate_hz=100))) == 13 + 2


def test_malformed_and_unknown_commands_decode_with_a_nack_reason():
    data = (encode_frame(MsgType.START, b"\x01", 1, 0)          # too short
            + encode_frame(MsgType.WRITE_CAL, bytes(14), 2, 0)   # too long
            + encode_frame(MsgType.PING, b"\x00", 3, 0)
            + encode_frame(0x1F, b"", 4, 0))                     # unknown command
    d = Decoder("binary")
    res = d.feed(data, 0.0)
    assert [(int(m.type), m.seq, m.error) for m in res.messages] == [
        (MsgType.START, 1, NackReason.BAD_LENGTH), (MsgType.WRITE_CAL, 2, NackReason.BAD_LENGTH),
        (MsgType.PING, 3, NackReason.BAD_LENGTH), (0x1F, 4, NackReason.UNKNOWN_COMMAND)]
    assert d.stats.frames_ok == 4 and d.stats.unknown_messages == 1


@pytest.mark.parametrize("cmd", [
    Command(MsgType.SET_BAND, low_kpa=400.0, high_kpa=25.0),
    Command(MsgType.SET_LIMIT, limit_kpa=float("nan")),
    Command(MsgType.START, mask=0x10000),
    Command(MsgType.SET_RATE, rate_hz=-1),
])
def test_commands_that_do_not_fit_are_refused(cmd):
    with pytest.raises(ValueError):
        encode_command(cmd)


def test_crc16_rows_matches_the_scalar_crc():
    rng = np.random.default_rng(7)
    for m in (1, 2, 9, 34, 266):
        rows = rng.integers(0, 256, (30, m), dtype=np.uint8)
        assert crc16_rows(rows).tolist() == [crc16_ccitt_false(r.tobytes()) for r in rows]
    assert crc16_rows(np.frombuffer(b"123456789", np.uint8)[None, :]).tolist() == [0x29B1]
