"""``cupmon sessions list|show|export``: content of every output and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from test_store_helpers import wire_blocks

from firmware_bridge.messages import DeviceInfo
from monitor.sessions_cli import export_session, main
from monitor.store import NoSuchSession, Store

INFO = DeviceInfo("SN-9", (1, 2, 3), 3, 1000)
EVENTS = [
    {"t": 1.25, "wall": "2025-01-01T10:00:01.250+01:00", "cup": 2, "event": "raised",
     "condition": "leak", "priority": "medium", "suction_kpa": 14.2,
     "message": "Cup 2 is leaking – re-seat it"},
    {"t": 3.5, "wall": "2025-01-01T10:00:03.500+01:00", "cup": None, "event": "raised",
     "condition": "signal_loss", "priority": "high", "suction_kpa": None,
     "message": "no data"},
]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "c.db"
    blocks = wire_blocks(6, size=10, cups=3, gaps_at=(4,))
    with Store(path) as s:
        first = s.create_session(source="sim://normal", patient="P-7", info=INFO,
                                 targets={"1": [20, 25]})
        s.add_blocks(first, blocks)
        s.add_events(first, EVENTS)
        s.set_summary(first, 1, {"mean_kpa": 22.51, "time_in_target_pct": 98.5})
        s.set_summary(first, 0, {"duration_s": float("nan")})
        s.end_session(first)
        second = s.create_session(source="replay:1")
    return path, first, second, blocks


def test_list_shows_every_session_newest_first(db, capsys):
    path, first, second, _ = db
    assert main(["list", "--db", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["ID", "STARTED", "DURATION", "STATUS"]
    assert [ln.split()[0] for ln in out[1:]] == [str(second), str(first)]
    row = out[2].split()
    assert "completed" in row and "SN-9" in row and "P-7" in row and "60" in row  # samples
    assert main(["--db", str(path), "list"]) == 0                 # --db before the command


def test_list_without_a_database_does_not_create_one(tmp_path, capsys):
    path = tmp_path / "none.db"
    assert main(["list", "--db", str(path)]) == 0
    assert "no sessions" in capsys.readouterr().out
    assert not path.exists()


def test_show_gives_details_summaries_and_events(db, capsys):
    path, first, _, _ = db
    assert main(["show", str(first), "--db", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("SN-9 firmware 1.2.3", "completed", "60 in 6 rows, 1 gaps, 10 frames lost",
                 "cup 1: mean_kpa=22.51", "leak (medium): 1", "signal_loss (high): 1",
                 "Cup 2 is leaking – re-seat it", "P-7"):
        assert text in out


@pytest.mark.parametrize("argv, code, text", [
    (["show", "99"], 1, "no session 99"),
    (["export", "99", "--csv", "-"], 1, "no session 99"),
])
def test_unknown_session_is_one_line_and_exit_1(db, capsys, argv, code, text):
    path = db[0]
    assert main(argv + ["--db", str(path)]) == code
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_unreadable_database_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(84) + b"\xff" * 4000)
    for argv in (["list"], ["show", "1"], ["export", "1", "--json", "-"]):
        assert main(argv + ["--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err


def test_missing_database_for_show_is_exit_1(tmp_path, capsys):
    assert main(["show", "1", "--db", str(tmp_path / "none.db")]) == 1
    assert "no session database" in capsys.readouterr().err


def test_export_needs_a_format(db, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "1", "--db", str(db[0])])
    assert info.value.code == 2


def test_export_csv_has_units_one_column_per_cup_and_marks_gaps(db, tmp_path):
    path, first, _, blocks = db
    out = tmp_path / "s.csv"
    assert main(["export", str(first), "--csv", str(out), "--db", str(path)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600                # patient data: private
    text = out.read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["t_s", "cup1_kpa", "cup2_kpa", "cup3_kpa",
                       "cup1_status", "cup2_status", "cup3_status"]
    body = rows[1:]
    gap_rows = [i for i, r in enumerate(body) if all(v == "" for v in r)]
    assert len(body) == 60 + 1 and gap_rows == [40]          # before block 4, nothing invented
    assert all(len(r) == 7 for r in body)
    samples = [r for r in body if r[0]]
    t = np.concatenate([b.t for b in blocks])
    s = np.concatenate([b.suction for b in blocks])
    st = np.concatenate([b.status for b in blocks])
    assert np.array_equal(np.array([float(r[0]) for r in samples]), np.round(t, 6))
    got = np.array([[np.float32(v) if v else np.nan for v in r[1:4]] for r in samples],
                   np.float32)
    assert np.array_equal(got, s, equal_nan=True)            # exact at 0.01 kPa, NaN = empty
    assert np.isnan(s).any()
    assert np.array_equal(np.array([[int(v) for v in r[4:]] for r in samples]), st)


def test_export_json_has_session_summaries_and_events(db, tmp_path):
    path, first, _, _ = db
    out = tmp_path / "s.json"
    assert main(["export", str(first), "--json", str(out), "--db", str(path)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"), parse_constant=lambda c: 1 / 0)
    assert doc["format"] == "cupmon-session" and doc["format_version"] == 1
    sess = doc["session"]
    assert (sess["id"], sess["status"], sess["device_serial"], sess["cups"]) == \
        (first, "completed", "SN-9", 3)
    assert sess["targets"] == {"1": [20, 25]} and sess["started"].startswith("20")
    assert doc["summaries"] == {"0": {"duration_s": None},      # NaN -> null: strict JSON
                                "1": {"mean_kpa": 22.51, "time_in_target_pct": 98.5}}
    assert doc["events"] == EVENTS
    assert doc["data"]["samples"] == 60 and doc["data"]["gaps"] == 1


def test_export_to_stdout(db, capsys):
    path, first, _, _ = db
    assert main(["export", str(first), "--csv", "-", "--db", str(path)]) == 0
    assert capsys.readouterr().out.startswith("t_s,cup1_kpa,")


def test_export_session_writes_the_files_the_cli_writes(db, tmp_path):
    path, first, _, _ = db
    assert main(["export", str(first), "--csv", str(tmp_path / "cli.csv"),
                 "--json", str(tmp_path / "cli.json"), "--db", str(path)]) == 0
    with Store(path, create=False) as store:
        assert export_session(store, first, tmp_path / "api.csv", tmp_path / "api.json") == 0
        export_session(store, first, json_path=str(tmp_path / "only.json"))
        with pytest.raises(NoSuchSession):
            export_session(store, 99, tmp_path / "none.csv")
    for ext in ("csv", "json"):
        api = (tmp_path / f"api.{ext}").read_bytes()
        cli = (tmp_path / f"cli.{ext}").read_bytes()
        # The JSON's session row holds no export time, so both files match byte for byte.
        assert api == cli and len(api) > 100
        assert (tmp_path / f"api.{ext}").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "only.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert not (tmp_path / "none.csv").exists()               # unknown id: no file made


def test_cupmon_sessions_runs_from_the_command_line(db):
    path, first, _, _ = db
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "sessions", "show", str(first),
                           "--db", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "SN-9" in proc.stdout


def test_add_subparser_plugs_into_a_parent_cli(db, capsys):
    import argparse

    from monitor.sessions_cli import add_subparser, run

    parent = argparse.ArgumentParser(prog="cupmon")
    add_subparser(parent.add_subparsers(dest="command"))
    args = parent.parse_args(["sessions", "--db", str(db[0]), "show", str(db[1])])
    assert args.command == "sessions" and run(args) == 0
    assert "SN-9" in capsys.readouterr().out
    assert run(parent.parse_args(["sessions", "--db", str(db[0])])) == 2
