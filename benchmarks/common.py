"""Shared helpers of the benchmarks: run sizes, machine description, captures,
child processes and memory readings.

Every figure a benchmark reports is measured against a baseline in the same
run where one exists: the machine is shared, so absolute numbers move with
the load of other processes while same-run ratios move much less.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Size:
    """How big each section's run is (durations in device seconds unless named)."""

    name: str
    decode_s: float          # capture length for decode + check (8 cups x 1 kHz)
    naive_s: float           # part of it the per-frame baseline decodes
    repeats: int             # best of this many passes for the fast paths
    latency_excursions: int  # over-suction excursions injected
    replay_s: float          # replayed session length (16 cups x 1 kHz)
    sim_s: float             # simulator run for the real-time factor
    scaling_s: float         # capture length per scaling point
    gui_quick: bool          # gui_redraw.run(quick)


SIZES = {
    "full": Size("full", 60.0, 15.0, 3, 200, 3600.0, 600.0, 60.0, False),
    "quick": Size("quick", 30.0, 5.0, 2, 100, 120.0, 60.0, 6.0, True),
    "smoke": Size("smoke", 5.0, 1.0, 1, 12, 20.0, 5.0, 2.0, True),
}


def machine_info() -> dict:
    """Cores, CPU model, load and library versions (printed with every run)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # Uncommitted edits in the code under test make a figure unreproducible from
    # the commit alone: say so.
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "firmware_bridge", "monitor",
                                  "sim").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_code_files": len(dirty),
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "numpy": ver("numpy"),
        "pyside6": ver("PySide6"),   # the Qt wheels bundle Qt of the same version
        "pyqtgraph": ver("pyqtgraph"),
        "pyserial": ver("pyserial"),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def make_capture(path: Path, scenario: str = "normal", cups: int = 8, rate_hz: int = 1000,
                 duration_s: float = 60.0, fmt: str = "binary", seed: int = 0,
                 **params: object) -> dict:
    """Write a simulator capture (what ``cupsim SCENARIO --out FILE`` writes)
    and return its summary (frames, bytes, sim_s, wall_s, realtime_factor)."""
    from sim.device import make_simulation
    from sim.transports import write_capture

    sim = make_simulation(scenario, cups=cups, rate_hz=rate_hz, seed=seed,
                          duration_s=duration_s, **params)
    s = write_capture(sim, path, fmt, duration_s=duration_s, seed=seed)
    return {"frames": s.frames, "bytes": s.bytes, "sim_s": s.sim_s, "wall_s": s.wall_s,
            "realtime_factor": s.realtime_factor}


def run_child(module: str, args: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``python -m module args`` and return the JSON object on the last
    line of its stdout. A crash, a timeout or no JSON raises RuntimeError
    with the tail of its stderr (so the caller can record it and go on)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    # benchmarks/ is not an installed package: the child finds it from the repo root.
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                              text=True, timeout=timeout, env=full_env, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{module} timed out after {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"{module} exited with {proc.returncode}: {tail or 'no output'}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{module} printed no JSON result: {lines[-1][:200]}") from exc


def _status_kb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def rss_mb() -> float:
    """Resident set size of this process now, MB (1e6 bytes)."""
    return _status_kb("VmRSS") * 1024 / 1e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), MB."""
    return _status_kb("VmHWM") * 1024 / 1e6


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0-100) with linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Stopwatch:
    """Wall and process-CPU time of a ``with`` block, s."""

    def __enter__(self) -> Stopwatch:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def section_main(doc: str, run, format_table, sizes: dict, argv: list[str] | None = None,
                 extra=None) -> int:
    """The command line every section shares: ``--size`` and ``--json``.
    ``extra(parser)`` may add section flags and return a hook ``hook(args)``
    that, when it returns an int, ends the run with that exit code."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--size", choices=sorted(sizes), default="full")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    hook = extra(ap) if extra is not None else None
    args = ap.parse_args(argv)
    if hook is not None:
        code = hook(args)
        if code is not None:
            return code
    with tempfile.TemporaryDirectory(prefix="cupmon-bench-") as tmp:
        r = run(sizes[args.size], Path(tmp))
    print(json.dumps(r) if args.json else format_table(r))
    return 0
