"""``cupmon --headless`` end to end: real subprocess, built-in simulator, real SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CUPMON = [sys.executable, "-m", "monitor.cli"]


def run(args: list[str], tmp_path: Path, timeout: float = 120,
        offscreen: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    if not offscreen:
        env.pop("QT_QPA_PLATFORM", None)
    return subprocess.run(CUPMON + args, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=tmp_path)


def test_over_suction_session_events_summary_and_record(tmp_path):
    db = tmp_path / "s.db"
    ev, summ = tmp_path / "ev.jsonl", tmp_path / "summary.json"
    r = run(["--headless", "--sim", "over_suction", "--speed", "20", "--duration", "60",
             "--db", str(db), "--events", str(ev), "--summary", str(summ)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    events = [json.loads(line) for line in ev.read_text().splitlines()]
    raised = [e for e in events if e["event"] == "raised"]
    assert any(e["condition"] == "over_suction" and e["priority"] == "high" for e in raised)
    for e in events:
        assert set(e) == {"t", "wall", "cup", "event", "condition", "priority",
                          "suction_kpa", "message"}
    doc = json.loads(summ.read_text())
    assert doc["alarms_raised"].get("over_suction", 0) >= 1
    assert doc["session_id"] is not None and doc["link"]["frames_ok"] > 0
    con = sqlite3.connect(db)
    status, = con.execute("select status from sessions where id=?", (doc["session_id"],)).fetchone()
    n_events, = con.execute("select count(*) from events where session_id=?",
                            (doc["session_id"],)).fetchone()
    con.close()
    assert status == "completed"
    assert n_events == len(events)


def test_replay_of_recorded_session_reproduces_events(tmp_path):
    db = tmp_path / "s.db"
    live_ev, replay_ev = tmp_path / "live.jsonl", tmp_path / "replay.jsonl"
    r = run(["--headless", "--sim", "cup_detached", "--speed", "20", "--duration", "45",
             "--db", str(db), "--events", str(live_ev)], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["--headless", "--replay", "1", "--db", str(db), "--events", str(replay_ev)], tmp_path)
    assert r.returncode == 0, r.stderr

    def key(path: Path) -> list[tuple]:
        return [(e["event"], e["condition"], e["cup"], round(e["t"], 2))
                for e in map(json.loads, path.read_text().splitlines())
                if e["condition"] != "signal_loss"]  # live end-of-run silence differs

    live = key(live_ev)
    assert any(k[1] == "detached" for k in live)
    assert key(replay_ev)[: len(live)] == live


def test_unreachable_port_is_one_line_and_records_nothing(tmp_path):
    db = tmp_path / "s.db"
    r = run(["--headless", "--port", str(tmp_path / "ttyNOPE"), "--db", str(db)], tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cupmon:")
    if db.exists():
        con = sqlite3.connect(db)
        assert con.execute("select count(*) from sessions").fetchone()[0] == 0
        con.close()


@pytest.mark.parametrize("args", [["--duration", "-1"], ["--band", "25"], ["--bogus"],
                                  ["--speed", "0"], ["--set", "band_low_kpa=30"]])
def test_bad_flags_exit_2_or_1_with_one_line(tmp_path, args):
    r = run(["--headless", "--sim", "normal", "--no-record"] + args, tmp_path, timeout=60)
    assert r.returncode in (1, 2)
    assert "Traceback" not in r.stderr
    assert r.stderr.strip()


def test_no_display_falls_back_to_terminal_view(tmp_path):
    r = run(["--sim", "normal", "--speed", "20", "--duration", "2", "--no-record"], tmp_path,
            offscreen=False)
    assert r.returncode == 0, r.stderr
    assert "no display found" in r.stderr


def test_terminal_keys_acknowledge_and_quit(tmp_path):
    """On a terminal, 'a' acknowledges the latched alarms and 'q' quits cleanly."""
    import pty
    import time

    ev = tmp_path / "ev.jsonl"
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), TERM="xterm")
    master, slave = pty.openpty()
    proc = subprocess.Popen(CUPMON + ["--headless", "--sim", "over_suction", "--speed", "20",
                                      "--no-record", "--events", str(ev)],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    os.close(slave)

    def drain() -> None:  # keep the pty from filling up while we wait
        import select
        while select.select([master], [], [], 0)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                return

    def wait_for(pred, timeout=60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            drain()
            events = [json.loads(x) for x in ev.read_text().splitlines()] if ev.exists() else []
            if pred(events):
                return events
            time.sleep(0.05)
        raise AssertionError(f"timed out; events: {events}")

    try:
        wait_for(lambda es: any(e["condition"] == "over_suction" and e["event"] == "cleared"
                                for e in es))
        os.write(master, b"a")
        events = wait_for(lambda es: any(e["event"] == "acknowledged" for e in es))
        acked = {e["condition"] for e in events if e["event"] == "acknowledged"}
        assert "over_suction" in acked
        os.write(master, b"q")
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            drain()
            time.sleep(0.05)
        assert proc.returncode == 0
        assert "Traceback" not in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


def test_calibration_in_force_is_reported_on_connect(tmp_path):
    """With no calibration on record the run says so (stderr and summary)."""
    summ = tmp_path / "summary.json"
    r = run(["--headless", "--sim", "normal", "--speed", "20", "--duration", "3",
             "--db", str(tmp_path / "s.db"), "--summary", str(summ)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "calibration missing" in r.stderr
    cal = json.loads(summ.read_text())["calibration"]
    assert cal["device_serial"].startswith("SIM-")
    assert {c["state"] for c in cal["cups"]} == {"missing"}


def test_replay_of_a_garbage_file_says_no_valid_data(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xa5\x5a\x01\x01garbage\xff\x00" * 50)
    r = run(["--headless", "--replay", str(junk), "--no-record"], tmp_path)
    assert r.returncode == 1
    assert "no valid data" in r.stderr and "Traceback" not in r.stderr
