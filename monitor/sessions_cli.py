"""``cupmon sessions``: list, show and export recorded sessions.

    cupmon sessions list [--db PATH]
    cupmon sessions show ID [--db PATH]
    cupmon sessions export ID --csv FILE|- [--json FILE|-] [--db PATH]

Exit status: 0 done; 1 no such session / no database / output not writable;
2 usage error or a database that cannot be read (corrupt, foreign, newer).
Every error is one line on stderr. File formats: docs/sessions.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from monitor.jsonsafe import strict_json

from .store import NoSuchSession, Store, StoreError, default_db_path

EXIT_OK, EXIT_FAIL, EXIT_BAD_DB = 0, 1, 2
#: Version of the JSON export layout (bump on incompatible change).
JSON_FORMAT_VERSION = 1


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sessions`` to a parent CLI's subparsers; dispatch with :func:`run`."""
    p = subparsers.add_parser("sessions", help="list, show and export recorded sessions",
                              description="List, show and export recorded sessions.")
    _fill(p)
    return p


def build_parser(prog: str = "cupmon sessions") -> argparse.ArgumentParser:
    """The standalone parser of ``cupmon sessions``."""
    p = argparse.ArgumentParser(prog=prog, description="List, show and export recorded "
                                "cupping sessions.")
    _fill(p)
    return p


def _fill(p: argparse.ArgumentParser) -> None:
    db_help = f"session database (default {default_db_path()})"
    p.add_argument("--db", type=Path, default=None, metavar="PATH", help=db_help)
    sub = p.add_subparsers(dest="sessions_command", metavar="{list,show,export}")
    # SUPPRESS: a --db after the subcommand must not be reset by its default.
    pl = sub.add_parser("list", help="one line per session, newest first")
    pl.add_argument("--db", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=db_help)
    ps = sub.add_parser("show", help="a session's details, per-cup summaries and events")
    ps.add_argument("id", type=int, metavar="ID")
    ps.add_argument("--db", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=db_help)
    pe = sub.add_parser("export", help="write a session as CSV (samples) and/or JSON "
                        "(session, summaries, events)")
    pe.add_argument("id", type=int, metavar="ID")
    pe.add_argument("--csv", metavar="FILE", help="samples: t_s, cupN_kpa..., cupN_status... "
                    "(- = stdout)")
    pe.add_argument("--json", metavar="FILE", help="session row, per-cup summaries and events "
                    "(- = stdout)")
    pe.add_argument("--db", type=Path, default=argparse.SUPPRESS, metavar="PATH", help=db_help)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``cupmon sessions ARGS`` (argv without 'sessions')."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.sessions_command:
        parser.print_help(sys.stderr)
        return 2
    if args.sessions_command == "export" and not (args.csv or args.json):
        parser.error("export needs --csv FILE and/or --json FILE")
    return run(args)


def _err(msg: str) -> None:
    print(f"cupmon sessions: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``sessions`` command; returns the exit status."""
    cmd = getattr(args, "sessions_command", None)
    if cmd is None:
        _err("give a command: list, show or export")
        return 2
    if cmd == "export" and not (args.csv or args.json):
        _err("export needs --csv FILE and/or --json FILE")
        return 2
    db: Path = args.db if args.db is not None else default_db_path()
    if not db.exists():
        if cmd == "list":
            print(f"no sessions recorded yet (no database at {db})")
            return EXIT_OK
        _err(f"no session database at {db} (give --db PATH)")
        return EXIT_FAIL
    try:
        store = Store(db, create=False)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_DB
    try:
        with store:
            if cmd == "list":
                return _list(store)
            if cmd == "show":
                return _show(store, args.id)
            return export_session(store, args.id, args.csv, args.json)
    except NoSuchSession as exc:
        _err(str(exc))
        return EXIT_FAIL
    except StoreError as exc:
        _err(str(exc))
        return EXIT_BAD_DB
    except OSError as exc:
        _err(f"cannot write {exc.filename or 'output'}: {exc.strerror or exc}")
        return EXIT_FAIL
    except ValueError as exc:
        _err(str(exc))
        return EXIT_FAIL


# -- list / show -----------------------------------------------------------

def _when(wall: float | None) -> str:
    return "-" if wall is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall))


def _duration(s: dict[str, Any]) -> float | None:
    end = s["ended_wall"] if s["ended_wall"] is not None else s["heartbeat_wall"]
    return None if end is None else max(0.0, end - s["started_wall"])


def _fmt_duration(sec: float | None) -> str:
    if sec is None:
        return "-"
    sec = int(round(sec))
    return f"{sec // 3600}:{sec // 60 % 60:02d}:{sec % 60:02d}"


def _list(store: Store) -> int:
    rows = store.list_sessions()
    if not rows:
        print(f"no sessions recorded yet in {store.path}")
        return EXIT_OK
    head = ("ID", "STARTED", "DURATION", "STATUS", "CUPS", "RATE", "DEVICE", "SAMPLES",
            "EVENTS", "PATIENT", "SOURCE")
    table = [head]
    for s in rows:
        rate = "-" if not s["rate_hz"] else f"{s['rate_hz']:g}"
        table.append((str(s["id"]), _when(s["started_wall"]), _fmt_duration(_duration(s)),
                      s["status"], str(s["cups"] or "-"), rate, s["device_serial"] or "-",
                      str(s["samples"]), str(s["events"]), s["patient"] or "-",
                      s["source"] or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def _show(store: Store, sid: int) -> int:
    s = store.get_session(sid)
    data = store.data_stats(sid)
    events = store.events(sid)
    summaries = store.summaries(sid)
    rec = s.get("recorder") or {}
    lines = [
        ("session", str(s["id"])),
        ("status", s["status"]),
        ("started", _when(s["started_wall"])),
        ("ended", _when(s["ended_wall"])),
        ("duration", _fmt_duration(_duration(s))),
        ("device", f"{s['device_serial'] or '-'} firmware {s['firmware'] or '-'}"),
        ("cups", str(s["cups"] or "-")),
        ("rate", f"{s['rate_hz']:g} Hz" if s["rate_hz"] else "-"),
        ("targets", json.dumps(s["targets"]) if s["targets"] is not None else "-"),
        ("source", s["source"] or "-"),
        ("therapist", s["therapist"] or "-"),
        ("patient", s["patient"] or "-"),
        ("notes", s["notes"] or "-"),
        ("samples", f"{data['samples']} in {data['rows']} rows, {data['gaps']} gaps, "
                    f"{data['lost_frames']} frames lost, {data['bytes']} bytes stored"),
        ("device time", "-" if data["t_min"] is None
         else f"{data['t_min']:.3f} .. {data['t_max']:.3f} s"),
    ]
    if rec.get("dropped_blocks") or rec.get("write_errors"):
        lines.append(("recorder", f"{rec.get('dropped_samples', 0)} samples dropped "
                                  f"(disk too slow), {rec.get('write_errors', 0)} write errors"))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k.ljust(width)}  {v}")
    bands = store.band_changes(sid)
    if bands:
        print(f"\nband changes ({len(bands)}; the band applies to the samples after t)")
        for b in bands:
            t = b["t"]
            print(f"  t={'start' if t is None else f'{t:.3f} s'}  cup {b['cup']}  "
                  f"{b['low_kpa']:g}-{b['high_kpa']:g} kPa")
    if summaries:
        print("\nsummaries")
        for cup, summ in summaries.items():
            label = "session" if cup == 0 else f"cup {cup}"
            items = ", ".join(f"{k}={_short(v)}" for k, v in summ.items())
            print(f"  {label}: {items}")
    print(f"\nevents ({len(events)})")
    by = Counter((e.get("condition") or "-", e.get("priority") or "-") for e in events)
    for (cond, prio), k in sorted(by.items()):
        print(f"  {cond} ({prio}): {k}")
    for e in events:
        t = e.get("t")
        cup = e.get("cup")
        print(f"  t={'-' if t is None else f'{t:.3f}'} s  cup {cup if cup is not None else '-'}"
              f"  {e.get('event') or '-'}  {e.get('condition') or '-'}"
              f"  {e.get('priority') or '-'}  {e.get('message') or ''}".rstrip())
    return EXIT_OK


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(strict_json(v), separators=(",", ":"))
    return str(v)


# -- export ----------------------------------------------------------------

@contextmanager
def _open_out(name: str | os.PathLike[str]) -> Iterator[IO[str]]:
    if name == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    # A new export file is private like the database (0600): it holds patient data.
    # newline="" so the csv rows keep their \n (no \r\n translation on Windows).
    with open(name, "w", encoding="utf-8", newline="",
              opener=lambda path, flags: os.open(path, flags, 0o600)) as fh:
        yield fh


def export_session(store: Store, sid: int, csv_path: str | os.PathLike[str] | None = None,
                   json_path: str | os.PathLike[str] | None = None) -> int:
    """Export stored session ``sid`` exactly as ``cupmon sessions export`` does.

    ``csv_path``: the samples as CSV (:func:`write_csv`: device time in s,
    suction in kPa, status bits); ``json_path``: the session row, data
    stats, per-cup summaries and events (:func:`session_document`). Either
    may be None (not written) or ``"-"`` (stdout). New files are created
    0600 (they carry patient labels). Formats: docs/sessions.md.

    Returns :data:`EXIT_OK`. Raises :class:`NoSuchSession` for an unknown id
    before any file is made, :class:`StoreError` for an unreadable database
    and ``OSError`` for an output that cannot be written.
    """
    session = store.get_session(sid)  # raises for an unknown id before any file is made
    if json_path:
        doc = session_document(store, sid, session)
        with _open_out(json_path) as fh:
            json.dump(doc, fh, indent=2, ensure_ascii=False, allow_nan=False)
            fh.write("\n")
    if csv_path:
        with _open_out(csv_path) as fh:
            write_csv(store, sid, fh, cups=session["cups"])
    return EXIT_OK


def session_document(store: Store, sid: int, session: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The JSON export of a session (docs/sessions.md)."""
    s = dict(session if session is not None else store.get_session(sid))
    s["started"] = _iso(s["started_wall"])
    s["ended"] = _iso(s["ended_wall"])
    return strict_json({
        "format": "cupmon-session",
        "format_version": JSON_FORMAT_VERSION,
        "session": s,
        "data": store.data_stats(sid),
        "summaries": {str(c): v for c, v in store.summaries(sid).items()},
        "band_changes": store.band_changes(sid),
        "events": store.events(sid),
    })


def csv_header(cups: int) -> str:
    """``t_s,cup1_kpa,...,cupN_kpa,cup1_status,...,cupN_status``."""
    return ",".join(["t_s"] + [f"cup{i}_kpa" for i in range(1, cups + 1)]
                    + [f"cup{i}_status" for i in range(1, cups + 1)])


def write_csv(store: Store, sid: int, fh: IO[str], cups: int | None = None) -> int:
    """Write the session's samples as CSV; returns the sample rows written.

    One row per sample: device time (s, 6 decimals = 1 µs), suction per cup
    (kPa; 2 decimals when the data has the wire's 0.01 kPa resolution, else 9
    significant digits; empty = no reading) and status bits per cup (integer).
    Before each block that follows a gap: one row with every field empty.
    Nothing is interpolated.
    """
    rows = 0
    header_cups: int | None = None
    for block in store.iter_blocks(sid, split=False):
        n, c = block.n, block.cups
        if header_cups is None:
            header_cups = c
            fh.write(csv_header(c) + "\n")
        elif c != header_cups:
            raise ValueError(f"session {sid} changes from {header_cups} to {c} cups; "
                             "CSV export needs a fixed number of columns")
        if block.gap_before and rows:
            fh.write("," * (2 * c) + "\n")
        s = block.suction
        q = np.round(s.astype(np.float64) * 100.0)
        wire = np.array_equal((q / 100.0).astype(np.float32), s, equal_nan=True)
        sfmt = "%.2f" if wire else "%.9g"
        arr = np.column_stack([block.t, s.astype(np.float64), block.status.astype(np.float64)])
        buf = io.StringIO()
        np.savetxt(buf, arr, fmt=["%.6f"] + [sfmt] * c + ["%d"] * c, delimiter=",")
        # NaN (no reading) -> empty cell; nothing else in this output has letters.
        fh.write(buf.getvalue().replace("nan", ""))
        rows += n
    if header_cups is None:
        fh.write(csv_header(int(cups or 0)) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(main())
