"""The stream decoder: bytes in arbitrary chunks -> SampleBlocks and messages.

One :class:`Decoder` per connection. It detects binary frames or serial-plotter
text, unwraps the device clock, splits blocks at gaps and counts everything it
throws away. ``feed`` never raises. docs/protocol.md section 7 explains the
rules with examples.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .frames import (
    Command,
    bits_to_kpa,
    crc16_residue_strided,
    decode_ack,
    decode_command,
    decode_event,
    decode_info,
    decode_nack,
    raw_to_kpa,
    sample_dtype,
)
from .framescan import Scan, scan_frames, windows
from .messages import Ack, DeviceEvent, DeviceInfo, LinkStats, Nack, SampleBlock
from .protocol import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_CUPS,
    SEQ_WRAP,
    SYNC,
    TIME_WRAP_US,
    VERSION,
    MsgType,
    NackReason,
)
from .textformat import TextLayout

log = logging.getLogger(__name__)

Message = DeviceInfo | DeviceEvent | Ack | Nack | Command

#: A device frame may carry a time up to this much before the previous frame's
#: (a sample taken before, but sent after, an ACK stamped at sending). Further
#: back is a clock discontinuity (device reset). µs.
MAX_BACK_US = 1_000_000
#: A forward step between consecutive device frames beyond the host-measured
#: silence plus this is a clock discontinuity (a reset that *looks* forward
#: modulo 2**32). µs.
MAX_FORWARD_US = 60_000_000
#: Good-CRC frames of another protocol version in a row before version_mismatch is set.
VERSION_MISMATCH_FRAMES = 3
#: Bytes kept while the mode is still unknown; older ones are discarded.
AUTO_BUFFER_LIMIT = 1 << 16
#: A text line longer than this (bytes) is garbage; it is dropped.
TEXT_LINE_LIMIT = 4096
#: Chunks are decoded in slices of at most this many bytes.
FEED_SLICE = 1 << 16
#: Whole sample lines needed (and no valid frame seen) before deciding "text".
TEXT_DETECT_LINES = 2

_NOT_ASCII = re.compile(rb"[\x80-\xff]")
_SAMPLE_PREFIX = SYNC + bytes((VERSION, MsgType.SAMPLE))  # first 4 bytes of a SAMPLE frame
_SAMPLE_HEAD = int.from_bytes(_SAMPLE_PREFIX, "little")
_HEAD_MASK = np.uint64((1 << 56) - 1)  # bytes 0..6 of a frame: sync .. seq
_HALF_WRAP = TIME_WRAP_US // 2
_HALF_SEQ = SEQ_WRAP // 2


@functools.lru_cache(maxsize=MAX_CUPS)
def _sample_heads(length: int) -> np.ndarray:
    """Bytes 0..6 (sync, version, type, length, seq) of the i-th of back-to-back
    SAMPLE frames of payload ``length`` whose first has seq 0, as little-endian
    u64 (bytes 7.. zero), for i up to more frames than a feed slice can hold."""
    i = np.arange(FEED_SLICE // 16, dtype=np.uint64)
    return (i % SEQ_WRAP) << np.uint64(40) | np.uint64(_SAMPLE_HEAD | length << 32)


_HEADER_DTYPE = np.dtype([("sync", "<u2"), ("version", "u1"), ("type", "u1"),
                          ("length", "u1"), ("seq", "<u2"), ("time_us", "<u4")])


@dataclass
class DecodeResult:
    """What one :meth:`Decoder.feed` produced: blocks of samples and the other
    messages, each list in stream order."""

    blocks: list[SampleBlock] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)

    def ordered(self) -> list[SampleBlock | Message]:
        """Everything in the order to publish it: INFO/ACK/NACK/commands, then
        the blocks, then device EVENTs. An event must never overtake the samples
        taken before it (a checker would see an interlock trip, then older
        samples without the INTERLOCK bit); samples carry their own status
        bits, so an event a chunk late is harmless."""
        head = [m for m in self.messages if not isinstance(m, DeviceEvent)]
        tail = [m for m in self.messages if isinstance(m, DeviceEvent)]
        return [*head, *self.blocks, *tail]


class Decoder:
    """Decode a byte stream of wire protocol v1 frames or serial-plotter text.

    ``mode``: "auto" (detect from content), "binary" or "text". The same
    decoder serves the host (device frames -> blocks and messages) and a device
    (command frames -> :class:`Command`).
    """

    #: Text: parse runs of like-shaped lines in one go (False: line by line, the
    #: reference the tests compare the fast path with).
    _text_fast = True

    def __init__(self, mode: str = "auto") -> None:
        if mode not in ("auto", "binary", "text"):
            raise ValueError(f"decoder mode must be auto, binary or text, not {mode!r}")
        self._auto = mode == "auto"
        self.mode = mode
        self.stats = LinkStats()
        #: Protocol version the device speaks when it is not ours (else None).
        self.version_mismatch: int | None = None
        #: True when the latest text samples had no t:/ms: field (host-timed).
        self.text_host_timed = False
        #: Exceptions caught inside feed() (a bug: always 0 in tests).
        self.internal_errors = 0
        self._buf = b""
        self._foreign_run = 0
        self._foreign_version: int | None = None
        # Timeline (binary): last device frame's seq, raw and unwrapped clock.
        self._seq: int | None = None
        self._raw = 0
        self._abs = 0
        self._host: float | None = None
        self._sample_abs: int | None = None
        self._cups: int | None = None
        self._pending_gap = False
        self._pending_lost = 0
        self._after_reset = False
        # Text.
        self._layout = TextLayout()
        self._skip_first_line = True
        self._text_t: float | None = None
        self._text_offset = 0.0
        self._text_host: float | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back for the next chunk (a partial frame or line)."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget partial bytes after a reconnect. The next block gets
        gap_before=True; its time continues monotonic (section 7.3)."""
        self.stats.bytes_discarded += len(self._buf)
        self._buf = b""
        self._pending_gap = True
        self._pending_lost = 0
        self._after_reset = self._seq is not None
        self._skip_first_line = True
        self._layout = TextLayout()
        self._foreign_run = 0
        if self._auto:
            self.mode = "auto"

    def feed(self, data: bytes, host_time: float | None = None) -> DecodeResult:
        """Decode the next chunk. ``host_time``: ``time.monotonic()`` of its arrival
        (s, default now). Never raises."""
        host = time.monotonic() if host_time is None else float(host_time)
        res = DecodeResult()
        data = bytes(data)
        if len(data) <= FEED_SLICE:
            self._feed_slice(data, host, res)
            return res
        # Big chunks go in slices: the result is the same (decisions never depend
        # on where a chunk ends) and the scratch arrays stay small whatever the input.
        for i in range(0, len(data), FEED_SLICE):
            self._feed_slice(data[i:i + FEED_SLICE], host, res)
        return res

    def _feed_slice(self, data: bytes, host: float, res: DecodeResult) -> None:
        try:
            self.stats.bytes_in += len(data)
            self._buf += data
            scan = None
            if self.mode == "auto":
                scan = self._detect()
            if self.mode == "binary":
                self._feed_binary(host, res, scan)
            elif self.mode == "text":
                self._feed_text(host, res)
        except Exception:  # a decoder bug must not kill the reader; count and go on
            self.internal_errors += 1
            log.exception("decoder failed; %d buffered bytes dropped", len(self._buf))
            self.stats.bytes_discarded += len(self._buf)
            self._buf = b""
            self._pending_gap = True

    # --- detection ----------------------------------------------------------
    def _detect(self) -> Scan | None:
        buf = self._buf
        scan = scan_frames(np.frombuffer(buf, dtype=np.uint8))
        if scan.starts.size or scan.foreign:
            self.mode = "binary"
            return scan
        # Not text while a frame may still be arriving (the scan kept its start),
        # and only lines after the last non-ASCII byte count: every frame has one.
        last_binary = _NOT_ASCII.search(buf[::-1])
        tail = buf if last_binary is None else buf[len(buf) - last_binary.start():]
        lines = tail.split(b"\n")[1:-1]  # the first may be partial, the last is
        sample_lines = [ln for ln in lines if ln.strip(b"\r\t ,")]
        if len(sample_lines) >= TEXT_DETECT_LINES and scan.stop == len(buf):
            probe = TextLayout()
            recent = sample_lines[-TEXT_DETECT_LINES:]
            if all(probe.parse(ln.rstrip(b"\r")) is not None for ln in recent):
                self.mode = "text"
                return None
        if len(buf) > AUTO_BUFFER_LIMIT:
            cut = len(buf) - AUTO_BUFFER_LIMIT
            self.stats.bytes_discarded += cut
            self._buf = buf[cut:]
            self._skip_first_line = True
        return None

    # --- binary -------------------------------------------------------------
    def _feed_binary(self, host: float, res: DecodeResult, scan: Scan | None) -> None:
        if scan is None and self._fast_samples(host, res):
            return
        buf = self._buf
        arr = np.frombuffer(buf, dtype=np.uint8)
        if scan is None:
            scan = scan_frames(arr)
        st = self.stats
        st.crc_errors += scan.crc_errors
        st.bytes_discarded += scan.discarded
        self._buf = buf[scan.stop:]
        self._note_versions(scan)
        starts = scan.starts
        m = int(starts.size)
        if not m:
            return
        st.frames_ok += m
        hdr = windows(arr, HEADER_SIZE)[starts].view(_HEADER_DTYPE)[:, 0]
        types = hdr["type"]
        lengths = scan.lengths
        dev = types < 0x10
        dev_idx = np.cumsum(dev) - 1  # index among device frames, per frame

        is_sample = types == MsgType.SAMPLE
        # n is the byte after the header; L must be exactly 1 + 3n.
        ncups = np.where(lengths >= 4, arr[np.minimum(starts + HEADER_SIZE, arr.size - 1)], 0)
        good_sample = is_sample & (lengths == 1 + 3 * ncups) & (ncups >= 1) & (ncups <= MAX_CUPS)
        bad_sample = is_sample & ~good_sample
        st.unknown_messages += int(bad_sample.sum())

        abs_us = np.zeros(0, dtype=np.int64)
        if dev.any():
            abs_us = self._timeline(hdr["seq"][dev], hdr["time_us"][dev], good_sample[dev],
                                    bad_sample[dev], ncups[dev], host, res, starts[dev], scan)
        for i in np.nonzero(~is_sample)[0].tolist():
            self._message(int(types[i]), int(hdr["seq"][i]), buf, int(starts[i]),
                          int(lengths[i]), abs_us[dev_idx[i]] if dev[i] else 0, host, res)

    def _fast_samples(self, host: float, res: DecodeResult) -> bool:
        """The common case in few numpy calls: the buffer is back-to-back good
        SAMPLE frames of one cup count that simply continue the previous ones
        (next seq, time increasing), then at most the start of the next frame.
        Returns False, having changed nothing, when anything is unusual; the
        general path then gives the same result the slow way.

        Every field is read in place through strided views of the buffer (no
        copy of the frames), each check is one vectorised comparison of all the
        frames (cheapest first) and the CRC is table-driven over 16-bit words of
        all frames at once."""
        buf = self._buf
        cups = self._cups
        if (self._seq is None or self._after_reset or cups is None or len(buf) < 17
                or buf[:4] != _SAMPLE_PREFIX):
            return False
        length = buf[4]
        if length != 1 + 3 * cups or buf[HEADER_SIZE] != cups:
            return False
        size = length + HEADER_SIZE + CRC_SIZE
        k = len(buf) // size
        if not k:
            return False
        tail = buf[k * size:]
        # The tail must be what the scan would keep: nothing, a lone A5, or the
        # start of a frame that is still incomplete.
        if tail and not (tail == b"\xa5" or (tail[:2] == SYNC and (
                len(tail) < 5 or tail[4] + HEADER_SIZE + CRC_SIZE > len(tail)))):
            return False
        # Bytes 0..6 of every frame as one u64 (the byte after them masked off):
        # sync, version, type and length are the first frame's, and subtracting
        # the next seq from the seq field (bits 40..55; the mask makes the
        # subtraction wrap like seq) leaves the frame's index.
        seq0 = (self._seq + 1) % SEQ_WRAP
        heads = _sample_heads(length)
        if k > heads.size:
            return False
        head = np.ndarray((k,), "<u8", buf, 0, (size,)) - np.uint64(seq0 << 40)
        head &= _HEAD_MASK
        if np.count_nonzero(head == heads[:k]) != k or np.count_nonzero(
                np.ndarray((k,), "u1", buf, HEADER_SIZE, (size,)) == cups) != k:
            return False
        # Device clock of every frame relative to the previous frame's, modulo
        # 2**32 (uint32 arithmetic wraps). Each step from the frame before must
        # be 1 .. MAX_FORWARD_US; as the steps are differences of these relative
        # times taken without the modulo, the times cannot wrap within the
        # chunk either (a chunk spanning 4295 s of device time takes the
        # general path), so they are the unwrapped clock.
        raw = np.ndarray((k,), "<u4", buf, 7, (size,))
        step0 = (int(raw[0]) - self._raw) % TIME_WRAP_US
        if not 0 < step0 <= MAX_FORWARD_US or (
                self._sample_abs is not None and self._abs + step0 <= self._sample_abs):
            return False
        abs_us = np.add(raw - np.uint32(self._raw), self._abs, dtype=np.int64)
        step = abs_us[1:] - abs_us[:-1]
        step -= 1
        if np.count_nonzero(step.view(np.uint64) < MAX_FORWARD_US) != k - 1:
            return False
        if np.count_nonzero(crc16_residue_strided(buf, 2, size, k, size - 4)):
            return False
        st = self.stats
        st.frames_ok += k
        st.samples += k
        self._buf = tail
        # What _note_versions does for a chunk of our frames and no foreign one.
        self._foreign_run = 0
        self.version_mismatch = None
        self._seq = (seq0 + k - 1) % SEQ_WRAP
        self._raw = int(raw[-1])
        self._abs = self._sample_abs = int(abs_us[-1])
        self._host = host
        suction = np.ndarray((k, cups), "<u2", buf, HEADER_SIZE + 1, (size, 2))
        status = np.ndarray((k, cups), "u1", buf, HEADER_SIZE + 1 + 2 * cups, (size, 1))
        res.blocks.append(SampleBlock(
            t=abs_us / 1e6, suction=bits_to_kpa(suction), status=status.copy(),
            host_time=host, lost_before=self._pending_lost, gap_before=self._pending_gap))
        self._pending_gap = False
        self._pending_lost = 0
        return True

    def _note_versions(self, scan: Scan) -> None:
        last_good = int(scan.starts[-1]) if scan.starts.size else -1
        after = [v for pos, v in scan.foreign if pos > last_good]
        if scan.starts.size:  # our version is spoken: count foreign frames afresh
            self._foreign_run = 0
            if not after:
                self.version_mismatch = None
        if after:
            self._foreign_run += len(after)
            self._foreign_version = after[-1]
            if self.mode == "auto":
                self.mode = "binary"
        if self._foreign_run >= VERSION_MISMATCH_FRAMES:
            self.version_mismatch = self._foreign_version

    def _message(self, msg_type: int, seq: int, buf: bytes, start: int, length: int,
                 abs_us: int, host: float, res: DecodeResult) -> None:
        payload = buf[start + HEADER_SIZE:start + HEADER_SIZE + length]
        msg: Message | None = None
        if msg_type >= 0x10:
            msg = decode_command(msg_type, seq, payload)
            if msg.error == NackReason.UNKNOWN_COMMAND:
                self.stats.unknown_messages += 1
        elif msg_type == MsgType.INFO:
            msg = decode_info(payload)
        elif msg_type == MsgType.EVENT:
            ev = decode_event(payload)
            if ev is not None:
                msg = DeviceEvent(code=ev[0], cup=ev[1], value=ev[2], t=float(abs_us) / 1e6,
                                  host_time=host)
        elif msg_type == MsgType.ACK:
            msg = decode_ack(payload)
        elif msg_type == MsgType.NACK:
            msg = decode_nack(payload)
        if msg is None:
            if msg_type < 0x10:
                self.stats.unknown_messages += 1  # unknown or malformed: skipped
            return
        res.messages.append(msg)

    def _timeline(self, seq: np.ndarray, raw: np.ndarray, sample: np.ndarray,
                  bad_sample: np.ndarray, ncups: np.ndarray, host: float, res: DecodeResult,
                  starts: np.ndarray, scan: Scan) -> np.ndarray:
        """Unwrap the device clock of the m device frames of this chunk, find gaps
        and emit the sample blocks. Returns (m,) int64 unwrapped µs."""
        seq = seq.astype(np.int64)
        raw = raw.astype(np.int64)
        if self._seq is None:  # the very first device frame: its clock is the origin
            self._seq = int(seq[0] - 1) % SEQ_WRAP
            self._raw = self._abs = int(raw[0])
        h_us = 0 if self._host is None else max(0, round((host - self._host) * 1e6))
        prev_seq = np.concatenate(([self._seq], seq[:-1]))
        prev_raw = np.concatenate(([self._raw], raw[:-1]))
        dq = (seq - prev_seq) % SEQ_WRAP
        step = (raw - prev_raw + _HALF_WRAP) % TIME_WRAP_US - _HALF_WRAP
        regular = (dq == 1) & (step >= -MAX_BACK_US) & (step <= MAX_FORWARD_US)
        if self._after_reset:
            regular[0] = False
        gap = bad_sample.copy()  # a sample we could not read is a hole in the data
        lost = np.zeros(seq.size, dtype=np.int64)
        for i in np.nonzero(~regular)[0].tolist():
            step[i], lost[i], gap[i] = self._irregular(
                int(dq[i]), int(step[i]), h_us if i == 0 else 0, self._after_reset and i == 0)
        self._after_reset = False

        sp = np.nonzero(sample)[0]
        abs_us = self._abs + np.cumsum(step)
        if sp.size:
            # Sample times must increase strictly. Bumping sample j shifts all later
            # frames by the same amount, so each bump depends only on unbumped times.
            x = abs_us[sp]
            first_prev = x[0] - 1 if self._sample_abs is None else self._sample_abs
            prev = np.concatenate(([first_prev], x[:-1]))
            bump = np.maximum(0, prev + 1 - x)
            if bump.any():
                step[sp] += bump
                gap[sp[x < prev]] = True  # equal times: a bump, not a gap
                abs_us = self._abs + np.cumsum(step)
        self.stats.frames_lost += int(lost.sum())
        self._seq = int(seq[-1])
        self._raw = int(raw[-1])
        self._abs = int(abs_us[-1])
        self._host = host

        # Gaps and losses anywhere since the previous sample belong to the next sample.
        cg = np.cumsum(gap)
        cl = np.cumsum(lost)
        if not sp.size:
            self._pending_gap |= bool(cg[-1])
            self._pending_lost += int(cl[-1])
            return abs_us
        g_at = cg[sp]
        gap_s = g_at.copy()
        gap_s[1:] -= g_at[:-1]
        gap_s = gap_s > 0
        l_at = cl[sp]
        lost_s = l_at.copy()
        lost_s[1:] -= l_at[:-1]
        gap_s[0] |= self._pending_gap
        lost_s[0] += self._pending_lost
        self._pending_gap = bool(cg[-1] > g_at[-1])
        self._pending_lost = int(cl[-1] - l_at[-1])
        cups = ncups[sp].astype(np.int64)
        new_block = gap_s | (cups != np.concatenate(([self._cups or 0], cups[:-1])))
        new_block[0] = True
        self._cups = int(cups[-1])
        self._sample_abs = int(abs_us[sp[-1]])
        self._emit_blocks(abs_us[sp], cups, new_block, gap_s, lost_s, starts[sp], scan,
                          host, res)
        return abs_us

    def _irregular(self, dq: int, step: int, h_us: int, after_reset: bool) -> tuple[int, int, bool]:
        """(clock step µs, frames lost, gap) for a frame that is not simply the
        next one: a sequence jump, a clock jump, or the first after reset()."""
        restart = dq >= _HALF_SEQ  # seq went backwards: the device restarted
        lost = dq - 1 if 1 < dq < _HALF_SEQ else 0
        if after_reset and h_us > _HALF_WRAP:
            # Silent long enough for the clock to have wrapped: count the wraps
            # the host clock says passed.
            fwd = step % TIME_WRAP_US
            step = fwd + max(0, round((h_us - fwd) / TIME_WRAP_US)) * TIME_WRAP_US
        clock_ok = -MAX_BACK_US <= step <= MAX_FORWARD_US + h_us and not (restart and step <= 0)
        if not clock_ok:
            # The device clock does not say how long the gap was; the host's does.
            return max(h_us, 1), lost, True
        return step, lost, after_reset or restart or lost > 0

    def _emit_blocks(self, t_us: np.ndarray, cups: np.ndarray, new_block: np.ndarray,
                     gap_s: np.ndarray, lost_s: np.ndarray, starts: np.ndarray, scan: Scan,
                     host: float, res: DecodeResult) -> None:
        # Decode each cup count's frames at once from the rows the scan gathered.
        decoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        rank = np.zeros(cups.size, dtype=np.int64)
        distinct = set(cups.tolist())
        for c in distinct:
            sel = np.nonzero(cups == c)[0] if len(distinct) > 1 else np.arange(cups.size)
            rank[sel] = np.arange(sel.size)
            gstarts, rows = scan.rows[1 + 3 * c]
            if gstarts.size != sel.size:
                rows = rows[np.searchsorted(gstarts, starts[sel])]
            rec = rows.view(sample_dtype(c))[:, 0]
            decoded[c] = (raw_to_kpa(rec["suction"]), rec["status"].copy())
        self.stats.samples += int(cups.size)
        bounds = np.append(np.nonzero(new_block)[0], cups.size).tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            suction, status = decoded[int(cups[a])]
            r = int(rank[a])
            res.blocks.append(SampleBlock(
                t=t_us[a:b] / 1e6, suction=suction[r:r + b - a], status=status[r:r + b - a],
                host_time=host, lost_before=int(lost_s[a]), gap_before=bool(gap_s[a])))

    # --- text ---------------------------------------------------------------
    def _feed_text(self, host: float, res: DecodeResult) -> None:
        st = self.stats
        buf = self._buf
        end = buf.rfind(b"\n") + 1   # buf[:end] holds the whole lines
        pos = 0
        if self._skip_first_line and end:
            pos = buf.find(b"\n") + 1
            st.bytes_discarded += pos
            self._skip_first_line = False
        tail = buf[end:]
        if len(tail) > TEXT_LINE_LIMIT:  # no line end in sight: not a sample line
            st.bytes_discarded += len(tail)
            if not self._skip_first_line:
                st.text_errors += 1
                self._pending_gap |= self._text_t is not None
            tail = b""
        self._buf = tail
        # Runs of lines shaped like the latest accepted one are parsed in one go
        # (TextLayout.parse_run); any other line alone, by TextLayout.parse.
        # Pieces: (device times, NaN where host-timed; rows; gap before each row).
        pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        times: list[float] = []
        rows: list[np.ndarray] = []
        gaps: list[bool] = []
        gap = self._pending_gap
        layout = self._layout
        fast = self._text_fast
        slow_until = 0  # lines before this are parsed one by one
        while pos < end:
            run = layout.parse_run(buf, pos, end) if fast and pos >= slow_until else None
            if run is not None:
                stop, t_run, rows_run = run
                if rows_run is None:  # a number that is none: these lines one by one
                    slow_until = stop
                else:
                    if rows:
                        pieces.append((np.array(times), np.array(rows), np.array(gaps)))
                        times, rows, gaps = [], [], []
                    n = rows_run.shape[0]
                    st.text_lines += n
                    gap_run = np.zeros(n, dtype=bool)
                    gap_run[0] = gap
                    gap = False
                    pieces.append((np.full(n, np.nan) if t_run is None else t_run, rows_run,
                                   gap_run))
                    pos = stop
                    continue
            nl = buf.index(b"\n", pos)
            line = buf[pos:nl].rstrip(b"\r")
            pos = nl + 1
            if not line.strip(b"\t ,"):
                continue
            st.text_lines += 1
            parsed = layout.parse(line)
            if parsed is None:
                st.text_errors += 1
                gap |= self._text_t is not None or bool(rows) or bool(pieces)
                continue
            times.append(math.nan if parsed[0] is None else parsed[0])
            rows.append(parsed[1])
            gaps.append(gap)
            gap = False
        self._pending_gap = gap
        if rows:
            pieces.append((np.array(times), np.array(rows), np.array(gaps)))
        if pieces:
            if len(pieces) == 1:
                t, suction, gap_arr = pieces[0]
            else:
                t = np.concatenate([p[0] for p in pieces])
                suction = np.concatenate([p[1] for p in pieces])
                gap_arr = np.concatenate([p[2] for p in pieces])
            self._text_blocks(t, suction, gap_arr, host, res)

    def _text_blocks(self, times: np.ndarray, rows: np.ndarray, gaps: np.ndarray,
                     host: float, res: DecodeResult) -> None:
        """times: (n,) device s, NaN where host-timed; rows: (n, cups) kPa;
        gaps: (n,) bool, gap before the row (updated here)."""
        n = times.shape[0]
        host_timed = np.isnan(times)
        k = int(np.count_nonzero(host_timed))
        self.text_host_timed = bool(k)
        if k:
            # Lines arrive in bunches (USB latency): spread them evenly over the
            # time since the previous chunk rather than stamping them all alike.
            prev = self._text_host
            if prev is None or host <= prev:
                times[host_timed] = host
            else:
                times[host_timed] = prev + (host - prev) * np.arange(1, k + 1) / k
        last = self._text_t
        values = times + np.where(host_timed, 0.0, self._text_offset)
        if (self._text_fast and (last is None or values[0] > last)
                and bool((values[1:] > values[:-1]).all())):
            t = values  # increasing: nothing to fix
            last = float(values[-1])
        else:
            t = np.empty(n)
            jump = 1e-6 if self._text_host is None else max(host - self._text_host, 1e-6)
            for i, (ti, ht) in enumerate(zip(times.tolist(), host_timed.tolist(), strict=True)):
                value = ti + (self._text_offset if not ht else 0.0)
                if last is not None and value <= last:
                    # Clock went back (device reset) or stood still: keep t increasing.
                    bump = jump if value < last else 1e-6
                    if not ht:
                        self._text_offset += last + bump - value
                    gaps[i] |= value < last
                    value = last + bump
                t[i] = last = value
                jump = 1e-6
        self._text_t = last
        self._text_host = host
        self.stats.samples += n
        suction = rows.astype(np.float32)
        bounds = [0, *(np.flatnonzero(gaps[1:]) + 1).tolist(), n]
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            res.blocks.append(SampleBlock(
                t=t[a:b].copy(), suction=suction[a:b], status=np.zeros((b - a, suction.shape[1]),
                                                                       dtype=np.uint8),
                host_time=host, gap_before=bool(gaps[a])))
