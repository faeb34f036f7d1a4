"""The C firmware core and the Python codec agree: on every shared vector in
tests/vectors/, on commands the codec encodes, and on everything the core
sends in a session (decoded by the host's own Decoder)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from test_firmware_core import (
    Bench,
    cal_payload,
    counts_for_centi,
    frame_bytes,
    mask_payload,
    parse,
    samples,
)

from firmware_bridge import cfirmware
from firmware_bridge.codec import Command, Decoder, decode_cal_data, encode_command
from firmware_bridge.messages import Ack, DeviceEvent, DeviceInfo, Nack
from firmware_bridge.protocol import (
    EventCode,
    InfoFlags,
    MsgType,
    NackReason,
    SensorModel,
    Status,
)

pytestmark = pytest.mark.skipif(cfirmware.compiler() is None, reason="no C compiler on PATH")

VECTOR_DIR = Path(__file__).parent / "vectors"
VECTORS = {p.stem: json.loads(p.read_text()) for p in sorted(VECTOR_DIR.glob("*.json"))}
FRAMES = {k: v for k, v in VECTORS.items() if v["kind"] == "frame"}
COMMANDS = {k: v for k, v in FRAMES.items() if v["type"] >= 0x10}


def test_vectors_are_there():
    assert len(FRAMES) >= 20 and COMMANDS and "stream_resync" in VECTORS


def payload_of(v: dict) -> bytes:
    raw = bytes.fromhex(v["hex"])
    return raw[11:-2]


def device(cups: int = 8, **kw) -> Bench:
    """A fresh C device that has taken one sample at 0 kPa (so ZERO has a reading)."""
    b = Bench(cups=cups, **kw)
    b.run(0.0)
    return b


def answers(b: Bench, data: bytes) -> list:
    """Feed host bytes; return the device's replies decoded by the Python codec."""
    b.dev.feed(data)
    res = Decoder("binary").feed(b.dev.read(), host_time=0.0)
    return [m for m in res.messages if isinstance(m, (Ack, Nack, DeviceInfo))]


# --- every vector ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_c_encoder_reproduces_every_frame_vector(name):
    v = FRAMES[name]
    assert cfirmware.encode_frame(v["type"], v["seq"], v["time_us"], payload_of(v)) \
        == bytes.fromhex(v["hex"])


def test_c_crc_on_the_check_vector():
    v = VECTORS["crc_check"]
    assert cfirmware.crc16(bytes.fromhex(v["hex"])) == v["crc"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_c_device_answers_every_command_vector(name):
    v = COMMANDS[name]
    b = device(cups=8)
    got = answers(b, bytes.fromhex(v["hex"]))
    reply = got[0]
    error = v["fields"].get("error")
    if error is None:
        assert reply == Ack(v["seq"], v["type"], reply.data)
    else:
        assert reply == Nack(v["seq"], v["type"], error)
    if v["type"] == MsgType.GET_INFO:
        assert isinstance(got[1], DeviceInfo) and got[1].cups == 8
    else:
        assert len(got) == 1


def test_c_device_reproduces_the_reply_vectors():
    # ack_start: START (cmd seq 7) -> exactly the vector's ACK payload
    b = device()
    b.dev.feed(frame_bytes(MsgType.START, 7, mask_payload(0xFFFF)))
    (ack,) = parse(b.dev.read())
    assert (ack.type, ack.payload) == (MsgType.ACK, payload_of(VECTORS["ack_start"]))
    # ack_read_cal: the codec's WRITE_CAL vector, then READ_CAL cup 2 with cmd seq 8
    b = device()
    b.dev.feed(bytes.fromhex(VECTORS["cmd_write_cal"]["hex"]))
    b.dev.read()
    b.dev.feed(frame_bytes(MsgType.READ_CAL, 8, b"\x02"))
    (ack,) = parse(b.dev.read())
    assert ack.payload == payload_of(VECTORS["ack_read_cal"])
    # nack_out_of_range: SET_RATE (cmd seq 9) with a rate the device refuses
    b.dev.feed(frame_bytes(MsgType.SET_RATE, 9, struct.pack("<H", 5)))
    (nack,) = parse(b.dev.read())
    assert (nack.type, nack.payload) == (MsgType.NACK, payload_of(VECTORS["nack_out_of_range"]))


def test_c_device_reproduces_the_event_vectors():
    # BOOT with reset cause 1
    b = Bench(cups=1, reset_cause=1)
    assert b.frames[1].payload == payload_of(VECTORS["event_boot"])
    # INTERLOCK_TRIPPED on cup 3 at 30.12 kPa
    b = Bench(cups=4, bits=16)
    counts = counts_for_centi(16, 3012)
    b.run(0.05)
    b.override = np.array([cfirmware.mpxv6115v_counts(0.0, 16)] * 4)
    b.override[2] = counts
    got = b.run(0.01)
    (ev,) = [f for f in got if f.type == MsgType.EVENT]
    assert ev.payload == payload_of(VECTORS["event_interlock_tripped"])
    # OVERRUN of 17 samples: the UART has no room from 0.83 s to 0.99 s
    b = Bench(cups=1)
    b.run(0.825)
    b.dev.set_tx_room(0)
    b.run(0.17)
    b.dev.set_tx_room(0xFFFF)
    got = b.run(0.01)
    (ev,) = [f for f in got if f.type == MsgType.EVENT]
    assert ev.payload == payload_of(VECTORS["event_overrun"])


def test_c_info_matches_the_info_vector_except_firmware_version():
    v = VECTORS["info"]
    b = Bench(cups=8, bits=12, serial="CUP-0001")
    b.ack(MsgType.SET_RATE, struct.pack("<H", 250))
    got = b.command(MsgType.GET_INFO)
    info = got[1].payload
    want = bytearray(payload_of(v))
    want[16:19] = info[16:19]  # our firmware is 1.0.0, the vector's 1.2.3
    assert info == bytes(want)


def test_c_parser_recovers_the_resync_stream_vector():
    v = VECTORS["stream_resync"]
    b = device(cups=1)
    data = bytes.fromhex(v["hex"])
    for i in range(len(data)):  # byte by byte, as a UART delivers
        b.dev.feed(data[i:i + 1])
    replies = [f for f in parse(b.dev.read()) if f.type in (MsgType.ACK, MsgType.NACK)]
    got = [dict(zip(("seq", "type"), struct.unpack_from("<HB", f.payload), strict=True)) for f in replies]
    assert got == v["frames"]
    assert all(f.type == MsgType.ACK for f in replies)


# --- commands from the codec ----------------------------------------------------------------


def test_codec_commands_get_the_right_answers_and_effects():
    b = device(cups=4)
    seq = iter(range(1000, 2000))

    def send(**kw) -> Ack | Nack:
        cmd = Command(seq=next(seq), **kw)
        got = answers(b, encode_command(cmd))
        assert got[0].seq == cmd.seq and got[0].cmd == cmd.type
        return got[0]

    assert isinstance(send(type=MsgType.PING), Ack)
    assert isinstance(send(type=MsgType.SET_BAND, mask=0b11, low_kpa=18.5, high_kpa=23.25), Ack)
    assert send(type=MsgType.SET_BAND, mask=1, low_kpa=25.0, high_kpa=20.0).reason \
        == NackReason.OUT_OF_RANGE
    assert isinstance(send(type=MsgType.SET_LIMIT, limit_kpa=28.5), Ack)
    assert send(type=MsgType.SET_LIMIT, limit_kpa=0.5).reason == NackReason.OUT_OF_RANGE
    assert isinstance(send(type=MsgType.SET_RATE, rate_hz=2000), Ack)
    assert send(type=MsgType.SET_RATE, rate_hz=2001).reason == NackReason.OUT_OF_RANGE
    coeffs = (-0.3, 1.0123, 1e-4)
    assert isinstance(send(type=MsgType.WRITE_CAL, cup=4, coeffs=coeffs), Ack)
    ack = send(type=MsgType.READ_CAL, cup=4)
    cup, back, valid = decode_cal_data(ack.data)
    assert cup == 4 and valid
    assert back == struct.unpack("<3f", struct.pack("<3f", *coeffs))
    assert send(type=MsgType.READ_CAL, cup=5).reason == NackReason.BAD_CUP
    assert isinstance(send(type=MsgType.ZERO, mask=0b1000), Ack)
    assert isinstance(send(type=MsgType.START, mask=0xFFFF), Ack)
    assert send(type=MsgType.ZERO, mask=1).reason == NackReason.BUSY
    assert isinstance(send(type=MsgType.STOP, mask=0b0001), Ack)
    assert isinstance(send(type=MsgType.VENT, mask=0b0010), Ack)
    assert send(type=MsgType.VENT, mask=0b10000).reason == NackReason.BAD_CUP
    got = answers(b, encode_command(Command(type=MsgType.GET_INFO, seq=next(seq))))
    info = got[1]
    assert (info.rate_hz, info.hard_limit_kpa, info.cups) == (2000, 28.5, 4)
    _, _, stt = samples(b.run(0.01))
    assert list(stt[-1]) == [0, Status.VALVE_OPEN, Status.REGULATING | Status.PUMP_ON,
                             Status.REGULATING | Status.PUMP_ON | Status.CALIBRATED]


# --- a whole session through the host decoder -----------------------------------------------------


def test_host_decoder_reads_a_c_session_exactly():
    b = Bench(cups=3, serial="DEC-TEST", reset_cause=4, t0=2**32 - 3_000_000)
    b.ack(MsgType.START, mask_payload(0b011))
    b.run(4.0)
    b.ack(MsgType.WRITE_CAL, cal_payload(3, 0.2, 1.0, 0.0))
    b.override = np.array([0, 770, 880], dtype=np.uint16)  # cup 1 cut wire
    b.run(0.5)
    b.override = None
    b.suction[1] = 40.0
    b.run(1.0)
    b.nack(MsgType.READ_CAL, b"\x09")
    data = b"".join(frame_bytes(f.type, f.seq, f.payload, f.t) for f in b.frames)

    dec = Decoder("binary")
    res = dec.feed(data, host_time=0.0)
    st = dec.stats
    assert (st.crc_errors, st.bytes_discarded, st.frames_lost, st.unknown_messages) == (0, 0, 0, 0)
    assert dec.internal_errors == 0

    t_raw, su, stt = samples(b.frames)
    assert sum(blk.n for blk in res.blocks) == len(t_raw)
    t = np.concatenate([blk.t for blk in res.blocks])
    suction = np.concatenate([blk.suction for blk in res.blocks])
    status = np.concatenate([blk.status for blk in res.blocks])
    assert np.all(np.diff(t) > 0)  # unwrapped across the 2^32 us wrap
    assert np.array_equal(np.rint(t * 1e6).astype(np.int64) % 2**32, t_raw)
    fault = su == -32768
    assert fault[:, 0].any() and np.all(np.isnan(suction[fault]))
    assert np.allclose(suction[~fault], su[~fault] / 100, atol=1e-6)
    assert np.array_equal(status, stt)

    infos = [m for m in res.messages if isinstance(m, DeviceInfo)]
    assert infos == [DeviceInfo(serial="DEC-TEST", firmware=(1, 0, 0), cups=3, rate_hz=100,
                                sensor_model=SensorModel.MPXV6115V,
                                flags=InfoFlags.CAL_ON_DEVICE, adc_bits=10,
                                hard_limit_kpa=30.0)]
    events = [(m.code, m.cup) for m in res.messages if isinstance(m, DeviceEvent)]
    # the trip comes at the first sample; cup 1 needs 4 good readings to be OK again
    assert events == [(EventCode.BOOT, 0), (EventCode.SENSOR_FAULT, 1),
                      (EventCode.INTERLOCK_TRIPPED, 2), (EventCode.SENSOR_OK, 1)]
    acks = [m for m in res.messages if isinstance(m, (Ack, Nack))]
    assert [type(m) for m in acks] == [Ack, Ack, Nack]
    assert acks[-1].reason == NackReason.BAD_CUP
