"""The session store: one SQLite file with sessions, sample blocks, alarm events,
per-cup summaries and calibration records (docs/sessions.md).

Standard library ``sqlite3`` only, WAL journal. A :class:`Store` object wraps
one connection and is used by one thread (the recorder's writer thread owns its
own). Opening never modifies a file that is not a cupmon database: the SQLite
header and the application id are checked from the raw bytes first, and a
corrupt or foreign file raises :class:`StoreError` with one line.

Samples are kept at full resolution in compact blocks, not one row per sample
(see :func:`encode_block`): device time as integer microseconds delta-coded,
suction as int16 in 0.01 kPa (the wire resolution) delta + zigzag + byte
shuffled, status per cup, each zlib-compressed. Every encoding is verified by
decoding it before it is used; data that does not round-trip bit-exactly is
stored as raw float64/float32 instead, so what comes out is always what went in.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.messages import DeviceInfo, SampleBlock
from firmware_bridge.protocol import NO_READING

#: PRAGMA application_id of a cupmon database ("CUPM").
APPLICATION_ID = 0x4355504D
#: PRAGMA user_version written by this code; older files are migrated on open.
#: 1: the first schema; 2: ``band_changes`` (bands set during a recording).
SCHEMA_VERSION = 2
#: A 'running' session whose heartbeat is older than this (s) is interrupted.
STALE_HEARTBEAT_S = 5.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED = "running", "completed", "interrupted"
SESSION_STATUSES = (STATUS_RUNNING, STATUS_COMPLETED, STATUS_INTERRUPTED)


class StoreError(Exception):
    """The database cannot be used; ``str()`` is one line a user can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class NoSuchSession(StoreError):
    """The database has no session with that id."""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/cupmon/cupmon.db`` (default ``~/.local/share/cupmon/cupmon.db``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "cupmon" / "cupmon.db"


# --------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE sessions (
    id             INTEGER PRIMARY KEY,
    started_wall   REAL NOT NULL,            -- Unix time, s
    ended_wall     REAL,
    device_serial  TEXT NOT NULL DEFAULT '',
    firmware       TEXT NOT NULL DEFAULT '',
    cups           INTEGER,
    rate_hz        REAL,
    targets        TEXT,                     -- JSON, per-cup band as given
    therapist      TEXT NOT NULL DEFAULT '',
    patient        TEXT NOT NULL DEFAULT '', -- pseudonymous free text
    notes          TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'completed', 'interrupted')),
    source         TEXT NOT NULL DEFAULT '', -- port URL, scenario or replay spec
    heartbeat_wall REAL,                     -- last commit of the writer, Unix s
    writer_pid     INTEGER,
    device_info    TEXT,                     -- JSON of the full DeviceInfo
    recorder       TEXT                      -- JSON: writer counters (drops, errors)
);
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    t           REAL,                        -- device time, s
    wall,                                    -- as given (AlarmEvent: ISO 8601 text)
    cup         INTEGER,                     -- 1-based, NULL = whole device
    event       TEXT,
    condition   TEXT,
    priority    TEXT,
    suction_kpa REAL,
    message     TEXT,
    data        TEXT                         -- JSON of the event exactly as given
);
CREATE INDEX events_session ON events(session_id, id);
CREATE TABLE sample_blocks (
    session_id    INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,          -- 0, 1, 2 ... within the session
    t0            REAL NOT NULL,             -- device time of first/last sample, s
    t1            REAL NOT NULL,
    n             INTEGER NOT NULL,
    cups          INTEGER NOT NULL,
    gap_before    INTEGER NOT NULL,
    lost_before   INTEGER NOT NULL DEFAULT 0,
    t_codec       INTEGER NOT NULL,
    suction_codec INTEGER NOT NULL,
    status_codec  INTEGER NOT NULL,
    t             BLOB NOT NULL,
    suction       BLOB NOT NULL,
    status        BLOB NOT NULL,
    parts         BLOB,                      -- zlib int32 sizes of the original blocks
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE cup_summaries (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    cup        INTEGER NOT NULL,             -- 1-based, 0 = whole session
    summary    TEXT NOT NULL,                -- JSON as given by monitor.stats
    PRIMARY KEY (session_id, cup)
);
CREATE TABLE calibrations (
    id             INTEGER PRIMARY KEY,
    device_serial  TEXT NOT NULL,
    cup            INTEGER NOT NULL,
    created_wall   REAL NOT NULL,
    technician     TEXT NOT NULL DEFAULT '',
    reference_id   TEXT NOT NULL DEFAULT '',
    reference_cert TEXT NOT NULL DEFAULT '',
    ambient        TEXT,                     -- JSON: temperature, humidity, pressure
    c0             REAL NOT NULL,            -- kPa
    c1             REAL NOT NULL,
    c2             REAL NOT NULL,            -- 1/kPa
    as_found       TEXT,                     -- JSON
    as_left        TEXT,                     -- JSON
    result         TEXT NOT NULL DEFAULT '', -- pass / fail / adjusted ...
    due_wall       REAL,                     -- next calibration due, Unix s
    certificate_id TEXT,
    valid          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX calibrations_device ON calibrations(device_serial, cup, created_wall);
"""

_BAND_CHANGES_V2 = """
CREATE TABLE band_changes (
    id          INTEGER PRIMARY KEY,         -- order of the changes
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    t           REAL,                        -- device s: the band applies to samples after t
                                             -- (NULL: before any sample was checked)
    cup         INTEGER NOT NULL,            -- 1-based
    low_kpa     REAL NOT NULL,
    high_kpa    REAL NOT NULL,
    wall        REAL                         -- Unix s when it was set
);
CREATE INDEX band_changes_session ON band_changes(session_id, id);
"""


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Schema 2: the bands set while recording (a band changed mid-session)."""
    for stmt in _BAND_CHANGES_V2.split(";"):
        if stmt.strip():
            conn.execute(stmt)


#: MIGRATIONS[v] upgrades a database from user_version v to v + 1 (inside one
#: transaction). Add an entry here, bump SCHEMA_VERSION, never edit old ones.
#: A new file is created with schema 1 and migrated like any old file.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}


# --------------------------------------------------------------------------
# Block encoding
# --------------------------------------------------------------------------

T_FLOAT64, T_US_DIV, T_US_MUL = 0, 1, 2
S_FLOAT32 = 0
#: int16 counts of 0.01 kPa -> float32, in the ways a decoder may compute it.
#: Tried in this order; the first is what firmware_bridge.frames does.
_S_FROM_COUNTS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    4: lambda q: q.astype(np.float32) / np.float32(100.0),
    1: lambda q: (q.astype(np.float64) * 0.01).astype(np.float32),
    2: lambda q: (q.astype(np.float64) / 100.0).astype(np.float32),
    3: lambda q: q.astype(np.float32) * np.float32(0.01),
}
ST_UINT8, ST_UINT16 = 0, 1
_ZLEVEL = 6  # 6 vs 1: same speed here after the shuffle, a little smaller


@dataclass(frozen=True, slots=True)
class EncodedBlock:
    """One sample_blocks row's payload (see :func:`encode_block`)."""

    t_codec: int
    suction_codec: int
    status_codec: int
    t: bytes
    suction: bytes
    status: bytes

    @property
    def nbytes(self) -> int:
        return len(self.t) + len(self.suction) + len(self.status)


def _shuffle(a: np.ndarray) -> bytes:
    # Byte planes (all low bytes, then all high bytes): the high bytes of small
    # deltas are nearly constant, which zlib then squeezes to almost nothing.
    a = np.ascontiguousarray(a)
    return np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.itemsize).T).tobytes()


def _unshuffle(data: bytes, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    planes = np.frombuffer(data, np.uint8).reshape(dtype.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(-1)


def _exact_f32(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-equal float32 arrays, NaN at the same places (payloads ignored)."""
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        return False
    return np.array_equal(a.view(np.uint32)[~na], b.view(np.uint32)[~nb])


def _encode_t(t: np.ndarray) -> tuple[int, bytes]:
    t = np.asarray(t, np.float64)
    if t.size and np.all(np.isfinite(t)) and abs(t).max() < 9e12:
        us = np.round(t * 1e6).astype(np.int64)
        d = np.diff(us)
        if d.size == 0 or (d.min() >= -(2**31) and d.max() < 2**31):
            for codec, recon in ((T_US_DIV, us / 1e6), (T_US_MUL, us * 1e-6)):
                if np.array_equal(recon.view(np.uint64), t.view(np.uint64)):
                    raw = us[:1].tobytes() + d.astype(np.int32).tobytes()
                    return codec, zlib.compress(raw, _ZLEVEL)
    return T_FLOAT64, zlib.compress(_shuffle(t), _ZLEVEL)


def _decode_t(codec: int, data: bytes, n: int) -> np.ndarray:
    raw = zlib.decompress(data)
    if codec == T_FLOAT64:
        return _unshuffle(raw, np.float64)
    us0 = np.frombuffer(raw[:8], np.int64)
    us = np.empty(n, np.int64)
    us[0] = us0[0]
    if n > 1:
        np.cumsum(np.frombuffer(raw[8:], np.int32), out=us[1:])
        us[1:] += us0[0]
    if codec == T_US_DIV:
        return us / 1e6
    if codec == T_US_MUL:
        return us * 1e-6
    raise StoreError(f"unknown time encoding {codec} in the database (written by a newer cupmon?)")


def _encode_suction(s: np.ndarray) -> tuple[int, bytes]:
    s = np.asarray(s, np.float32)
    nan = np.isnan(s)
    finite = s[~nan]
    if not finite.size or (np.all(np.isfinite(finite)) and abs(finite).max() <= 327.67):
        q = np.where(nan, NO_READING, np.round(np.where(nan, 0, s) * 100.0)).astype(np.int16)
        for codec, recon in _S_FROM_COUNTS.items():
            r = recon(q)
            r[q == NO_READING] = np.nan
            if _exact_f32(r, s):
                # Per cup along time: delta, zigzag (small magnitudes of either
                # sign -> small unsigned), byte planes, zlib.
                d = np.diff(q.T.astype(np.int32), axis=1, prepend=0)
                zz = ((d << 1) ^ (d >> 31)).astype(np.uint32)
                # Deltas of int16 fit 17 bits; keep uint16 when they fit (nearly always).
                if zz.size == 0 or zz.max() < 65536:
                    return codec, zlib.compress(b"\x02" + _shuffle(zz.astype(np.uint16)), _ZLEVEL)
                return codec, zlib.compress(b"\x04" + _shuffle(zz), _ZLEVEL)
    return S_FLOAT32, zlib.compress(_shuffle(np.ascontiguousarray(s.T)), _ZLEVEL)


def _decode_suction(codec: int, data: bytes, n: int, cups: int) -> np.ndarray:
    raw = zlib.decompress(data)
    if codec == S_FLOAT32:
        return np.ascontiguousarray(_unshuffle(raw, np.float32).reshape(cups, n).T)
    recon = _S_FROM_COUNTS.get(codec)
    if recon is None:
        raise StoreError(f"unknown suction encoding {codec} in the database "
                         "(written by a newer cupmon?)")
    width = raw[0]
    zz = _unshuffle(raw[1:], np.uint16 if width == 2 else np.uint32).astype(np.int64)
    d = (zz >> 1) ^ -(zz & 1)
    q = np.cumsum(d.reshape(cups, n), axis=1).T.astype(np.int16)
    s = recon(q)
    s[q == NO_READING] = np.nan
    return np.ascontiguousarray(s)


def encode_block(t: np.ndarray, suction: np.ndarray, status: np.ndarray) -> EncodedBlock:
    """Compress one run of samples: t (n,) s float64, suction (n, cups) kPa
    float32, status (n, cups) uint8/uint16. Lossless (verified)."""
    tc, tb = _encode_t(t)
    sc, sb = _encode_suction(suction)
    st = np.asarray(status)
    stc = ST_UINT8 if st.dtype == np.uint8 else ST_UINT16
    stb = zlib.compress(_shuffle(np.ascontiguousarray(st.T.astype(
        np.uint8 if stc == ST_UINT8 else np.uint16))), _ZLEVEL)
    return EncodedBlock(tc, sc, stc, tb, sb, stb)


def decode_block(enc: EncodedBlock, n: int, cups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_block`: (t (n,), suction (n, cups), status (n, cups))."""
    t = _decode_t(enc.t_codec, enc.t, n)
    s = _decode_suction(enc.suction_codec, enc.suction, n, cups)
    sdt = np.uint8 if enc.status_codec == ST_UINT8 else np.uint16
    st = np.ascontiguousarray(_unshuffle(zlib.decompress(enc.status), sdt).reshape(cups, n).T)
    return t, s, st


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    if hasattr(o, "value"):  # enums
        return o.value
    return str(o)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def pid_alive(pid: int | None) -> bool:
    """True if a process with this id exists (zombies count as alive)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    except OSError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _guard(fn: Callable) -> Callable:
    """Turn sqlite3 errors inside a Store method into one-line StoreErrors."""

    @functools.wraps(fn)
    def wrapper(self: Store, *a: Any, **kw: Any) -> Any:
        try:
            return fn(self, *a, **kw)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    return wrapper


def _check_header(path: Path) -> bool:
    """Check the raw file header without SQLite touching the file.

    Returns True if the file is empty (a new database may be created in it).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a cupmon database") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        return True
    if not head.startswith(_SQLITE_MAGIC) or len(head) < 100:
        raise StoreError(f"{path} is not a cupmon database (not an SQLite file); "
                         "give another --db path")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database of another program, not a cupmon "
                         "database; give another --db path")
    return False


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

class Store:
    """A cupmon session database.

    ``Store(path)`` opens (creating when missing, unless ``create=False``) the
    file at ``path`` (default :func:`default_db_path`). New files are created
    0600 in a 0700 directory. Raises :class:`StoreError` for a missing file
    with ``create=False``, a corrupt or foreign file, or a newer schema.
    On open, 'running' sessions whose writer is gone are marked interrupted.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True,
                 timeout: float = 5.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self._conn: sqlite3.Connection | None = None
        self.schema_version = 0
        new = not self.path.exists()
        if new and not create:
            raise StoreError(f"no cupmon database at {self.path}")
        if new:
            self._create_file()
        else:
            new = _check_header(self.path)
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout,
                                         isolation_level=None)  # explicit transactions
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._setup_with_retry(new, timeout)
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc) from None
        except StoreError:
            self.close()
            raise

    def _error(self, exc: BaseException) -> StoreError:
        text = _one_line(exc)
        if isinstance(exc, sqlite3.DatabaseError) and (
                "malformed" in text or "not a database" in text or "corrupt" in text):
            return StoreError(f"{self.path} is corrupt ({text}); it was left untouched: "
                              "restore a backup or give another --db path")
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path} is read-only: {text}")
        if "locked" in text or "busy" in text:
            return StoreError(f"{self.path} is locked by another program ({text}); try again")
        return StoreError(f"{self.path}: {text}")

    def _create_file(self) -> None:
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True)
                os.chmod(parent, 0o700)  # mkdir's mode is masked by the umask
            # O_EXCL with mode 0600: the file is never readable by others, not
            # even between creation and a chmod. SQLite gives its -wal and -shm
            # files the mode of the database file.
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
        except FileExistsError:
            _check_header(self.path)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def _setup_with_retry(self, new: bool, timeout: float) -> None:
        """``_setup`` and ``mark_interrupted``, retried while another connection
        opening the same file at the same moment holds it (the recorder and the
        calibration reader start together on a new file). SQLite answers
        "locked" at once, without waiting, when two connections that have both
        read would deadlock waiting for each other; one of them must let go and
        try again."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            try:
                self._setup(new)
                self.mark_interrupted()
                return
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)   # back off: the other opener finishes its setup
                pause = min(pause * 2, 0.2)

    def _setup(self, new: bool) -> None:
        conn = self.conn
        if new:
            # (The schema is written before the switch to WAL, so that the file's
            # own header carries the application id even if the process is then
            # killed: _check_header reads it from the file, not from the WAL.)
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                for stmt in _SCHEMA_V1.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute("PRAGMA user_version = 1")
            conn.execute("COMMIT")
        # Header-only check passed; make SQLite actually read the schema so a
        # damaged file fails here, not halfway through a recording.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer cupmon (schema {version}; "
                             f"this one reads up to {SCHEMA_VERSION}): update cupmon")
        if version < 1:
            raise StoreError(f"{self.path} is not a cupmon database (no schema); "
                             "give another --db path")
        while version < SCHEMA_VERSION:
            try:
                conn.execute("BEGIN IMMEDIATE")
                # Another connection may have migrated since we read the version.
                now = conn.execute("PRAGMA user_version").fetchone()[0]
                if now > version:
                    conn.execute("COMMIT")
                    version = now
                    continue
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if "readonly" in str(exc) or "read-only" in str(exc):
                    break   # read as it is: what a newer schema adds reads as empty
                raise
            version += 1
        self.schema_version = version
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed transaction survives a crash of the
        # process (kill -9); only an OS crash/power cut may lose the last ones,
        # and the file stays consistent either way.
        conn.execute("PRAGMA synchronous = NORMAL")

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------
    @_guard
    def begin(self) -> None:
        """Start a write transaction (the recorder batches writes into one)."""
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")

    @_guard
    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def _tx(self) -> _Tx:
        return _Tx(self.conn)

    # -- sessions ------------------------------------------------------------
    @_guard
    def mark_interrupted(self, now: float | None = None) -> list[int]:
        """Mark 'running' sessions whose writer process is gone, or whose
        heartbeat is older than :data:`STALE_HEARTBEAT_S`, as interrupted.
        Returns their ids."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "SELECT id, writer_pid, heartbeat_wall, started_wall FROM sessions "
            "WHERE status = 'running'").fetchall()
        gone = []
        for sid, pid, beat, started in rows:
            last = beat if beat is not None else started
            if not pid_alive(pid) or now - last > STALE_HEARTBEAT_S:
                gone.append((last, sid))
        if gone:
            try:
                with self._tx():
                    self.conn.executemany(
                        "UPDATE sessions SET status = 'interrupted', "
                        "ended_wall = coalesce(ended_wall, ?) "
                        "WHERE id = ? AND status = 'running'", gone)
            except sqlite3.OperationalError as exc:
                if "readonly" not in str(exc):
                    raise
        return [sid for _, sid in gone]

    @_guard
    def create_session(self, *, source: str = "", therapist: str = "", patient: str = "",
                       notes: str = "", targets: Any = None, info: DeviceInfo | None = None,
                       cups: int | None = None, rate_hz: float | None = None,
                       started_wall: float | None = None,
                       writer_pid: int | None = None) -> int:
        """Insert a 'running' session and return its id. ``targets`` is any
        JSON-able value (e.g. ``{"1": [20.0, 25.0]}``, kPa)."""
        now = time.time() if started_wall is None else started_wall
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO sessions (started_wall, source, therapist, patient, notes, "
                "targets, cups, rate_hz, status, heartbeat_wall, writer_pid) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (now, source, therapist, patient, notes, _json(targets), cups, rate_hz, now,
                 os.getpid() if writer_pid is None else writer_pid))
            sid = int(cur.lastrowid)
            if info is not None:
                self._set_info(sid, info)
        return sid

    def _set_info(self, session_id: int, info: DeviceInfo) -> None:
        self.conn.execute(
            "UPDATE sessions SET device_serial = ?, firmware = ?, cups = ?, rate_hz = ?, "
            "device_info = ? WHERE id = ?",
            (info.serial, info.firmware_str, info.cups, info.rate_hz,
             _json(asdict(info)), session_id))

    @_guard
    def set_device_info(self, session_id: int, info: DeviceInfo) -> None:
        """Record the device's INFO (serial, firmware, cups, rate) on the session."""
        with self._tx():
            self._set_info(session_id, info)

    @_guard
    def update_session(self, session_id: int, **fields: Any) -> None:
        """Set session columns by name (targets/recorder are stored as JSON)."""
        allowed = {"cups", "rate_hz", "targets", "therapist", "patient", "notes", "source",
                   "heartbeat_wall", "recorder", "ended_wall", "status"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set session field(s): {', '.join(sorted(bad))}")
        if "status" in fields and fields["status"] not in SESSION_STATUSES:
            raise ValueError(f"session status must be one of {', '.join(SESSION_STATUSES)}")
        vals = {k: (_json(v) if k in ("targets", "recorder") else v) for k, v in fields.items()}
        if not vals:
            return
        cols = ", ".join(f"{k} = ?" for k in vals)
        with self._tx():
            self.conn.execute(f"UPDATE sessions SET {cols} WHERE id = ?",
                              (*vals.values(), session_id))

    @_guard
    def heartbeat(self, session_id: int, now: float | None = None) -> None:
        """The writer is alive. Also revives a session that another process
        marked interrupted while this writer was stalled (slow disk)."""
        with self._tx():
            self.conn.execute(
                "UPDATE sessions SET heartbeat_wall = ?, status = 'running', ended_wall = NULL "
                "WHERE id = ? AND status IN ('running', 'interrupted')",
                (time.time() if now is None else now, session_id))

    @_guard
    def end_session(self, session_id: int, status: str = STATUS_COMPLETED,
                    ended_wall: float | None = None) -> None:
        """Close a session as 'completed' (or 'interrupted')."""
        if status not in (STATUS_COMPLETED, STATUS_INTERRUPTED):
            raise ValueError("a session ends 'completed' or 'interrupted'")
        now = time.time() if ended_wall is None else ended_wall
        with self._tx():
            self.conn.execute("UPDATE sessions SET status = ?, ended_wall = ?, "
                              "heartbeat_wall = ? WHERE id = ?",
                              (status, now, now, session_id))

    _SESSION_COLS = ("id", "started_wall", "ended_wall", "device_serial", "firmware", "cups",
                     "rate_hz", "targets", "therapist", "patient", "notes", "status", "source",
                     "heartbeat_wall", "writer_pid", "device_info", "recorder")

    def _session_dict(self, row: tuple) -> dict[str, Any]:
        d = dict(zip(self._SESSION_COLS, row, strict=True))
        for k in ("targets", "device_info", "recorder"):
            d[k] = _loads(d[k])
        return d

    @_guard
    def list_sessions(self) -> list[dict[str, Any]]:
        """Every session row (newest first) plus ``samples``, ``blocks``,
        ``events`` counts and ``t_first``/``t_last`` device times."""
        cols = ", ".join(f"s.{c}" for c in self._SESSION_COLS)
        rows = self.conn.execute(
            f"SELECT {cols}, "
            "(SELECT coalesce(sum(n), 0) FROM sample_blocks b WHERE b.session_id = s.id), "
            "(SELECT count(*) FROM events e WHERE e.session_id = s.id) "
            "FROM sessions s ORDER BY s.id DESC").fetchall()
        out = []
        for r in rows:
            d = self._session_dict(r[:len(self._SESSION_COLS)])
            d["samples"], d["events"] = int(r[-2]), int(r[-1])
            out.append(d)
        return out

    @_guard
    def get_session(self, session_id: int) -> dict[str, Any]:
        """The session row as a dict (JSON columns decoded). Raises
        :class:`StoreError` if there is no such session."""
        cols = ", ".join(self._SESSION_COLS)
        row = self.conn.execute(f"SELECT {cols} FROM sessions WHERE id = ?",
                                (session_id,)).fetchone()
        if row is None:
            raise NoSuchSession(f"no session {session_id} in {self.path} "
                             "(cupmon sessions list shows them)")
        return self._session_dict(row)

    @_guard
    def data_stats(self, session_id: int) -> dict[str, Any]:
        """Stored sample data of a session: rows, samples, gaps, lost frames,
        first/last device time (s) and stored bytes."""
        r = self.conn.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(gap_before), 0), "
            "coalesce(sum(lost_before), 0), min(t0), max(t1), "
            "coalesce(sum(length(t) + length(suction) + length(status)), 0) "
            "FROM sample_blocks WHERE session_id = ?", (session_id,)).fetchone()
        last = self.conn.execute(
            "SELECT t1 FROM sample_blocks WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
            (session_id,)).fetchone()
        return {"rows": r[0], "samples": r[1], "gaps": r[2], "lost_frames": r[3],
                "t_min": r[4], "t_max": r[5], "t_last": None if last is None else last[0],
                "bytes": r[6]}

    def device_info(self, session_id: int) -> DeviceInfo:
        """The session's DeviceInfo, rebuilt from the row (blank fields if the
        device never sent INFO)."""
        s = self.get_session(session_id)
        d = s.get("device_info") or {}
        fw = d.get("firmware") or [int(p) for p in (s["firmware"] or "0.0.0").split(".")
                                   if p.isdigit()] or [0, 0, 0]
        return DeviceInfo(
            serial=d.get("serial", s["device_serial"] or ""),
            firmware=tuple(int(v) for v in (list(fw) + [0, 0, 0])[:3]),  # type: ignore[arg-type]
            cups=int(d.get("cups", s["cups"] or 0)),
            rate_hz=int(round(d.get("rate_hz", s["rate_hz"] or 0))),
            sensor_model=int(d.get("sensor_model", 0)),
            flags=int(d.get("flags", 0)),
            adc_bits=int(d.get("adc_bits", 0)),
            hard_limit_kpa=float(d.get("hard_limit_kpa", 30.0)),
        )

    # -- samples -----------------------------------------------------------
    @_guard
    def next_block_seq(self, session_id: int) -> int:
        r = self.conn.execute("SELECT max(seq) FROM sample_blocks WHERE session_id = ?",
                              (session_id,)).fetchone()
        return 0 if r[0] is None else int(r[0]) + 1

    @_guard
    def add_blocks(self, session_id: int, blocks: Iterable[SampleBlock],
                   seq0: int | None = None) -> int:
        """Store blocks as given (one row each, boundaries kept). Returns the
        bytes of payload written. Use :meth:`add_run` to store several
        contiguous blocks in one row."""
        seq = self.next_block_seq(session_id) if seq0 is None else seq0
        total = 0
        with self._tx():
            for b in blocks:
                total += self._insert_run(session_id, seq, [b])
                seq += 1
        return total

    @_guard
    def add_run(self, session_id: int, seq: int, blocks: list[SampleBlock]) -> int:
        """Store contiguous blocks (only the first may have ``gap_before``) in
        one row, remembering their sizes so :meth:`iter_blocks` gives the
        original blocks back. Returns payload bytes. Joins the caller's
        transaction if one is open."""
        if self.conn.in_transaction:
            return self._insert_run(session_id, seq, blocks)
        with self._tx():
            return self._insert_run(session_id, seq, blocks)

    def _insert_run(self, session_id: int, seq: int, blocks: list[SampleBlock]) -> int:
        if not blocks:
            return 0
        if len(blocks) == 1:
            b = blocks[0]
            t, s, st, parts = b.t, b.suction, b.status, None
        else:
            t = np.concatenate([b.t for b in blocks])
            s = np.concatenate([b.suction for b in blocks])
            st = np.concatenate([b.status for b in blocks])
            parts = zlib.compress(np.array([b.n for b in blocks], np.int32).tobytes(), _ZLEVEL)
        n, cups = int(t.shape[0]), int(s.shape[1])
        if n == 0:
            return 0
        enc = encode_block(t, s, st)
        first = blocks[0]
        self.conn.execute(
            "INSERT INTO sample_blocks (session_id, seq, t0, t1, n, cups, gap_before, "
            "lost_before, t_codec, suction_codec, status_codec, t, suction, status, parts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, seq, float(t[0]), float(t[-1]), n, cups, int(bool(first.gap_before)),
             int(first.lost_before), enc.t_codec, enc.suction_codec, enc.status_codec,
             enc.t, enc.suction, enc.status, parts))
        return enc.nbytes + (len(parts) if parts else 0)

    def iter_blocks(self, session_id: int, *, split: bool = True,
                    batch_rows: int = 64, t_from: float | None = None) -> Iterator[SampleBlock]:
        """The session's samples in order, as :class:`SampleBlock` s with
        ``gap_before``/``lost_before`` as recorded. ``split=True`` gives the
        blocks exactly as they were recorded; ``False`` one block per row.
        ``t_from`` (device s) skips the rows that end before it, without
        decoding them (the first block given may still start earlier).

        Rows are fetched ``batch_rows`` at a time in short read transactions:
        a slow consumer (paced replay) never pins an old snapshot, which would
        stop a concurrent recorder's WAL from being checkpointed.
        """
        self.get_session(session_id)  # raises for an unknown id
        last = -1
        while True:
            try:
                rows = self.conn.execute(
                    "SELECT seq, n, cups, gap_before, lost_before, t_codec, suction_codec, "
                    "status_codec, t, suction, status, parts FROM sample_blocks "
                    "WHERE session_id = ? AND seq > ? AND t1 >= ? ORDER BY seq LIMIT ?",
                    (session_id, last, -math.inf if t_from is None else float(t_from),
                     batch_rows)).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            if not rows:
                return
            for seq, n, cups, gap, lost, tc, sc, stc, tb, sb, stb, parts in rows:
                last = seq
                try:
                    t, s, st = decode_block(EncodedBlock(tc, sc, stc, tb, sb, stb), n, cups)
                    sizes = (np.frombuffer(zlib.decompress(parts), np.int32)
                             if parts and split else [n])
                    if sum(int(k) for k in sizes) != n:
                        raise ValueError("block sizes do not add up")
                except (zlib.error, ValueError, IndexError) as exc:
                    raise StoreError(f"{self.path}: damaged sample data in session "
                                     f"{session_id} ({_one_line(exc)})") from None
                i = 0
                for k, size in enumerate(sizes):
                    j = i + int(size)
                    yield SampleBlock(t[i:j], s[i:j], st[i:j], 0.0,
                                      int(lost) if k == 0 else 0, bool(gap) and k == 0)
                    i = j

    # -- events and summaries ---------------------------------------------
    _EVENT_KEYS = ("t", "wall", "cup", "event", "condition", "priority", "suction_kpa", "message")

    @_guard
    def add_events(self, session_id: int, events: Iterable[Any]) -> int:
        """Store alarm events (``AlarmEvent`` s with ``to_dict()`` or plain
        dicts) as given. Returns how many."""
        rows = []
        for ev in events:
            d = event_dict(ev)
            rows.append((session_id, *(_scalar(d.get(k)) for k in self._EVENT_KEYS), _json(d)))
        if rows:
            sql = ("INSERT INTO events (session_id, t, wall, cup, event, condition, priority, "
                   "suction_kpa, message, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            if self.conn.in_transaction:
                self.conn.executemany(sql, rows)
            else:
                with self._tx():
                    self.conn.executemany(sql, rows)
        return len(rows)

    @_guard
    def events(self, session_id: int) -> list[dict[str, Any]]:
        """The session's events in the order recorded, as the dicts given."""
        rows = self.conn.execute(
            "SELECT t, wall, cup, event, condition, priority, suction_kpa, message, data "
            "FROM events WHERE session_id = ? ORDER BY id", (session_id,)).fetchall()
        out = []
        for r in rows:
            d = _loads(r[-1])
            out.append(d if isinstance(d, dict) else dict(zip(self._EVENT_KEYS, r[:-1],
                                                              strict=True)))
        return out

    @_guard
    def set_summary(self, session_id: int, cup: int, summary: Mapping[str, Any]) -> None:
        """Store (replace) the summary dict of one cup (0 = whole session)."""
        sql = ("INSERT OR REPLACE INTO cup_summaries (session_id, cup, summary) "
               "VALUES (?, ?, ?)")
        args = (session_id, int(cup), _json(dict(summary)))
        if self.conn.in_transaction:
            self.conn.execute(sql, args)
        else:
            with self._tx():
                self.conn.execute(sql, args)

    @_guard
    def summaries(self, session_id: int) -> dict[int, dict[str, Any]]:
        """``{cup: summary}`` as stored."""
        rows = self.conn.execute("SELECT cup, summary FROM cup_summaries WHERE session_id = ? "
                                 "ORDER BY cup", (session_id,)).fetchall()
        return {int(c): _loads(s) for c, s in rows}

    # -- band changes ------------------------------------------------------
    _BAND_KEYS = ("t", "cup", "low_kpa", "high_kpa", "wall")

    @_guard
    def add_band_changes(self, session_id: int, changes: Iterable[Any]) -> int:
        """Store bands set during the session, in the order given: dicts (or
        objects with attributes) with ``t`` (device s; the band applies to
        samples after it, None = before any), ``cup``, ``low_kpa``,
        ``high_kpa`` and optionally ``wall`` (Unix s). Returns how many."""
        rows = []
        for ch in changes:
            d = band_change_dict(ch)
            t = d.get("t")
            rows.append((session_id, None if t is None else float(t), int(d["cup"]),
                         float(d["low_kpa"]), float(d["high_kpa"]),
                         None if d.get("wall") is None else float(d["wall"])))
        if rows:
            sql = ("INSERT INTO band_changes (session_id, t, cup, low_kpa, high_kpa, wall) "
                   "VALUES (?, ?, ?, ?, ?, ?)")
            with self._tx():
                self.conn.executemany(sql, rows)
        return len(rows)

    @_guard
    def band_changes(self, session_id: int) -> list[dict[str, Any]]:
        """The bands set during the session, in the order they were set:
        ``{"t", "cup", "low_kpa", "high_kpa", "wall"}`` (``t``: device s, the
        band applies to samples after it; None = from the first sample). A
        read-only file of schema 1 has none."""
        if self.schema_version < 2:
            return []
        rows = self.conn.execute(
            "SELECT t, cup, low_kpa, high_kpa, wall FROM band_changes WHERE session_id = ? "
            "ORDER BY id", (session_id,)).fetchall()
        return [dict(zip(self._BAND_KEYS, r, strict=True)) for r in rows]

    # -- calibrations ------------------------------------------------------
    _CAL_COLS = ("id", "device_serial", "cup", "created_wall", "technician", "reference_id",
                 "reference_cert", "ambient", "c0", "c1", "c2", "as_found", "as_left",
                 "result", "due_wall", "certificate_id", "valid")

    @_guard
    def add_calibration(self, device_serial: str, cup: int, coeffs: tuple[float, float, float],
                        *, technician: str = "", reference_id: str = "",
                        reference_cert: str = "", ambient: Any = None, as_found: Any = None,
                        as_left: Any = None, result: str = "", due_wall: float | None = None,
                        certificate_id: str | None = None, valid: bool = True,
                        created_wall: float | None = None) -> int:
        """Record a calibration of one cup's sensor; ``coeffs`` = (c0 kPa, c1,
        c2 1/kPa) of ``c0 + c1*raw + c2*raw**2``. Returns its id."""
        c0, c1, c2 = (float(c) for c in coeffs)
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO calibrations (device_serial, cup, created_wall, technician, "
                "reference_id, reference_cert, ambient, c0, c1, c2, as_found, as_left, result, "
                "due_wall, certificate_id, valid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?)",
                (device_serial, int(cup), time.time() if created_wall is None else created_wall,
                 technician, reference_id, reference_cert, _json(ambient), c0, c1, c2,
                 _json(as_found), _json(as_left), result, due_wall, certificate_id,
                 int(bool(valid))))
        return int(cur.lastrowid)

    def _cal_dict(self, row: tuple) -> dict[str, Any]:
        d = dict(zip(self._CAL_COLS, row, strict=True))
        for k in ("ambient", "as_found", "as_left"):
            d[k] = _loads(d[k])
        d["valid"] = bool(d["valid"])
        return d

    @_guard
    def list_calibrations(self, device_serial: str | None = None,
                          cup: int | None = None) -> list[dict[str, Any]]:
        """Calibrations, newest first, optionally of one device / cup."""
        where, args = [], []
        if device_serial is not None:
            where.append("device_serial = ?")
            args.append(device_serial)
        if cup is not None:
            where.append("cup = ?")
            args.append(int(cup))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(f"SELECT {', '.join(self._CAL_COLS)} FROM calibrations "
                                 f"{clause} ORDER BY created_wall DESC, id DESC", args).fetchall()
        return [self._cal_dict(r) for r in rows]

    @_guard
    def latest_valid_calibration(self, device_serial: str, cup: int,
                                 now: float | None = None) -> dict[str, Any] | None:
        """The newest calibration of that cup that is valid and not overdue
        (``due_wall`` unset or later than ``now``), or None."""
        now = time.time() if now is None else now
        row = self.conn.execute(
            f"SELECT {', '.join(self._CAL_COLS)} FROM calibrations WHERE device_serial = ? "
            "AND cup = ? AND valid = 1 AND (due_wall IS NULL OR due_wall > ?) "
            "ORDER BY created_wall DESC, id DESC LIMIT 1", (device_serial, int(cup), now)
        ).fetchone()
        return None if row is None else self._cal_dict(row)

    @_guard
    def invalidate_calibration(self, calibration_id: int) -> None:
        """Mark a calibration as no longer valid (kept for the history)."""
        with self._tx():
            self.conn.execute("UPDATE calibrations SET valid = 0 WHERE id = ?",
                              (calibration_id,))


class _Tx:
    """``with``: one transaction unless the caller already holds one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.own = False

    def __enter__(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.own = True

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.own:
            return
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def event_dict(ev: Any) -> dict[str, Any]:
    """An alarm event as a plain dict (``to_dict()``, a dataclass, or a mapping)."""
    if isinstance(ev, Mapping):
        return dict(ev)
    if hasattr(ev, "to_dict"):
        return dict(ev.to_dict())
    if is_dataclass(ev) and not isinstance(ev, type):
        return asdict(ev)
    raise TypeError(f"cannot store an event of type {type(ev).__name__}")


def band_change_dict(ch: Any) -> dict[str, Any]:
    """A band change (a mapping, or an object such as
    ``monitor.pipeline.BandChange``) as ``{"t", "cup", "low_kpa", "high_kpa", "wall"}``."""
    if isinstance(ch, Mapping):
        d = dict(ch)
    else:
        d = {k: getattr(ch, k, None) for k in Store._BAND_KEYS}
    return {k: d.get(k) for k in Store._BAND_KEYS}


def session_bands(targets: Any, changes: Iterable[Mapping[str, Any]],
                  cups: int | None = None) -> dict[int, list[tuple[float | None, float, float]]]:
    """Each cup's band over the session as steps ``[(t, low, high), ...]``: the
    band the session started with (``t`` None, from ``targets`` as stored,
    e.g. ``{"1": [20, 25]}``), then each recorded change (applies to samples
    after ``t``). Cups 1..``cups`` are always present; a cup with no band
    known at the start begins with its first change."""
    out: dict[int, list[tuple[float | None, float, float]]] = {}
    if isinstance(targets, Mapping):
        for k, band in targets.items():
            try:
                out[int(k)] = [(None, float(band[0]), float(band[1]))]
            except (ValueError, TypeError, IndexError, KeyError):
                continue
    for c in range(1, int(cups or 0) + 1):
        out.setdefault(c, [])
    for ch in changes:
        out.setdefault(int(ch["cup"]), []).append(
            (None if ch.get("t") is None else float(ch["t"]), float(ch["low_kpa"]),
             float(ch["high_kpa"])))
    return dict(sorted(out.items()))


def band_at(steps: list[tuple[float | None, float, float]], t: float
            ) -> tuple[float, float] | None:
    """The band (low, high) of one cup's :func:`session_bands` steps that
    applies to a sample at device time ``t`` (None if none is known)."""
    band = None
    for t_ch, lo, hi in steps:
        if t_ch is None or t > t_ch:
            band = (lo, hi)
        else:
            break
    return band


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "value"):  # enums
        return v.value
    return str(v)
