"""The reference firmware's C core, compiled for the host and driven with ctypes.

The core (``firmware_bridge/firmware/cupmon/cm_core.c``) is the code that runs
on the ATmega328P. Here it is built together with a host "board"
(``firmware/host/cm_host.c``: clock, ADC inputs, pump/valve outputs, UART and
EEPROM in memory) into a shared library with the system C compiler, on
demand, into a cache directory keyed by a hash of the sources and flags.

* :func:`build_library` / :func:`load_library`: compile (``-std=c99 -Wall
  -Wextra -Werror``) and load; :class:`FirmwareBuildError` carries the
  compiler's output.
* :class:`CoreDevice`: one firmware instance. Feed it host bytes, set its
  clock and ADC counts, poll it, read the bytes it sent and its outputs.
* Pure helpers that call the C functions: :func:`crc16`,
  :func:`counts_to_centi`, :func:`regulate`, :func:`encode_frame`; and
  :func:`mpxv6115v_counts`, the sensor model in the other direction.

Imports only the standard library and numpy.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
SOURCES = ("cupmon/cm_core.c", "host/cm_host.c")
HEADERS = ("cupmon/cm_core.h", "cupmon/cm_proto.h")
#: The host build runs the same code as the device with room for 16 cups.
HOST_MAX_CUPS = 16
#: Warnings are errors; undefined behaviour (overflow, bad shifts, out-of-bounds
#: indexing) traps and a smashed stack aborts, so a test run cannot pass over them.
CFLAGS = (
    "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow",
    "-O2", "-fPIC", "-shared", "-fstack-protector-all",
    "-fsanitize=undefined", "-fsanitize-undefined-trap-on-error",
)
LIB_STEM = "libcupmon_core"

#: MPXV6115V transfer function (datasheet): Vout = Vs * (0.007652 * P + 0.92),
#: P in kPa gauge (negative = vacuum), so suction = -P.
MPXV_SLOPE = 0.007652
MPXV_OFFSET = 0.92


class FirmwareBuildError(RuntimeError):
    """The C core could not be compiled or loaded; the message has the compiler output."""


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc")


def build_dir() -> Path:
    """Where built libraries are cached.

    ``$CUPMON_BUILD_DIR/cfirmware`` if set; else ``build/cfirmware`` in the
    source checkout (gitignored) when it is writable; else a per-user
    directory under the system temp dir.
    """
    env = os.environ.get("CUPMON_BUILD_DIR")
    if env:
        return Path(env) / "cfirmware"
    root = FIRMWARE_DIR.parent.parent
    if (root / "pyproject.toml").is_file() and os.access(root, os.W_OK):
        return root / "build" / "cfirmware"
    return Path(tempfile.gettempdir()) / f"cupmon-build-{os.getuid()}" / "cfirmware"


def _flags(max_cups: int) -> tuple[str, ...]:
    if not 1 <= max_cups <= 16:
        raise ValueError("max_cups must be 1..16")
    return (*CFLAGS, f"-DCM_MAX_CUPS={max_cups}")


def _build_key(cc: str, flags: tuple[str, ...], firmware_dir: Path = FIRMWARE_DIR) -> str:
    h = hashlib.sha256()
    h.update(cc.encode())
    h.update("\0".join(flags).encode())
    for rel in SOURCES + HEADERS:
        h.update(rel.encode())
        try:
            h.update((firmware_dir / rel).read_bytes())
        except OSError as e:
            raise FirmwareBuildError(f"{firmware_dir} is not a firmware source tree: "
                                     f"{rel}: {e.strerror or e}") from None
    return h.hexdigest()[:16]


def build_library(force: bool = False, out_dir: Path | None = None,
                  max_cups: int = HOST_MAX_CUPS, firmware_dir: Path | None = None) -> Path:
    """Compile the core and the host board into a shared library; return its path.

    ``max_cups`` is the core's CM_MAX_CUPS (16 on the host; 4 reproduces the
    Uno's buffer sizes). Rebuilds only when the sources, the flags or the
    compiler changed. Safe to call from several processes at once (each
    compiles to its own temporary name and renames atomically).
    ``firmware_dir``: another firmware source tree with the same layout
    (``cupmon/cm_core.c``, ``host/cm_host.c``); default: this package's.
    """
    firmware_dir = Path(firmware_dir) if firmware_dir is not None else FIRMWARE_DIR
    cc = compiler()
    if not cc:
        raise FirmwareBuildError("no C compiler found (set CC or install gcc)")
    out_dir = Path(out_dir) if out_dir is not None else build_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = _flags(max_cups)
    lib = out_dir / f"{LIB_STEM}{max_cups}-{_build_key(cc, flags, firmware_dir)}.so"
    if lib.exists() and not force:
        return lib
    tmp = out_dir / f".{lib.name}.{os.getpid()}.tmp"
    cmd = [cc, *flags, "-o", str(tmp), *(str(firmware_dir / s) for s in SOURCES)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FirmwareBuildError(f"{' '.join(cmd)}: {e}") from e
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FirmwareBuildError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, lib)
    return lib


REPLAY_SOURCES = ("cupmon/cm_core.c", "host/cm_host.c", "host/cm_replay.c")
#: The replay driver is a separate executable, so it can run under AddressSanitizer.
SANITIZE_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer")


def build_replay(max_cups: int = HOST_MAX_CUPS, out_dir: Path | None = None) -> Path:
    """Build the sanitized replay driver (``firmware/host/cm_replay.c``) for ``max_cups``."""
    cc = compiler()
    if not cc:
        raise FirmwareBuildError("no C compiler found (set CC or install gcc)")
    out_dir = Path(out_dir) if out_dir is not None else build_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = (*SANITIZE_FLAGS, f"-DCM_MAX_CUPS={max_cups}")
    h = hashlib.sha256(_build_key(cc, flags).encode())
    h.update((FIRMWARE_DIR / "host/cm_replay.c").read_bytes())
    exe = out_dir / f"cm_replay{max_cups}-{h.hexdigest()[:16]}"
    if exe.exists():
        return exe
    tmp = out_dir / f".{exe.name}.{os.getpid()}.tmp"
    cmd = [cc, *flags, "-o", str(tmp), *(str(FIRMWARE_DIR / s) for s in REPLAY_SOURCES)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise FirmwareBuildError(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, exe)
    return exe


def replay(script: bytes, max_cups: int = HOST_MAX_CUPS) -> bytes:
    """Run a session recorded by ``CoreDevice(record=True)`` through the sanitized
    replay driver; return every byte the core sent. Raises
    :class:`FirmwareBuildError` with the sanitizer's report if it finds a fault."""
    exe = build_replay(max_cups)
    r = subprocess.run([str(exe)], input=bytes(script), capture_output=True, timeout=300,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"})
    if r.returncode != 0:
        raise FirmwareBuildError(f"replay failed ({r.returncode}):\n"
                                 f"{r.stderr.decode(errors='replace')}")
    return r.stdout


_u8p = ctypes.POINTER(ctypes.c_uint8)
_u16p = ctypes.POINTER(ctypes.c_uint16)
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "cm_crc16": (ctypes.c_uint16, [ctypes.c_char_p, ctypes.c_uint16, ctypes.c_uint16]),
    "cm_counts_to_centi": (ctypes.c_int16, [ctypes.c_uint16, ctypes.c_uint8]),
    "cm_regulate": (ctypes.c_uint8, [ctypes.c_uint8, ctypes.c_int16, ctypes.c_int16,
                                     ctypes.c_int16]),
    "cm_encode_frame": (ctypes.c_uint16, [_u8p, ctypes.c_uint8, ctypes.c_uint16,
                                          ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint8]),
    "cm_host_size": (ctypes.c_uint32, []),
    "cm_host_max_cups": (ctypes.c_uint32, []),
    "cm_host_eeprom_size": (ctypes.c_uint32, []),
    "cm_host_reset": (None, [ctypes.c_void_p]),
    "cm_host_eeprom": (_u8p, [ctypes.c_void_p]),
    "cm_host_boot": (None, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint8,
                            ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint8,
                            ctypes.c_uint16, ctypes.c_int16, ctypes.c_int16, ctypes.c_int16]),
    "cm_host_set_time": (None, [ctypes.c_void_p, ctypes.c_uint32]),
    "cm_host_set_adc": (None, [ctypes.c_void_p, _u16p, ctypes.c_uint32]),
    "cm_host_poll": (None, [ctypes.c_void_p]),
    "cm_host_step": (None, [ctypes.c_void_p, ctypes.c_uint32, _u16p, ctypes.c_uint32,
                            _u8p, _u8p]),
    "cm_host_rx": (None, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]),
    "cm_host_take": (ctypes.c_uint32, [ctypes.c_void_p, _u8p, ctypes.c_uint32]),
    "cm_host_outputs": (None, [ctypes.c_void_p, _u8p, _u8p, ctypes.c_uint32]),
    "cm_host_next_sample_us": (ctypes.c_uint32, [ctypes.c_void_p]),
    "cm_host_set_tx_room": (None, [ctypes.c_void_p, ctypes.c_uint32]),
    "cm_host_local": (ctypes.c_uint8, [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_char_p,
                                       ctypes.c_uint8]),
    "cm_host_rate_hz": (ctypes.c_uint32, [ctypes.c_void_p]),
    "cm_host_set_eeprom_fail": (None, [ctypes.c_void_p, ctypes.c_uint8]),
    "cm_host_out_dropped": (ctypes.c_uint32, [ctypes.c_void_p]),
    "cm_host_eeprom_writes": (ctypes.c_uint32, [ctypes.c_void_p]),
}


def load_library(max_cups: int = HOST_MAX_CUPS,
                 firmware: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Build (if needed) and load a core; one handle per build per process.

    ``firmware``: None for this package's sources; a directory: a firmware
    source tree to build (same layout); a file: a shared library already
    built (by :func:`build_library`, or anything exporting the ``cm_host_*``
    API), used as it is, whatever its ``max_cups``.
    """
    if firmware is None:
        return _load(_built(max_cups, None), max_cups)
    path = Path(firmware).expanduser().resolve()
    if path.is_dir():
        return _load(_built(max_cups, str(path)), max_cups)
    if path.is_file():
        return _load(str(path), None)
    raise FirmwareBuildError(f"{firmware}: no such firmware directory or library")


@functools.cache
def _built(max_cups: int, firmware_dir: str | None) -> str:
    """Build once per process (sources are hashed on the first call only)."""
    d = Path(firmware_dir) if firmware_dir is not None else None
    return str(build_library(max_cups=max_cups, firmware_dir=d))


@functools.cache
def _load(path: str, max_cups: int | None) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise FirmwareBuildError(f"cannot load {path}: {e}") from e
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise FirmwareBuildError(f"{path} is not a cupmon host firmware library "
                                     f"(no {name})") from None
        fn.restype = restype
        fn.argtypes = argtypes
    if max_cups is not None and lib.cm_host_max_cups() != max_cups:
        raise FirmwareBuildError(f"{path} was built for {lib.cm_host_max_cups()} cups")
    return lib


# --- pure helpers -------------------------------------------------------------


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE computed by the C core."""
    data = bytes(data)
    out = crc
    for i in range(0, len(data), 0xFFFF):  # len is u16 in C
        chunk = data[i:i + 0xFFFF]
        out = load_library().cm_crc16(chunk, len(chunk), out)
    return int(out)


def counts_to_centi(counts: int, bits: int) -> int:
    """The C conversion: MPXV6115V ADC counts to suction in units of 0.01 kPa."""
    return int(load_library().cm_counts_to_centi(counts, bits))


def regulate(pump_on: bool, suction_centi: int, low_centi: int, high_centi: int) -> bool:
    """The C regulator rule on suction in units of 0.01 kPa."""
    return bool(load_library().cm_regulate(int(pump_on), suction_centi, low_centi, high_centi))


def encode_frame(msg_type: int, seq: int, time_us: int, payload: bytes = b"") -> bytes:
    """A frame built by the C encoder."""
    payload = bytes(payload)
    if len(payload) > 255:
        raise ValueError("payload longer than 255 bytes")
    out = (ctypes.c_uint8 * (13 + len(payload)))()
    n = load_library().cm_encode_frame(out, msg_type, seq & 0xFFFF, time_us & 0xFFFFFFFF,
                                       payload, len(payload))
    return ctypes.string_at(out, n)


def mpxv6115v_counts(suction_kpa: float | np.ndarray, bits: int = 10) -> np.ndarray:
    """Ideal MPXV6115V + ratiometric ADC: counts for a suction (kPa), clipped to the ADC.

    counts / 2**bits = Vout / Vs = 0.92 - 0.007652 * suction.
    """
    full = 1 << bits
    ratio = MPXV_OFFSET - MPXV_SLOPE * np.asarray(suction_kpa, dtype=np.float64)
    return np.clip(np.rint(ratio * full), 0, full - 1).astype(np.uint16)


def _centi(kpa: float) -> int:
    """kPa -> int16 units of 0.01 kPa (the wire's suction unit)."""
    return int(round(float(kpa) * 100))


# --- a firmware instance ---------------------------------------------------------


class CoreDevice:
    """One instance of the C core on the in-memory host board.

    ``max_cups`` picks the build (CM_MAX_CUPS): 16 by default, 4 for the
    buffer sizes of the Uno image; ``firmware`` another source tree or
    library (see :func:`load_library`).

    Time is the device clock in microseconds (u32, wraps). Nothing runs by
    itself: call :meth:`step` (or :meth:`set_time`/:meth:`set_adc`/:meth:`poll`)
    and :meth:`feed`, then :meth:`read` the bytes the firmware sent.
    """

    def __init__(self, cups: int = 4, *, serial: str = "CUPMON-C", adc_bits: int = 10,
                 sensor_model: int = 1, info_flags: int = 0, reset_cause: int = 0,
                 eeprom: bytes | None = None, t_us: int = 0,
                 max_cups: int = HOST_MAX_CUPS, record: bool = False,
                 firmware: str | os.PathLike | None = None, rate_hz: int = 0,
                 band_kpa: tuple[float, float] | None = None,
                 limit_kpa: float | None = None) -> None:
        if not 8 <= adc_bits <= 16:
            raise ValueError("adc_bits must be 8..16")
        self._lib = load_library(max_cups, firmware)
        built_for = int(self._lib.cm_host_max_cups())
        if not 1 <= cups <= built_for:
            raise ValueError(f"cups must be 1..{built_for} for this firmware build")
        self.cups = cups
        self.adc_bits = adc_bits
        low, high = (0.0, 0.0) if band_kpa is None else band_kpa
        settings = (int(rate_hz), _centi(low), _centi(high),
                    0 if limit_kpa is None else _centi(limit_kpa))
        if rate_hz and not 10 <= rate_hz <= 2000:
            raise ValueError(f"rate {rate_hz} Hz is outside 10..2000")
        if limit_kpa is not None and not 100 <= settings[3] <= 10000:
            raise ValueError(f"limit {limit_kpa:g} kPa is outside 1..100")
        if band_kpa is not None and not 0 <= settings[1] < settings[2] <= (settings[3] or 3000):
            raise ValueError(f"band {low:g}..{high:g} kPa does not fit under the limit")
        self._cfg = (serial.encode("ascii")[:16], cups, adc_bits, sensor_model, info_flags,
                     settings)
        self._mem = ctypes.create_string_buffer(int(self._lib.cm_host_size()))
        self._h = ctypes.cast(self._mem, ctypes.c_void_p)
        self._counts = (ctypes.c_uint16 * cups)()
        self._pump = (ctypes.c_uint8 * cups)()
        self._valve = (ctypes.c_uint8 * cups)()
        self._take = (ctypes.c_uint8 * 65536)()
        self._out = bytearray()
        #: with record=True: the session as a script for :func:`replay`, and
        #: every byte the core sent
        self.script: bytearray | None = bytearray() if record else None
        self.sent = bytearray()
        self._rec(b"C", struct.pack("<BBBB16sHhhh", cups, adc_bits, sensor_model, info_flags,
                                    self._cfg[0], *settings))
        self._lib.cm_host_reset(self._h)
        if eeprom is not None:
            self.eeprom = eeprom
        self.boot(t_us, reset_cause)

    # -- power ------------------------------------------------------------------

    def boot(self, t_us: int = 0, reset_cause: int = 0) -> None:
        """Power-on (or reset): the core restarts; EEPROM contents survive."""
        serial, cups, bits, model, flags, settings = self._cfg
        self._rec(b"B", struct.pack("<IB", t_us & 0xFFFFFFFF, reset_cause))
        self._lib.cm_host_boot(self._h, t_us & 0xFFFFFFFF, serial, cups, bits, model, flags,
                               reset_cause, *settings)
        self._drain()

    # -- inputs -----------------------------------------------------------------

    def set_time(self, t_us: int) -> None:
        self._rec(b"S", struct.pack("<I", t_us & 0xFFFFFFFF))
        self._lib.cm_host_set_time(self._h, t_us & 0xFFFFFFFF)

    def set_adc(self, counts) -> None:
        self._load_counts(counts)
        self._lib.cm_host_set_adc(self._h, self._counts, self.cups)

    def poll(self) -> None:
        self._rec(b"P", b"")
        self._lib.cm_host_poll(self._h)
        self._drain()

    def step(self, t_us: int, counts) -> tuple[np.ndarray, np.ndarray]:
        """Set the clock and ADC inputs, poll once; return (pump, valve) as bool arrays."""
        self._load_counts(counts)
        self._rec(b"S", struct.pack("<I", t_us & 0xFFFFFFFF))
        self._rec(b"P", b"")
        self._lib.cm_host_step(self._h, t_us & 0xFFFFFFFF, self._counts, self.cups,
                               self._pump, self._valve)
        self._drain()
        return (np.frombuffer(self._pump, dtype=np.uint8).astype(bool),
                np.frombuffer(self._valve, dtype=np.uint8).astype(bool))

    def feed(self, data: bytes) -> None:
        """Bytes from the host, as the UART receives them."""
        data = bytes(data)
        if data:
            for i in range(0, len(data), 0xFFFF):
                self._rec(b"R", struct.pack("<H", len(data[i:i + 0xFFFF])) + data[i:i + 0xFFFF])
            self._lib.cm_host_rx(self._h, data, len(data))
            self._drain()

    def local(self, msg_type: int, payload: bytes = b"") -> int | None:
        """A command from a local control (no reply on the wire): None if it was
        executed, else the NACK reason."""
        payload = bytes(payload)
        self._rec(b"L", bytes([msg_type, len(payload)]) + payload)
        reason = int(self._lib.cm_host_local(self._h, msg_type, payload, len(payload)))
        self._drain()
        return reason or None

    # -- outputs ----------------------------------------------------------------

    def read(self) -> bytes:
        """Everything the firmware sent since the last read."""
        self._drain()
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(pump, valve_open) drive levels per cup, as bool arrays."""
        self._lib.cm_host_outputs(self._h, self._pump, self._valve, self.cups)
        return (np.frombuffer(self._pump, dtype=np.uint8).astype(bool),
                np.frombuffer(self._valve, dtype=np.uint8).astype(bool))

    @property
    def rate_hz(self) -> int:
        """The firmware's present sample rate, Hz."""
        return int(self._lib.cm_host_rate_hz(self._h))

    @property
    def next_sample_us(self) -> int:
        return int(self._lib.cm_host_next_sample_us(self._h))

    @property
    def eeprom(self) -> bytes:
        n = int(self._lib.cm_host_eeprom_size())
        return ctypes.string_at(self._lib.cm_host_eeprom(self._h), n)

    @eeprom.setter
    def eeprom(self, data: bytes) -> None:
        n = int(self._lib.cm_host_eeprom_size())
        data = bytes(data)[:n]
        self._rec(b"W", struct.pack("<H", len(data)) + data)
        ctypes.memmove(self._lib.cm_host_eeprom(self._h), data, len(data))

    @property
    def eeprom_writes(self) -> int:
        return int(self._lib.cm_host_eeprom_writes(self._h))

    def set_tx_room(self, room: int) -> None:
        """Bytes the simulated UART can take (SAMPLE frames that do not fit are dropped)."""
        self._rec(b"X", struct.pack("<I", room))
        self._lib.cm_host_set_tx_room(self._h, room)

    def set_eeprom_fail(self, fail: bool) -> None:
        """Make every EEPROM write fail (to test NACK STORAGE)."""
        self._rec(b"F", bytes([int(bool(fail))]))
        self._lib.cm_host_set_eeprom_fail(self._h, int(fail))

    # -- internals --------------------------------------------------------------

    def _load_counts(self, counts) -> None:
        a = np.asarray(counts, dtype=np.int64).reshape(-1)
        if a.shape[0] != self.cups:
            raise ValueError(f"expected {self.cups} ADC values, got {a.shape[0]}")
        if a.min() < 0 or a.max() > 0xFFFF:
            raise ValueError("ADC counts must be 0..65535")
        self._counts[:] = a.tolist()
        self._rec(b"A", struct.pack(f"<B{self.cups}H", self.cups, *a.tolist()))

    def _rec(self, kind: bytes, data: bytes) -> None:
        if self.script is not None:
            self.script += kind + data

    def _drain(self) -> None:
        while True:
            n = self._lib.cm_host_take(self._h, self._take, len(self._take))
            if not n:
                break
            chunk = ctypes.string_at(self._take, n)
            self._out += chunk
            if self.script is not None:
                self.sent += chunk
        if self._lib.cm_host_out_dropped(self._h):
            raise RuntimeError("host board output buffer overflowed")
