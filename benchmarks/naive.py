"""The straightforward baseline: decode and check one frame (or line) at a time
in plain Python, the way a first serial monitor is usually written.

Binary: find the sync, ``struct`` the header, CRC the frame (with
``binascii.crc_hqx``, which *is* CRC-16/CCITT-FALSE with init 0xFFFF and runs
in C: the strongest per-frame CRC a Python program gets without numpy), then
``struct`` the payload and compare every cup's reading. Text: split each line,
``float()`` each field, compare.

The checks are a subset of cupmon's checker (docs/alarms.md): valid reading
(finite, inside the sensor range, no SENSOR_FAULT bit), over_suction with its
1 s on-delay and no delay at the hard limit, under_suction (2 s) and detached
(0.5 s) while regulating, sensor_fault (0.5 s). cupmon also checks leak,
blockage, stuck sensor, dwell, signal loss and keeps statistics, so the
baseline does *less* work per sample than what it is compared with.
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Iterable

from firmware_bridge.protocol import NO_READING, Status, crc16_ccitt_false

_HDR = struct.Struct("<BBBHI")   # version, type, length, seq, time_us (after the sync)
_SYNC = b"\xa5\x5a\x01"
_REG = int(Status.REGULATING)
_FAULT = int(Status.SENSOR_FAULT)

# Thresholds (kPa, s): the defaults of monitor.config.CupConfig.
OVER, HARD, UNDER, DETACHED = 26.0, 30.0, 19.0, 5.0
OVER_DELAY, UNDER_DELAY, DETACHED_DELAY, FAULT_DELAY = 1.0, 2.0, 0.5, 0.5
SENSOR_MIN, SENSOR_MAX = -20.0, 100.0


class NaiveChecker:
    """Per-sample, per-cup comparisons with on-delays (see module doc).
    ``detections`` collects (t, cup, condition) of every raise."""

    def __init__(self) -> None:
        self.detections: list[tuple[float, int, str]] = []
        self._since: dict[tuple[int, str], float] = {}   # condition true since (device s)
        self._raised: set[tuple[int, str]] = set()

    def _hold(self, cup: int, name: str, cond: bool, t: float, delay: float) -> None:
        key = (cup, name)
        if not cond:
            self._since.pop(key, None)
            self._raised.discard(key)
            return
        since = self._since.setdefault(key, t)
        if key not in self._raised and t - since >= delay:
            self._raised.add(key)
            self.detections.append((t, cup, name))

    def sample(self, t: float, cup: int, kpa: float, status: int) -> None:
        valid = math.isfinite(kpa) and SENSOR_MIN < kpa < SENSOR_MAX and not status & _FAULT
        self._hold(cup, "sensor_fault", not valid, t, FAULT_DELAY)
        if not valid:
            return
        self._hold(cup, "over_suction", kpa > OVER, t, 0.0 if kpa >= HARD else OVER_DELAY)
        regulating = bool(status & _REG)
        self._hold(cup, "under_suction", regulating and kpa < UNDER, t, UNDER_DELAY)
        self._hold(cup, "detached", regulating and kpa < DETACHED, t, DETACHED_DELAY)


def _crc_c(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def decode_check_binary(chunks: Iterable[bytes], pure_python_crc: bool = False
                        ) -> tuple[int, NaiveChecker]:
    """Decode SAMPLE frames one by one from ``chunks`` and check every cup.
    ``pure_python_crc``: the table-driven CRC loop of
    :func:`firmware_bridge.protocol.crc16_ccitt_false` instead of
    ``binascii.crc_hqx``. Returns (sample frames decoded, the checker)."""
    crc16 = crc16_ccitt_false if pure_python_crc else _crc_c
    checker = NaiveChecker()
    frames = 0
    buf = b""
    t_prev_raw = None
    t_abs = 0
    for chunk in chunks:
        buf += chunk
        i = 0
        end_buf = len(buf)
        while True:
            j = buf.find(_SYNC, i)
            if j < 0 or end_buf - j < 13:
                i = j if j >= 0 else max(i, end_buf - 2)
                break
            version, mtype, length, seq, time_us = _HDR.unpack_from(buf, j + 2)
            end = j + 13 + length
            if end > end_buf:
                i = j
                break
            (crc,) = struct.unpack_from("<H", buf, end - 2)
            if crc16(buf[j + 2:end - 2]) != crc:
                i = j + 1
                continue
            i = end
            if mtype != 1:
                continue
            # Unwrap the 32-bit µs clock.
            if t_prev_raw is not None:
                t_abs += (time_us - t_prev_raw) % (1 << 32)
            t_prev_raw = time_us
            t = t_abs / 1e6
            n = buf[j + 11]
            values = struct.unpack_from(f"<{n}h{n}B", buf, j + 12)
            for c in range(n):
                raw = values[c]
                kpa = math.nan if raw == NO_READING else raw * 0.01
                checker.sample(t, c + 1, kpa, values[n + c])
            frames += 1
        buf = buf[i:]
    return frames, checker


def decode_check_text(chunks: Iterable[bytes]) -> tuple[int, NaiveChecker]:
    """Parse serial-plotter lines (``t:1.234 cup1:22.10 ...``) one by one and
    check every cup as if regulating. Returns (lines decoded, the checker)."""
    checker = NaiveChecker()
    lines = 0
    buf = b""
    first = True
    for chunk in chunks:
        buf += chunk
        *whole, buf = buf.split(b"\n")
        if first and whole:
            whole = whole[1:]  # the first line may be partial
            first = False
        for line in whole:
            t = None
            cups: list[float] = []
            try:
                for field in line.replace(b",", b" ").split():
                    label, _, value = field.rpartition(b":")
                    if label == b"t":
                        t = float(value)
                    else:
                        cups.append(float(value))
            except ValueError:
                continue
            if t is None or not cups:
                continue
            for c, kpa in enumerate(cups):
                checker.sample(t, c + 1, kpa, _REG)
            lines += 1
    return lines, checker


def chunked(data: bytes, size: int) -> Iterable[bytes]:
    """``data`` in ``size``-byte pieces, as a serial port delivers it."""
    for i in range(0, len(data), size):
        yield data[i:i + size]
