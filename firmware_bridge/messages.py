"""Data that flows from a source (serial link, simulator, replay) to listeners.

Arrays follow numpy conventions: ``n`` samples by ``cups`` columns. Suction is
in kPa (positive = below ambient), time in seconds of the *device* clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """A run of consecutive samples with no gap inside it.

    t:        (n,) float64, device time in s, strictly increasing, unwrapped.
    suction:  (n, cups) float32, kPa; NaN where the device sent "no reading".
    status:   (n, cups) uint8, :class:`firmware_bridge.protocol.Status` bits.
    host_time: ``time.monotonic()`` when the bytes of this block arrived (s).
    lost_before: frames known lost just before this block (sequence gap); 0 if none.
    gap_before: True when the stream was interrupted before this block (lost
        frames, link reconnect, device reset). Consumers draw a gap and never
        interpolate across it.
    """

    t: np.ndarray
    suction: np.ndarray
    status: np.ndarray
    host_time: float = 0.0
    lost_before: int = 0
    gap_before: bool = False

    @property
    def n(self) -> int:
        return int(self.t.shape[0])

    @property
    def cups(self) -> int:
        return int(self.suction.shape[1])


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    serial: str
    firmware: tuple[int, int, int]
    cups: int
    rate_hz: int
    sensor_model: int = 0
    flags: int = 0
    adc_bits: int = 0
    hard_limit_kpa: float = 30.0

    @property
    def firmware_str(self) -> str:
        return ".".join(str(v) for v in self.firmware)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """An EVENT frame from the device (interlock tripped, sensor fault, ...)."""

    code: int
    cup: int  # 1-based; 0 = whole device
    value: int
    t: float  # device time, s
    host_time: float = 0.0


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    cmd: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    cmd: int
    reason: int


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    RECONNECTED = "reconnected"
    CLOSED = "closed"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change of link state. ``message`` is one line a user can read."""

    state: LinkState
    host_time: float
    message: str = ""
    info: DeviceInfo | None = None


@dataclass(slots=True)
class LinkStats:
    """Running counters of a decoder / link (monotonic, never reset while open)."""

    bytes_in: int = 0
    frames_ok: int = 0
    samples: int = 0
    crc_errors: int = 0
    bytes_discarded: int = 0
    frames_lost: int = 0
    unknown_messages: int = 0
    text_lines: int = 0
    text_errors: int = 0
    reconnects: int = 0
    listener_overruns: dict[str, int] = field(default_factory=dict)

    def copy(self) -> LinkStats:
        c = LinkStats(**{k: getattr(self, k) for k in self.__slots__ if k != "listener_overruns"})
        c.listener_overruns = dict(self.listener_overruns)
        return c
