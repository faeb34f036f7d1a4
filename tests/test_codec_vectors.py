"""The shared test vectors (tests/vectors/*.json): the codec encodes every one
byte for byte and decodes it to the stated fields; docs/protocol.md section 8
is exactly what the vectors render to."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.codec import (
    Command,
    Decoder,
    decode_cal_data,
    encode_ack,
    encode_cal_data,
    encode_command,
    encode_event,
    encode_frame,
    encode_info,
    encode_nack,
    encode_samples,
)
from firmware_bridge.messages import Ack, DeviceEvent, DeviceInfo, Nack
from firmware_bridge.protocol import MsgType, crc16_ccitt_false

VECTORS_DIR = Path(__file__).parent / "vectors"
_spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
make_vectors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_vectors)

VECTORS = make_vectors.load_vectors()
FRAMES = [v for v in VECTORS if v["kind"] == "frame"]


def test_every_message_type_has_a_vector():
    types = {v["type"] for v in FRAMES}
    assert types == {int(t) for t in MsgType}
    assert any(v["type"] == MsgType.NACK for v in FRAMES)
    assert any("error" in v["fields"] for v in FRAMES)
    assert {v["kind"] for v in VECTORS} == {"frame", "stream", "crc"}


def test_vector_files_are_what_the_generator_builds():
    # The files are the contract with the C tests: a change must be deliberate
    # (rerun tests/vectors/make_vectors.py and commit both).
    assert VECTORS == make_vectors.build_all()


def test_docs_section_8_is_generated_from_the_vectors():
    doc = make_vectors.DOC.read_text()
    assert make_vectors.doc_section8(doc) == make_vectors.render_section8(VECTORS)


def _encode(v: dict) -> bytes:
    t, seq, time_us, f = v["type"], v["seq"], v["time_us"], v["fields"]
    if "payload_hex" in f:
        return encode_frame(t, bytes.fromhex(f["payload_hex"]), seq, time_us)
    if t == MsgType.SAMPLE:
        suction = np.array([np.nan if x is None else x for x in f["suction_kpa"]])[None, :]
        data, nxt = encode_samples(np.array([time_us]), suction,
                                   np.array([f["status"]], dtype=np.uint8), seq)
        assert nxt == (seq + 1) % 65536
        return data
    if t == MsgType.INFO:
        return encode_info(_info(f), seq, time_us)
    if t == MsgType.EVENT:
        return encode_event(f["code"], f["cup"], f["value"], seq, time_us)
    if t == MsgType.ACK:
        data = bytes.fromhex(f["data_hex"])
        if "cal" in f:
            cal = f["cal"]
            assert encode_cal_data(cal["cup"], tuple(cal["coeffs"]), cal["valid"]) == data
        return encode_ack(f["cmd_seq"], f["cmd_type"], seq, time_us, data)
    if t == MsgType.NACK:
        return encode_nack(f["cmd_seq"], f["cmd_type"], f["reason"], seq, time_us)
    return encode_command(_command(v), time_us)


def _info(f: dict) -> DeviceInfo:
    return DeviceInfo(serial=f["serial"], firmware=tuple(f["firmware"]), cups=f["cups"],
                      rate_hz=f["rate_hz"], sensor_model=f["sensor_model"], flags=f["flags"],
                      adc_bits=f["adc_bits"], hard_limit_kpa=f["hard_limit_kpa"])


def _command(v: dict) -> Command:
    f = v["fields"]
    kw = {k: f[k] for k in ("mask", "rate_hz", "cup") if k in f}
    if "low_kpa" in f:
        kw.update(low_kpa=f["low_kpa"], high_kpa=f["high_kpa"])
    if "limit_kpa" in f:
        kw["limit_kpa"] = f["limit_kpa"]
    if "coeffs" in f:
        kw["coeffs"] = tuple(f["coeffs"])
    if "error" in f:
        kw["error"] = f["error"]
    return Command(MsgType(v["type"]), seq=v["seq"], **kw)


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v["name"])
def test_codec_encodes_the_vector(v):
    # (a malformed command is built with encode_frame from its payload bytes)
    assert _encode(v).hex() == v["hex"]


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v["name"])
def test_codec_decodes_the_vector(v):
    raw = bytes.fromhex(v["hex"])
    assert len(raw) == 13 + v["length"] and raw[4] == v["length"]
    d = Decoder("auto")
    res = d.feed(raw, host_time=1.0)
    assert d.mode == "binary" and d.stats.frames_ok == 1 and d.stats.crc_errors == 0
    assert d.stats.bytes_discarded == 0 and d.internal_errors == 0
    f, t = v["fields"], v["type"]
    if t == MsgType.SAMPLE:
        assert not res.messages and len(res.blocks) == 1
        b = res.blocks[0]
        assert b.t.tolist() == [v["time_us"] / 1e6]
        expected = [math.nan if x is None else np.float32(x) for x in f["suction_kpa"]]
        np.testing.assert_array_equal(b.suction[0], np.array(expected, dtype=np.float32))
        assert b.status[0].tolist() == f["status"]
        return
    assert not res.blocks and len(res.messages) == 1
    msg = res.messages[0]
    if t == MsgType.INFO:
        assert msg == _info(f)
    elif t == MsgType.EVENT:
        assert msg == DeviceEvent(f["code"], f["cup"], f["value"], v["time_us"] / 1e6, 1.0)
    elif t == MsgType.ACK:
        assert msg == Ack(f["cmd_seq"], f["cmd_type"], bytes.fromhex(f["data_hex"]))
        if "cal" in f:
            cal = f["cal"]
            assert decode_cal_data(msg.data) == (cal["cup"], tuple(cal["coeffs"]), cal["valid"])
    elif t == MsgType.NACK:
        assert msg == Nack(f["cmd_seq"], f["cmd_type"], f["reason"])
    else:
        assert msg == _command(v)


def test_stream_vector_resynchronises():
    (v,) = [v for v in VECTORS if v["kind"] == "stream"]
    d = Decoder("binary")
    res = d.feed(bytes.fromhex(v["hex"]), 0.0)
    assert [{"type": int(m.type), "seq": m.seq} for m in res.messages] == v["frames"]
    assert d.stats.crc_errors == v["crc_errors"]


def test_crc_vector():
    (v,) = [v for v in VECTORS if v["kind"] == "crc"]
    assert crc16_ccitt_false(bytes.fromhex(v["hex"])) == v["crc"]
