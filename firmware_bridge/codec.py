"""The wire-protocol codec (docs/protocol.md): the one import path for encoding
and decoding frames of protocol v1 and serial-plotter text.

The implementation lives in :mod:`.frames` (frame layout, encoders, payload
decoders), :mod:`.framescan` (finding frames in bytes, vectorised),
:mod:`.decoder` (the stream :class:`Decoder`) and :mod:`.textformat`.
"""

from __future__ import annotations

from .decoder import Decoder, DecodeResult
from .frames import (
    Command,
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
from .textformat import encode_text_samples

__all__ = [
    "Command",
    "DecodeResult",
    "Decoder",
    "crc16_rows",
    "decode_cal_data",
    "encode_ack",
    "encode_cal_data",
    "encode_command",
    "encode_event",
    "encode_frame",
    "encode_info",
    "encode_nack",
    "encode_samples",
    "encode_text_samples",
    "kpa_to_raw",
    "raw_to_kpa",
]
