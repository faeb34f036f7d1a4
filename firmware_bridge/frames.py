"""Binary frames of wire protocol v1 (docs/protocol.md sections 1-4): the
:class:`Command` type, encoders for every message, payload decoders and a CRC
that runs over many frames at once.

Everything here works on whole frames; finding frames in a byte stream is
:mod:`firmware_bridge.decoder`'s job.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import numpy as np

from .messages import Ack, DeviceInfo, Nack
from .protocol import (
    CRC_SIZE,
    CRC_TABLE,
    HEADER_SIZE,
    MAX_CUPS,
    MAX_PAYLOAD,
    NO_READING,
    SEQ_WRAP,
    SYNC,
    TIME_WRAP_US,
    VERSION,
    MsgType,
    NackReason,
    crc16_ccitt_false,
)

_HEADER = struct.Struct("<2sBBBHI")  # sync, version, type, length, seq, time_us
_CRC = struct.Struct("<H")  # the CRC is little-endian like every other field
_INFO = struct.Struct("<16s3BBHBBBh")  # L = 27
_EVENT = struct.Struct("<BBh")  # L = 4
_ACK = struct.Struct("<HB")  # L = 3 + data
_NACK = struct.Struct("<HBB")  # L = 4
_MASK = struct.Struct("<H")
_BAND = struct.Struct("<Hhh")
_RATE = struct.Struct("<H")
_WRITE_CAL = struct.Struct("<Bfff")
_READ_CAL = struct.Struct("<B")
_LIMIT = struct.Struct("<h")
_CAL_DATA = struct.Struct("<BfffB")  # READ_CAL ack data: cup, c0, c1, c2, valid

INFO_LENGTH = _INFO.size
EVENT_LENGTH = _EVENT.size
CAL_DATA_LENGTH = _CAL_DATA.size
I16_MAX = 32767

_MASK_COMMANDS = frozenset({MsgType.START, MsgType.STOP, MsgType.VENT, MsgType.ZERO})
#: Payload length of every command (docs/protocol.md section 2).
COMMAND_LENGTHS: dict[MsgType, int] = {
    MsgType.PING: 0,
    MsgType.GET_INFO: 0,
    MsgType.START: _MASK.size,
    MsgType.STOP: _MASK.size,
    MsgType.SET_BAND: _BAND.size,
    MsgType.VENT: _MASK.size,
    MsgType.ZERO: _MASK.size,
    MsgType.SET_RATE: _RATE.size,
    MsgType.WRITE_CAL: _WRITE_CAL.size,
    MsgType.READ_CAL: _READ_CAL.size,
    MsgType.SET_LIMIT: _LIMIT.size,
}


@dataclass(frozen=True)
class Command:
    """A host -> device command (types 0x10-0x1A).

    Only the fields of ``type`` are sent: ``mask`` (START/STOP/VENT/ZERO/SET_BAND;
    bit i = cup i+1), ``low_kpa``/``high_kpa`` (SET_BAND, suction kPa, 0.01 kPa
    steps), ``rate_hz`` (SET_RATE), ``cup`` (WRITE_CAL/READ_CAL, 1-based),
    ``coeffs`` (WRITE_CAL: c0 kPa, c1, c2 1/kPa, sent as float32), ``limit_kpa``
    (SET_LIMIT). ``error`` is set only on a *decoded* command whose frame was
    well formed but whose payload was not: a :class:`NackReason` the device
    should answer with (BAD_LENGTH, or UNKNOWN_COMMAND for an unknown type).
    """

    type: MsgType
    seq: int = 0
    mask: int = 0
    low_kpa: float = 0.0
    high_kpa: float = 0.0
    rate_hz: int = 0
    cup: int = 0
    coeffs: tuple[float, float, float] = (0.0, 1.0, 0.0)
    limit_kpa: float = 0.0
    error: int | None = None


# --- CRC over many frames ------------------------------------------------------

_CRC_TABLE16 = np.array(CRC_TABLE, dtype=np.uint16)


@functools.lru_cache(maxsize=64)
def _crc_position_table(m: int) -> tuple[np.ndarray, int]:
    """CRC contributions for an ``m``-byte message: a flat (m*256,) uint16 table
    whose entry ``p*256 + b`` is the CRC register (from 0) after byte ``b`` at
    position ``p`` followed by zeros, and the CRC of ``m`` zero bytes from 0xFFFF.

    The CRC is affine over GF(2), so crc(msg) = crc(zeros) ^ XOR_p table[p, msg[p]]:
    one gather and one XOR-reduce instead of a loop over bytes.
    """
    tab = np.empty((m, 256), dtype=np.uint16)
    cur = _CRC_TABLE16.copy()
    for p in range(m - 1, -1, -1):
        tab[p] = cur
        # Push one zero byte through the register (uint16 << 8 drops the high byte).
        cur = (cur << np.uint16(8)) ^ _CRC_TABLE16[cur >> np.uint16(8)]
    return tab.reshape(-1), crc16_ccitt_false(bytes(m))


_CRC_BATCH_BYTES = 1 << 20  # rows per pass * m: bounds the index scratch (8 B each)


def crc16_rows(rows: np.ndarray) -> np.ndarray:
    """CRC-16/CCITT-FALSE of every row of a (k, m) uint8 array -> (k,) uint16."""
    k, m = rows.shape
    if m == 0:
        return np.full(k, 0xFFFF, dtype=np.uint16)
    table, zero_crc = _crc_position_table(m)
    offsets = np.arange(0, m * 256, 256, dtype=np.intp)
    out = np.empty(k, dtype=np.uint16)
    step = max(1, _CRC_BATCH_BYTES // m)
    for a in range(0, k, step):
        idx = rows[a:a + step].astype(np.intp)
        idx += offsets
        out[a:a + step] = np.bitwise_xor.reduce(table[idx], axis=1)
    out ^= np.uint16(zero_crc)
    return out


@functools.lru_cache(maxsize=4)
def _crc_word_table(m: int, with_crc: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_crc_position_table` for 16-bit little-endian words: a flat
    (w*65536,) uint16 table whose entry ``q*65536 + word`` is the contribution
    of the two message bytes ``word & 0xFF``, ``word >> 8`` at word position
    ``q`` (position 0 also carries the CRC of ``m`` zero bytes: every message
    has one word there); (w, 1) intp row offsets; and ``lead`` (1 when ``m`` is
    odd: the words then start one byte before the message, and that byte
    contributes nothing). ``with_crc``: one more position, the little-endian
    CRC that follows the message, contributing itself, so that the XOR of all
    is 0 for a good frame. Half the gathers of the byte table, for m * 64 KiB
    of memory (2.2 MB for an 8-cup frame)."""
    lead = m & 1
    table, zero_crc = _crc_position_table(m)
    by_byte = np.zeros((m + lead, 256), dtype=np.uint16)
    by_byte[lead:] = table.reshape(m, 256)
    word = np.arange(1 << 16)
    words = by_byte[0::2][:, word & 0xFF] ^ by_byte[1::2][:, word >> 8]
    words[0] ^= np.uint16(zero_crc)
    if with_crc:
        words = np.vstack([words, word.astype(np.uint16)])
    offsets = np.arange(0, words.size, 1 << 16, dtype=np.intp)[:, None]
    return words.reshape(-1), offsets, lead


def _crc_words(buf: bytes, offset: int, stride: int, k: int, m: int,
               with_crc: bool) -> np.ndarray:
    table, offsets, lead = _crc_word_table(m, with_crc)
    words = np.ndarray((offsets.shape[0], k), "<u2", buf, offset - lead, (2, stride))
    # (w, k) with the words of one frame in a column: the reduce is w XORs of k-vectors.
    return np.bitwise_xor.reduce(table[np.add(words, offsets, dtype=np.intp)], axis=0)


def crc16_strided(buf: bytes, offset: int, stride: int, k: int, m: int) -> np.ndarray:
    """CRC-16/CCITT-FALSE of the ``k`` messages ``buf[offset + i*stride:][:m]``
    -> (k,) uint16, read in place (no gathered copy of the frames). When ``m``
    is odd, ``buf[offset - 1]`` must exist (its value does not matter)."""
    return _crc_words(buf, offset, stride, k, m, False)


def crc16_residue_strided(buf: bytes, offset: int, stride: int, k: int, m: int) -> np.ndarray:
    """Like :func:`crc16_strided`, XORed with the little-endian CRC stored in the
    two bytes after each message: (k,) uint16, 0 where the CRC is good."""
    return _crc_words(buf, offset, stride, k, m, True)


# --- frames --------------------------------------------------------------------

def encode_frame(msg_type: int, payload: bytes, seq: int, time_us: int) -> bytes:
    """One frame: header, ``payload`` (0-255 bytes) and CRC. ``seq`` is taken
    mod 2**16 and ``time_us`` (device clock, µs) mod 2**32."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} is not a byte")
    head = _HEADER.pack(SYNC, VERSION, msg_type, len(payload), seq % SEQ_WRAP,
                        int(time_us) % TIME_WRAP_US)
    body = head[2:] + payload
    return SYNC + body + _CRC.pack(crc16_ccitt_false(body))


@functools.lru_cache(maxsize=MAX_CUPS)
def sample_dtype(cups: int) -> np.dtype:
    """Packed structured dtype of a whole SAMPLE frame with ``cups`` cups
    (itemsize 13 + 1 + 3*cups bytes)."""
    return np.dtype([
        ("sync", "<u2"), ("version", "u1"), ("type", "u1"), ("length", "u1"),
        ("seq", "<u2"), ("time_us", "<u4"), ("n", "u1"),
        ("suction", "<i2", (cups,)), ("status", "u1", (cups,)), ("crc", "<u2"),
    ])


def sample_length(cups: int) -> int:
    """SAMPLE payload length L for ``cups`` cups (bytes)."""
    return 1 + 3 * cups


def kpa_to_raw(suction_kpa: np.ndarray) -> np.ndarray:
    """Suction (kPa, any shape) -> int16 wire units of 0.01 kPa; NaN -> NO_READING,
    values beyond ±327.67 kPa clipped (so that -32768 stays "no reading")."""
    scaled = np.asarray(suction_kpa, dtype=np.float64) * 100.0
    missing = np.isnan(scaled)
    raw = np.clip(np.rint(np.where(missing, 0.0, scaled)), -I16_MAX, I16_MAX).astype(np.int16)
    raw[missing] = NO_READING
    return raw


@functools.lru_cache(maxsize=1)
def _kpa_table() -> np.ndarray:
    """(65536,) float32 kPa of every int16 wire value, indexed by its uint16 bits."""
    raw = np.arange(1 << 16, dtype=np.uint16).view(np.int16)
    # float32 division of two exact values is correctly rounded: 2210 -> 22.1f.
    kpa = raw.astype(np.float32) / np.float32(100.0)
    kpa[raw == NO_READING] = np.nan
    kpa.flags.writeable = False
    return kpa


def bits_to_kpa(bits: np.ndarray) -> np.ndarray:
    """:func:`raw_to_kpa` of int16 wire values given as their uint16 bits (any
    shape, strided is fine): one table lookup, nothing else."""
    return _kpa_table().take(bits)


def raw_to_kpa(raw: np.ndarray) -> np.ndarray:
    """int16 wire units -> float32 kPa with NaN for NO_READING (same shape)."""
    # One table lookup instead of convert, divide and mask.
    return np.take(_kpa_table(), np.asarray(raw, dtype=np.int16).view(np.uint16))


def encode_samples(time_us: np.ndarray, suction_kpa: np.ndarray, status: np.ndarray,
                   seq0: int) -> tuple[bytes, int]:
    """``n`` SAMPLE frames in one go (no per-frame loop).

    time_us: (n,) int, device clock in µs (taken mod 2**32).
    suction_kpa: (n, cups) float kPa; NaN -> no reading; clipped to ±327.67 kPa.
    status: (n, cups) uint8 status bits.
    seq0: seq of the first frame. Returns (bytes of the n frames, next seq).
    """
    suction = np.asarray(suction_kpa)
    if suction.ndim != 2 or not 1 <= suction.shape[1] <= MAX_CUPS:
        raise ValueError(f"suction must be (n, 1..{MAX_CUPS}), got shape {suction.shape}")
    n, cups = suction.shape
    t = np.asarray(time_us).reshape(-1)
    st = np.asarray(status)
    if t.shape[0] != n or st.shape != suction.shape:
        raise ValueError(f"time_us {t.shape} and status {st.shape} do not match suction "
                         f"{suction.shape}")
    if n == 0:
        return b"", seq0 % SEQ_WRAP
    length = sample_length(cups)
    rec = np.zeros(n, dtype=sample_dtype(cups))
    rec["sync"] = int.from_bytes(SYNC, "little")
    rec["version"] = VERSION
    rec["type"] = MsgType.SAMPLE
    rec["length"] = length
    rec["seq"] = (seq0 + np.arange(n, dtype=np.int64)) % SEQ_WRAP
    rec["time_us"] = t.astype(np.int64) % TIME_WRAP_US
    rec["n"] = cups
    rec["suction"] = kpa_to_raw(suction)
    rec["status"] = st.astype(np.uint8)
    rows = rec.view(np.uint8).reshape(n, -1)
    rec["crc"] = crc16_rows(rows[:, 2:HEADER_SIZE + length])
    return rec.tobytes(), (seq0 + n) % SEQ_WRAP


def _raw16(kpa: float, what: str) -> int:
    """kPa -> int16 wire units (0.01 kPa), rejecting what does not fit."""
    if not math.isfinite(kpa) or abs(round(kpa * 100)) > I16_MAX:
        raise ValueError(f"{what} {kpa} kPa does not fit the wire range ±327.67 kPa")
    return round(kpa * 100)


def encode_info(info: DeviceInfo, seq: int, time_us: int) -> bytes:
    """INFO frame (L = 27). The serial number is cut to 16 ASCII bytes."""
    serial = info.serial.encode("ascii", "replace")[:16]
    payload = _INFO.pack(serial, *info.firmware, info.cups, info.rate_hz, info.sensor_model,
                         info.flags, info.adc_bits, _raw16(info.hard_limit_kpa, "hard limit"))
    return encode_frame(MsgType.INFO, payload, seq, time_us)


def encode_event(code: int, cup: int, value: int, seq: int, time_us: int) -> bytes:
    """EVENT frame: code, cup (1-based, 0 = device), i16 value."""
    return encode_frame(MsgType.EVENT, _EVENT.pack(code, cup, value), seq, time_us)


def encode_ack(cmd_seq: int, cmd_type: int, seq: int, time_us: int, data: bytes = b"") -> bytes:
    """ACK of the command with ``cmd_seq``/``cmd_type``; ``data`` for READ_CAL."""
    return encode_frame(MsgType.ACK, _ACK.pack(cmd_seq % SEQ_WRAP, cmd_type) + data, seq, time_us)


def encode_nack(cmd_seq: int, cmd_type: int, reason: int, seq: int, time_us: int) -> bytes:
    """NACK of a command with a :class:`NackReason`."""
    return encode_frame(MsgType.NACK, _NACK.pack(cmd_seq % SEQ_WRAP, cmd_type, reason),
                        seq, time_us)


def command_payload(cmd: Command) -> bytes:
    """Payload bytes of ``cmd`` (empty for PING, GET_INFO and unknown types)."""
    t = cmd.type
    if t in _MASK_COMMANDS:
        return _MASK.pack(cmd.mask)
    if t == MsgType.SET_BAND:
        return _BAND.pack(cmd.mask, _raw16(cmd.low_kpa, "band low"),
                          _raw16(cmd.high_kpa, "band high"))
    if t == MsgType.SET_RATE:
        return _RATE.pack(cmd.rate_hz)
    if t == MsgType.WRITE_CAL:
        return _WRITE_CAL.pack(cmd.cup, *cmd.coeffs)
    if t == MsgType.READ_CAL:
        return _READ_CAL.pack(cmd.cup)
    if t == MsgType.SET_LIMIT:
        return _LIMIT.pack(_raw16(cmd.limit_kpa, "limit"))
    return b""


def encode_command(cmd: Command, time_us: int = 0) -> bytes:
    """Command frame with ``cmd.seq``; ``time_us`` is the host's clock (µs) or 0."""
    try:
        payload = command_payload(cmd)
    except struct.error as exc:  # a mask or rate that does not fit its field
        raise ValueError(f"{cmd!r} does not fit the wire format: {exc}") from None
    return encode_frame(int(cmd.type), payload, cmd.seq, time_us)


def encode_cal_data(cup: int, coeffs: tuple[float, float, float], valid: bool) -> bytes:
    """ACK data of READ_CAL: u8 cup, f32 c0 c1 c2, u8 valid (14 bytes)."""
    return _CAL_DATA.pack(cup, *coeffs, 1 if valid else 0)


def decode_cal_data(data: bytes) -> tuple[int, tuple[float, float, float], bool]:
    """READ_CAL ack data -> (cup, (c0, c1, c2), valid). Never raises: data of
    the wrong length gives ``(0, (0.0, 1.0, 0.0), False)`` (cup 0 is never a
    real answer, so the caller can tell)."""
    if len(data) != CAL_DATA_LENGTH:
        return 0, (0.0, 1.0, 0.0), False
    cup, c0, c1, c2, valid = _CAL_DATA.unpack(data)
    return cup, (c0, c1, c2), valid != 0


# --- payload decoders (whole, CRC-checked frames; None when malformed) ---------

def decode_info(payload: bytes) -> DeviceInfo | None:
    """INFO payload -> DeviceInfo. Longer payloads are accepted (fields a later
    minor revision may append are ignored)."""
    if len(payload) < INFO_LENGTH:
        return None
    (serial, fw0, fw1, fw2, cups, rate, model, flags, adc_bits,
     limit) = _INFO.unpack_from(payload)
    return DeviceInfo(serial=serial.split(b"\0", 1)[0].decode("ascii", "replace"),
                      firmware=(fw0, fw1, fw2), cups=cups, rate_hz=rate, sensor_model=model,
                      flags=flags, adc_bits=adc_bits, hard_limit_kpa=limit / 100)


def decode_event(payload: bytes) -> tuple[int, int, int] | None:
    """EVENT payload -> (code, cup, value)."""
    if len(payload) < EVENT_LENGTH:
        return None
    return _EVENT.unpack_from(payload)


def decode_ack(payload: bytes) -> Ack | None:
    if len(payload) < _ACK.size:
        return None
    seq, cmd = _ACK.unpack_from(payload)
    return Ack(seq=seq, cmd=cmd, data=bytes(payload[_ACK.size:]))


def decode_nack(payload: bytes) -> Nack | None:
    if len(payload) < _NACK.size:
        return None
    seq, cmd, reason = _NACK.unpack_from(payload)
    return Nack(seq=seq, cmd=cmd, reason=reason)


def decode_command(msg_type: int, seq: int, payload: bytes) -> Command:
    """Command frame payload -> Command; ``error`` says why a device must NACK it."""
    try:
        t = MsgType(msg_type)
    except ValueError:
        return Command(type=msg_type, seq=seq, error=NackReason.UNKNOWN_COMMAND)  # type: ignore[arg-type]
    if t not in COMMAND_LENGTHS:
        return Command(type=t, seq=seq, error=NackReason.UNKNOWN_COMMAND)
    if len(payload) != COMMAND_LENGTHS[t]:
        return Command(type=t, seq=seq, error=NackReason.BAD_LENGTH)
    if t in _MASK_COMMANDS:
        return Command(type=t, seq=seq, mask=_MASK.unpack(payload)[0])
    if t == MsgType.SET_BAND:
        mask, low, high = _BAND.unpack(payload)
        return Command(type=t, seq=seq, mask=mask, low_kpa=low / 100, high_kpa=high / 100)
    if t == MsgType.SET_RATE:
        return Command(type=t, seq=seq, rate_hz=_RATE.unpack(payload)[0])
    if t == MsgType.WRITE_CAL:
        cup, c0, c1, c2 = _WRITE_CAL.unpack(payload)
        return Command(type=t, seq=seq, cup=cup, coeffs=(c0, c1, c2))
    if t == MsgType.READ_CAL:
        return Command(type=t, seq=seq, cup=_READ_CAL.unpack(payload)[0])
    if t == MsgType.SET_LIMIT:
        return Command(type=t, seq=seq, limit_kpa=_LIMIT.unpack(payload)[0] / 100)
    return Command(type=t, seq=seq)  # PING, GET_INFO


FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE
