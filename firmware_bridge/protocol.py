"""Constants of the cupmon wire protocol, version 1 (docs/protocol.md).

Everything that the codec, the simulator, the C firmware and the monitor must
agree on is defined here once.
"""

from __future__ import annotations

import enum

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER_SIZE = 11  # sync(2) version(1) type(1) len(1) seq(2) time_us(4)
CRC_SIZE = 2
MAX_PAYLOAD = 255
MAX_CUPS = 16

#: Suction on the wire is an int16 in units of 10 Pa.
SUCTION_SCALE_KPA = 0.01
#: int16 value meaning "no reading" (sensor absent / fault).
NO_READING = -32768
#: Device clock wraps after 2**32 microseconds.
TIME_WRAP_US = 1 << 32
SEQ_WRAP = 1 << 16

DEFAULT_BAUD = 115200
#: Host waits this long for an ACK/NACK before resending (seconds).
ACK_TIMEOUT_S = 0.25
ACK_ATTEMPTS = 3
MIN_RATE_HZ = 10
MAX_RATE_HZ = 2000
ALL_CUPS = 0xFFFF


class MsgType(enum.IntEnum):
    SAMPLE = 0x01
    INFO = 0x02
    EVENT = 0x03
    ACK = 0x04
    NACK = 0x05
    PING = 0x10
    GET_INFO = 0x11
    START = 0x12
    STOP = 0x13
    SET_BAND = 0x14
    VENT = 0x15
    ZERO = 0x16
    SET_RATE = 0x17
    WRITE_CAL = 0x18
    READ_CAL = 0x19
    SET_LIMIT = 0x1A


DEVICE_TYPES = frozenset({MsgType.SAMPLE, MsgType.INFO, MsgType.EVENT, MsgType.ACK, MsgType.NACK})
COMMAND_TYPES = frozenset(t for t in MsgType if t >= 0x10)


class Status(enum.IntFlag):
    """Per-cup status bits carried in every SAMPLE frame."""

    PUMP_ON = 1 << 0
    VALVE_OPEN = 1 << 1
    SENSOR_FAULT = 1 << 2
    REGULATING = 1 << 3
    INTERLOCK = 1 << 4
    CALIBRATED = 1 << 5


class EventCode(enum.IntEnum):
    INTERLOCK_TRIPPED = 1
    INTERLOCK_CLEARED = 2
    SENSOR_FAULT = 3
    SENSOR_OK = 4
    BOOT = 5
    OVERRUN = 6
    HOST_LOST = 7


class NackReason(enum.IntEnum):
    UNKNOWN_COMMAND = 1
    BAD_LENGTH = 2
    BAD_CUP = 3
    OUT_OF_RANGE = 4
    BUSY = 5
    UNSUPPORTED = 6
    INTERLOCK = 7
    STORAGE = 8
    SENSOR_FAULT = 9


class SensorModel(enum.IntEnum):
    UNKNOWN = 0
    MPXV6115V = 1
    MPX5100 = 2
    XGZP6847A = 3
    ABP2 = 4
    SIMULATED = 255


class InfoFlags(enum.IntFlag):
    CAL_ON_DEVICE = 1 << 0
    ABSOLUTE_SENSOR = 1 << 1
    SIMULATED = 1 << 2


def cup_mask(cups: list[int] | tuple[int, ...] | None) -> int:
    """Bit mask for 1-based cup numbers; ``None`` means every cup."""
    if cups is None:
        return ALL_CUPS
    mask = 0
    for c in cups:
        if not 1 <= c <= MAX_CUPS:
            raise ValueError(f"cup {c} is outside 1..{MAX_CUPS}")
        mask |= 1 << (c - 1)
    return mask


def mask_cups(mask: int, n_cups: int) -> list[int]:
    """1-based cup numbers selected by ``mask`` among ``n_cups`` cups."""
    return [c for c in range(1, n_cups + 1) if mask & (1 << (c - 1))]


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE: tuple[int, ...] = tuple(_crc_table())


def crc16_ccitt_false(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16(b"123456789") == 0x29B1``."""
    table = CRC_TABLE
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
    return crc
