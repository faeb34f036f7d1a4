"""The ``cupsim`` CLI in real subprocesses: --list, --pty, --tcp, --out/--truth, errors."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import serial

from firmware_bridge.codec import Decoder
from firmware_bridge.conditions import CONDITIONS
from firmware_bridge.messages import DeviceInfo
from sim.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(60)

CUPSIM = [sys.executable, "-m", "sim.cli"]


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*CUPSIM, *args], capture_output=True, text=True, timeout=timeout)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CUPSIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _first_line(proc: subprocess.Popen, timeout: float = 20) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "cupsim printed nothing"
    return proc.stdout.readline().strip()


def _decode_until(read, until, timeout: float = 20) -> Decoder:
    dec = Decoder("auto")
    dec.blocks = []
    dec.messages = []
    deadline = time.monotonic() + timeout
    while not until(dec) and time.monotonic() < deadline:
        data = read()
        if data is None:
            break
        res = dec.feed(data)
        dec.blocks += res.blocks
        dec.messages += res.messages
    return dec


def test_list_prints_every_scenario_with_a_description():
    r = _run("--list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert sorted(names) == sorted(SCENARIOS)
    assert all(len(line.split()) > 1 for line in lines)  # a description follows each name


def test_pty_first_line_is_a_path_that_yields_frames_then_exits_cleanly():
    proc = _spawn("normal", "--cups", "3", "--rate", "100", "--duration", "3", "--speed", "2",
                  "--pty")
    try:
        path = _first_line(proc)
        assert path.startswith("/dev/"), path
        with serial.Serial(path, timeout=0.1) as port:
            dec = _decode_until(lambda: port.read(4096),
                                lambda d: sum(b.n for b in d.blocks) >= 50)
        assert sum(b.n for b in dec.blocks) >= 50
        assert all(b.cups == 3 for b in dec.blocks)
        assert dec.stats.crc_errors == 0
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        proc.kill()
        proc.wait()


def test_pty_stops_cleanly_on_sigint_and_sigterm():
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = _spawn("normal", "--pty")
        try:
            path = _first_line(proc)
            assert os.path.exists(path)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
        finally:
            proc.kill()
            proc.wait()


def test_tcp_zero_picks_a_port_and_serves_frames_and_info_on_request():
    proc = _spawn("normal", "--cups", "2", "--tcp", "0", "--duration", "4", "--speed", "2")
    try:
        url = _first_line(proc)
        assert url.startswith("socket://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            from firmware_bridge.codec import Command, encode_command
            from firmware_bridge.protocol import MsgType

            s.sendall(encode_command(Command(MsgType.GET_INFO, seq=11)))
            dec = _decode_until(lambda: s.recv(4096) or None,
                                lambda d: any(isinstance(m, DeviceInfo) for m in d.messages)
                                and sum(b.n for b in d.blocks) >= 20)
        info = [m for m in dec.messages if isinstance(m, DeviceInfo)]
        assert info and info[0].cups == 2
        assert sum(b.n for b in dec.blocks) >= 20
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()


def _truth_scenario() -> str:
    """A scenario that injects at least one condition (ground truth non-empty)."""
    for name in ("over_suction", "leak", "detached", "under_suction"):
        if name in SCENARIOS:
            return name
    pytest.skip("no scenario with injected conditions")


def test_out_and_truth_write_a_decodable_capture_and_jsonl(tmp_path):
    from sim.device import make_simulation

    name = _truth_scenario()
    sim = make_simulation(name, cups=4, rate_hz=50, seed=3)
    duration = sim.duration_s or 120.0
    out, truth = tmp_path / "run.bin", tmp_path / "run.jsonl"
    r = _run(name, "--cups", "4", "--rate", "50", "--seed", "3", "--duration", f"{duration:g}",
             "--out", str(out), "--truth", str(truth))
    assert r.returncode == 0, r.stderr
    summary = r.stderr.strip().splitlines()
    assert len(summary) == 1 and "real time" in summary[0]
    dec = Decoder("auto")
    res = dec.feed(out.read_bytes())
    n = sum(b.n for b in res.blocks)
    assert dec.stats.crc_errors == 0
    assert n == pytest.approx(duration * 50, abs=2)
    assert f"{dec.stats.frames_ok} frames" in summary[0]
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert rows, "the scenario injects conditions"
    for row in rows:
        assert set(row) == {"cup", "condition", "t_start", "t_end"}
        assert row["condition"] in CONDITIONS
        assert 0 <= row["t_start"] < duration
        assert row["t_end"] is None or row["t_start"] <= row["t_end"] <= duration
        assert row["cup"] is None or 1 <= row["cup"] <= 4
    # Exactly what the same scenario and seed injects in-process.
    assert rows == [rec.to_json() for rec in sim.truth]


def test_out_text_format_is_serial_plotter_lines(tmp_path):
    out = tmp_path / "run.txt"
    r = _run("normal", "--cups", "2", "--rate", "20", "--duration", "2", "--format", "text",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 40
    assert lines[0].startswith("t:") and "cup1:" in lines[0] and "cup2:" in lines[0]
    dec = Decoder("text")
    res = dec.feed(out.read_bytes())
    t = np.concatenate([b.t for b in res.blocks])
    assert dec.stats.text_errors == 0
    assert t[-1] == pytest.approx(1.95)  # 40 samples from t = 0


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("args", [
    ["no_such_scenario", "--pty"],
    ["normal", "--cups", "0", "--pty"],
    ["normal", "--cups", "17", "--pty"],
    ["normal", "--rate", "5", "--pty"],
    ["normal", "--rate", "2001", "--pty"],
    ["normal", "--duration", "-1", "--pty"],
    ["normal", "--speed", "0", "--pty"],
    ["normal", "--duration", "1", "--out", "/nonexistent-dir/x.bin"],
    ["normal", "--duration", "1", "--out", "{tmp}/x.bin", "--truth", "/nonexistent-dir/t.jsonl"],
    ["normal", "--tcp", "{busy}"],
    ["normal", "--bogus-flag", "--pty"],
    ["normal", "--cups", "four", "--pty"],
    ["normal"],
    ["normal", "--pty", "--out", "x.bin"],
    ["normal", "--pty", "--param", "noequals"],
    ["normal", "--pty", "--param", "no_such_parameter=1"],
    [],
], ids=lambda a: " ".join(a) or "nothing")
def test_bad_flags_exit_2_with_one_line_and_no_traceback(args, tmp_path, busy_port):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{busy}", str(busy_port)) for a in args]
    r = _run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cupsim: ")
    assert r.stdout == ""


def test_param_reaches_the_scenario(tmp_path):
    means = []
    for extra in ([], ["--param", "sensor_offset_kpa=1.2"]):
        out = tmp_path / f"rig{len(extra)}.bin"
        r = _run("calibration_rig", "--cups", "1", "--duration", "0.5", "--out", str(out), *extra)
        assert r.returncode == 0, r.stderr
        res = Decoder("binary").feed(out.read_bytes())
        means.append(float(np.nanmean(np.concatenate([b.suction for b in res.blocks]))))
    assert means[1] - means[0] == pytest.approx(1.2, abs=0.15)
