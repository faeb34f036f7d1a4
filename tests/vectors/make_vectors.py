"""Build the shared wire-protocol test vectors and docs/protocol.md section 8.

The frames are built here with ``struct`` straight from docs/protocol.md
(sections 1-4), independently of ``firmware_bridge.codec``, so that the codec
tests (tests/test_codec_vectors.py) and the C firmware tests check their
encoders and decoders against the spec, not against each other.

    .venv/bin/python tests/vectors/make_vectors.py          # rewrite JSON + docs
    .venv/bin/python tests/vectors/make_vectors.py --check  # exit 1 if stale

JSON format (one file per example, ``kind`` says which):

* ``frame``: {"name", "description", "kind", "hex" (whole frame), "type",
  "type_name", "seq", "time_us", "length" (payload bytes), "fields" (decoded
  payload: raw wire integers *and* engineering values; ``null`` = no reading;
  "error"/"error_name" for a malformed command, with "payload_hex")}.
* ``stream``: {"name", "description", "kind", "hex", "frames": [{"type",
  "seq"}] recovered in order, "crc_errors"}.
* ``crc``: {"name", "description", "kind", "hex", "crc"}.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "protocol.md"
SECTION8 = "## 8. Test vectors, field by field"

sys.path.insert(0, str(HERE.parent.parent))
from firmware_bridge.protocol import (  # noqa: E402  (after the path set-up)
    EventCode,
    InfoFlags,
    MsgType,
    NackReason,
    SensorModel,
    Status,
    crc16_ccitt_false,
)

NO_READING = -32768


def frame(msg_type: int, payload: bytes, seq: int, time_us: int) -> bytes:
    """Section 1: sync, version 1, type, L, seq, time_us, payload, CRC (LE)."""
    body = struct.pack("<BBBHI", 1, msg_type, len(payload), seq, time_us) + payload
    return b"\xa5\x5a" + body + struct.pack("<H", crc16_ccitt_false(body))


def kpa(raw: int) -> float | None:
    return None if raw == NO_READING else raw / 100


# --- payload layouts: (field, struct format, count) straight from sections 3-4 ----

def layout(msg_type: int, fields: dict) -> list[tuple[str, str]]:
    """[(label, struct format)] of the payload, in wire order."""
    t = MsgType(msg_type)
    if "payload_hex" in fields:  # malformed on purpose
        return [("payload (malformed)", f"{len(fields['payload_hex']) // 2}s")]
    if t == MsgType.SAMPLE:
        n = fields["n"]
        return ([("n (cups)", "B")] + [(f"suction cup {i + 1}", "h") for i in range(n)]
                + [(f"status cup {i + 1}", "B") for i in range(n)])
    if t == MsgType.INFO:
        return [("serial", "16s"), ("firmware major", "B"), ("firmware minor", "B"),
                ("firmware patch", "B"), ("cups", "B"), ("rate_hz", "H"),
                ("sensor_model", "B"), ("flags", "B"), ("adc_bits", "B"), ("hard limit", "h")]
    if t == MsgType.EVENT:
        return [("code", "B"), ("cup", "B"), ("value", "h")]
    if t == MsgType.ACK:
        if "cal" in fields:  # READ_CAL: section 3.4
            data = [("data: cup", "B"), ("data: c0", "f"), ("data: c1", "f"),
                    ("data: c2", "f"), ("data: valid", "B")]
        else:
            data = [("data", f"{len(fields['data_hex']) // 2}s")] if fields["data_hex"] else []
        return [("cmd_seq", "H"), ("cmd_type", "B")] + data
    if t == MsgType.NACK:
        return [("cmd_seq", "H"), ("cmd_type", "B"), ("reason", "B")]
    if t in (MsgType.START, MsgType.STOP, MsgType.VENT, MsgType.ZERO):
        return [("cup mask", "H")]
    if t == MsgType.SET_BAND:
        return [("cup mask", "H"), ("low", "h"), ("high", "h")]
    if t == MsgType.SET_RATE:
        return [("rate_hz", "H")]
    if t == MsgType.WRITE_CAL:
        return [("cup", "B"), ("c0", "f"), ("c1", "f"), ("c2", "f")]
    if t == MsgType.READ_CAL:
        return [("cup", "B")]
    if t == MsgType.SET_LIMIT:
        return [("limit", "h")]
    return []  # PING, GET_INFO


def payload_values(msg_type: int, fields: dict) -> list:
    """The values for :func:`layout`, in the same order."""
    t = MsgType(msg_type)
    if "payload_hex" in fields:
        return [bytes.fromhex(fields["payload_hex"])]
    if t == MsgType.SAMPLE:
        return [fields["n"], *fields["suction_raw"], *fields["status"]]
    if t == MsgType.INFO:
        return [fields["serial"].encode("ascii"), *fields["firmware"], fields["cups"],
                fields["rate_hz"], fields["sensor_model"], fields["flags"], fields["adc_bits"],
                fields["hard_limit_raw"]]
    if t == MsgType.EVENT:
        return [fields["code"], fields["cup"], fields["value"]]
    if t == MsgType.ACK:
        if "cal" in fields:
            cal = fields["cal"]
            data = [cal["cup"], *cal["coeffs"], int(cal["valid"])]
        else:
            data = [bytes.fromhex(fields["data_hex"])] if fields["data_hex"] else []
        return [fields["cmd_seq"], fields["cmd_type"], *data]
    if t == MsgType.NACK:
        return [fields["cmd_seq"], fields["cmd_type"], fields["reason"]]
    if t in (MsgType.START, MsgType.STOP, MsgType.VENT, MsgType.ZERO):
        return [fields["mask"]]
    if t == MsgType.SET_BAND:
        return [fields["mask"], fields["low_raw"], fields["high_raw"]]
    if t == MsgType.SET_RATE:
        return [fields["rate_hz"]]
    if t == MsgType.WRITE_CAL:
        return [fields["cup"], *fields["coeffs"]]
    if t == MsgType.READ_CAL:
        return [fields["cup"]]
    if t == MsgType.SET_LIMIT:
        return [fields["limit_raw"]]
    return []


def payload(msg_type: int, fields: dict) -> bytes:
    fmt = "<" + "".join(f for _, f in layout(msg_type, fields))
    return struct.pack(fmt, *payload_values(msg_type, fields))


# --- the examples --------------------------------------------------------------

def _sample(n_raw: list[int], status: list[int]) -> dict:
    return {"n": len(n_raw), "suction_raw": n_raw, "suction_kpa": [kpa(r) for r in n_raw],
            "status": status}


def _cal_data(cup: int, coeffs: list[float], valid: bool) -> str:
    return struct.pack("<BfffB", cup, *coeffs, int(valid)).hex()


# Calibration coefficients exactly representable in float32, so the decoded
# values equal the JSON numbers in every language.
CAL = [-0.375, 1.015625, 0.0001220703125]

SPECS: list[dict] = [
    dict(name="sample_1cup", type=MsgType.SAMPLE, seq=0, time_us=1_000_000,
         description="One cup at 22.50 kPa suction, pump on and regulating (smallest SAMPLE).",
         fields=_sample([2250], [0x09])),
    dict(name="sample_8cups", type=MsgType.SAMPLE, seq=1234, time_us=12_345_678,
         description="Eight cups: in band, zero, negative (above ambient), over the hard "
                     "limit, no reading (sensor fault), the largest value; status bits vary.",
         fields=_sample([2210, 2198, 0, -50, 2500, 3001, NO_READING, 32767],
                        [0x09, 0x08, 0x02, 0x02, 0x28, 0x12, 0x04, 0x00])),
    dict(name="sample_16cups", type=MsgType.SAMPLE, seq=42, time_us=500_000,
         description="Sixteen cups (largest SAMPLE, 62 bytes).",
         fields=_sample([2000 + 25 * i for i in range(16)], [0x08] * 16)),
    dict(name="sample_wrap_edge", type=MsgType.SAMPLE, seq=65535, time_us=0xFFFFFFFF,
         description="Last seq and last microsecond before both counters wrap to 0.",
         fields=_sample([2300, -2300], [0x08, 0x08])),
    dict(name="info", type=MsgType.INFO, seq=0, time_us=250_000,
         description="INFO of an 8-cup device with an MPXV6115V, calibration applied on "
                     "the device, 12-bit ADC, 30.00 kPa interlock.",
         fields={"serial": "CUP-0001", "firmware": [1, 2, 3], "cups": 8, "rate_hz": 250,
                 "sensor_model": int(SensorModel.MPXV6115V), "flags": 0x01, "adc_bits": 12,
                 "hard_limit_raw": 3000, "hard_limit_kpa": 30.0}),
    dict(name="info_simulated", type=MsgType.INFO, seq=1, time_us=250_100,
         description="INFO of the simulator: 16-char serial (no NUL), simulated sensor, "
                     "flags absolute sensor + simulated, digital sensor (0 ADC bits).",
         fields={"serial": "SIM-0123456789AB", "firmware": [0, 9, 17], "cups": 16,
                 "rate_hz": 1000, "sensor_model": int(SensorModel.SIMULATED), "flags": 0x06,
                 "adc_bits": 0, "hard_limit_raw": 2850, "hard_limit_kpa": 28.5}),
    dict(name="event_interlock_tripped", type=MsgType.EVENT, seq=77, time_us=98_765_432,
         description="Cup 3 tripped the interlock at 30.12 kPa.",
         fields={"code": int(EventCode.INTERLOCK_TRIPPED), "code_name": "INTERLOCK_TRIPPED",
                 "cup": 3, "value": 3012}),
    dict(name="event_boot", type=MsgType.EVENT, seq=0, time_us=1_200,
         description="Device booted (reset cause 1), whole device (cup 0).",
         fields={"code": int(EventCode.BOOT), "code_name": "BOOT", "cup": 0, "value": 1}),
    dict(name="event_overrun", type=MsgType.EVENT, seq=500, time_us=2_000_000,
         description="The device could not send 17 samples.",
         fields={"code": int(EventCode.OVERRUN), "code_name": "OVERRUN", "cup": 0,
                 "value": 17}),
    dict(name="ack_start", type=MsgType.ACK, seq=12, time_us=3_000_000,
         description="ACK of START (command seq 7); no data.",
         fields={"cmd_seq": 7, "cmd_type": int(MsgType.START), "cmd_name": "START",
                 "data_hex": ""}),
    dict(name="ack_read_cal", type=MsgType.ACK, seq=13, time_us=3_001_000,
         description="ACK of READ_CAL for cup 2 with its (valid) coefficients.",
         fields={"cmd_seq": 8, "cmd_type": int(MsgType.READ_CAL), "cmd_name": "READ_CAL",
                 "data_hex": _cal_data(2, CAL, True),
                 "cal": {"cup": 2, "coeffs": CAL, "valid": True}}),
    dict(name="nack_out_of_range", type=MsgType.NACK, seq=14, time_us=3_002_000,
         description="NACK of SET_RATE (command seq 9): rate out of range.",
         fields={"cmd_seq": 9, "cmd_type": int(MsgType.SET_RATE), "cmd_name": "SET_RATE",
                 "reason": int(NackReason.OUT_OF_RANGE), "reason_name": "OUT_OF_RANGE"}),
    dict(name="cmd_ping", type=MsgType.PING, seq=1, time_us=0,
         description="PING (empty payload; the host leaves time_us 0).", fields={}),
    dict(name="cmd_get_info", type=MsgType.GET_INFO, seq=2, time_us=0,
         description="GET_INFO: the device ACKs, then sends INFO.", fields={}),
    dict(name="cmd_start", type=MsgType.START, seq=3, time_us=0,
         description="START every cup (mask FFFF).", fields={"mask": 0xFFFF}),
    dict(name="cmd_stop", type=MsgType.STOP, seq=4, time_us=0,
         description="STOP cups 1 and 3 (mask 0005).", fields={"mask": 0x0005}),
    dict(name="cmd_set_band", type=MsgType.SET_BAND, seq=5, time_us=5_000_000,
         description="SET_BAND cups 1-8 to 20.00-25.00 kPa (host clock in time_us).",
         fields={"mask": 0x00FF, "low_raw": 2000, "low_kpa": 20.0, "high_raw": 2500,
                 "high_kpa": 25.0}),
    dict(name="cmd_vent", type=MsgType.VENT, seq=6, time_us=0,
         description="VENT cup 2 (mask 0002).", fields={"mask": 0x0002}),
    dict(name="cmd_zero", type=MsgType.ZERO, seq=7, time_us=0,
         description="ZERO (tare) cup 1 (mask 0001).", fields={"mask": 0x0001}),
    dict(name="cmd_set_rate", type=MsgType.SET_RATE, seq=8, time_us=0,
         description="SET_RATE 250 Hz.", fields={"rate_hz": 250}),
    dict(name="cmd_write_cal", type=MsgType.WRITE_CAL, seq=9, time_us=0,
         description="WRITE_CAL cup 2: c0 = -0.375 kPa, c1 = 1.015625, c2 = 2^-13 1/kPa.",
         fields={"cup": 2, "coeffs": CAL}),
    dict(name="cmd_read_cal", type=MsgType.READ_CAL, seq=10, time_us=0,
         description="READ_CAL cup 2.", fields={"cup": 2}),
    dict(name="cmd_set_limit", type=MsgType.SET_LIMIT, seq=11, time_us=0,
         description="SET_LIMIT: interlock at 30.00 kPa.",
         fields={"limit_raw": 3000, "limit_kpa": 30.0}),
    dict(name="cmd_start_bad_length", type=MsgType.START, seq=12, time_us=0,
         description="START with a 1-byte payload: CRC good, payload malformed; the device "
                     "answers NACK BAD_LENGTH.",
         fields={"payload_hex": "ff", "error": int(NackReason.BAD_LENGTH),
                 "error_name": "BAD_LENGTH"}),
]


def build_frame_vector(spec: dict) -> dict:
    t = int(spec["type"])
    pl = payload(t, spec["fields"])
    return {"name": spec["name"], "description": spec["description"], "kind": "frame",
            "hex": frame(t, pl, spec["seq"], spec["time_us"]).hex(),
            "type": t, "type_name": MsgType(t).name, "seq": spec["seq"],
            "time_us": spec["time_us"], "length": len(pl), "fields": spec["fields"]}


def build_stream_vector() -> dict:
    a = frame(MsgType.PING, b"", 20, 0)
    b = bytearray(frame(MsgType.SET_RATE, struct.pack("<H", 100), 21, 0))
    b[11] ^= 0x01  # one flipped bit in the payload: CRC fails
    c = frame(MsgType.VENT, struct.pack("<H", 0x0001), 22, 0)
    d = frame(MsgType.START, struct.pack("<H", 0xFFFF), 23, 0)
    noise = bytes.fromhex("00ff5aa513a5") + b"hello\r\n"
    data = noise + a + bytes(b) + c + b"\xa5" + d
    return {"name": "stream_resync", "kind": "stream", "hex": data.hex(),
            "description": "Noise (with a lone A5 and a reversed sync), PING, a SET_RATE with "
                           "one flipped bit, VENT, a stray A5, START: three frames survive in "
                           "order and one CRC error is counted.",
            "frames": [{"type": int(MsgType.PING), "seq": 20},
                       {"type": int(MsgType.VENT), "seq": 22},
                       {"type": int(MsgType.START), "seq": 23}],
            "crc_errors": 1}


def build_all() -> list[dict]:
    crc = {"name": "crc_check", "kind": "crc", "hex": b"123456789".hex(), "crc": 0x29B1,
           "description": "CRC-16/CCITT-FALSE check value of ASCII 123456789."}
    return [build_frame_vector(s) for s in SPECS] + [build_stream_vector(), crc]


# --- docs section 8 ------------------------------------------------------------

def _hexbytes(b: bytes) -> str:
    return " ".join(f"{x:02X}" for x in b)


def _bits(flags: type, value: int) -> str:
    names = [f.name for f in flags if value & f]
    return " = " + " \\| ".join(names) if names else ""


def _describe(label: str, value, vec: dict) -> str:
    """Engineering meaning of one decoded payload field."""
    if isinstance(value, bytes):
        if label == "serial":
            return f'"{value.rstrip(bytes(1)).decode("ascii")}"'
        return f"{len(value)} byte" + ("s" if len(value) != 1 else "")
    if isinstance(value, float):
        return repr(value)
    t = vec["type"]
    if label.startswith("suction") or label in ("low", "high", "limit", "hard limit"):
        return "no reading" if value == NO_READING else f"{value} = {value / 100:.2f} kPa"
    if label.startswith("status"):
        return f"0x{value:02X}" + _bits(Status, value)
    if label == "flags":
        return f"0x{value:02X}" + _bits(InfoFlags, value)
    if label == "cup mask":
        cups = [str(c + 1) for c in range(16) if value >> c & 1]
        return f"0x{value:04X} = cups " + (",".join(cups) if len(cups) < 16 else "all")
    if label == "cmd_type":
        return f"{value} = {MsgType(value).name}"
    if label == "reason":
        return f"{value} = {NackReason(value).name}"
    if label == "code" and t == MsgType.EVENT:
        return f"{value} = {EventCode(value).name}"
    if label == "sensor_model":
        return f"{value} = {SensorModel(value).name}"
    return str(value)


def render_vector(vec: dict, number: int) -> str:
    raw = bytes.fromhex(vec["hex"])
    out = [f"### 8.{number} `{vec['name']}`", "", vec["description"], "", "```"]
    out += [_hexbytes(raw[i:i + 16]) for i in range(0, len(raw), 16)]
    out += ["```", ""]
    if vec["kind"] == "crc":
        out.append(f"CRC = `0x{vec['crc']:04X}`.")
        return "\n".join(out) + "\n"
    if vec["kind"] == "stream":
        got = ", ".join(f"{MsgType(f['type']).name} seq {f['seq']}" for f in vec["frames"])
        out.append(f"Recovered in order: {got}; CRC errors: {vec['crc_errors']}.")
        return "\n".join(out) + "\n"
    out += ["| offset | bytes | field | value |", "|---|---|---|---|"]
    seq, time_us = vec["seq"], vec["time_us"]
    rows = [(0, 2, "sync", ""), (2, 1, "version", "1"),
            (3, 1, "type", f"0x{vec['type']:02X} = {vec['type_name']}"),
            (4, 1, "length L", f"{vec['length']}"), (5, 2, "seq", f"{seq}"),
            (7, 4, "time_us", f"{time_us} µs = {time_us / 1e6:.6f} s")]
    off = 11
    fields = layout(vec["type"], vec["fields"])
    values = struct.unpack_from("<" + "".join(f for _, f in fields), raw, off)
    for (label, fmt), value in zip(fields, values, strict=True):
        size = struct.calcsize("<" + fmt)
        rows.append((off, size, label, _describe(label, value, vec)))
        off += size
    crc = struct.unpack_from("<H", raw, off)[0]
    rows.append((off, 2, "crc", f"0x{crc:04X} over bytes 2..{off - 1}"))
    for o, size, label, text in rows:
        out.append(f"| {o} | `{_hexbytes(raw[o:o + size])}` | {label} | {text} |")
    return "\n".join(out) + "\n"


def render_section8(vectors: list[dict]) -> str:
    head = [SECTION8, "",
            "Generated by `tests/vectors/make_vectors.py` from the files in "
            "`tests/vectors/` (a test checks that this section and the files agree). "
            "Bytes are hex; multi-byte fields are little-endian.", ""]
    parts = [render_vector(v, i + 1) for i, v in enumerate(vectors)]
    return "\n".join(head) + "\n" + "\n".join(parts)


def doc_section8(text: str) -> str | None:
    """Section 8 as it stands in docs/protocol.md (to the end or the next ``## ``)."""
    start = text.find(SECTION8)
    if start < 0:
        return None
    end = text.find("\n## ", start + len(SECTION8))
    return text[start:] if end < 0 else text[start:end + 1]


def load_vectors() -> list[dict]:
    """The committed vector files, in the order of :func:`build_all`."""
    order = {v["name"]: i for i, v in enumerate(build_all())}
    vecs = [json.loads(p.read_text()) for p in sorted(HERE.glob("*.json"))]
    return sorted(vecs, key=lambda v: order.get(v["name"], math.inf))


def main(argv: list[str]) -> int:
    vectors = build_all()
    files = {f"{v['name']}.json": json.dumps(v, indent=2) + "\n" for v in vectors}
    doc = DOC.read_text()
    section = render_section8(vectors)
    if "--check" in argv:
        stale = [n for n, s in files.items()
                 if not (HERE / n).exists() or (HERE / n).read_text() != s]
        if doc_section8(doc) != section:
            stale.append(str(DOC))
        print("\n".join(stale) or "up to date")
        return 1 if stale else 0
    for name, text in files.items():
        (HERE / name).write_text(text)
    old = doc_section8(doc)
    doc = doc.replace(old, section) if old else doc.rstrip("\n") + "\n\n" + section
    DOC.write_text(doc)
    print(f"wrote {len(files)} vectors and {DOC.name} section 8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
