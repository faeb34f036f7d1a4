"""Crash safety with a real process and a real SIGKILL: the database opens
cleanly, holds everything the recorder got up to <= 1 s before the kill, and
the session shows as interrupted."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from monitor.store import Store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

RATE, CUPS, BLOCK = 1000, 4, 20

# A live-like stream: device time follows the wall clock, 20-sample blocks
# through a live (dropping) Notifier; after each block the child reports the
# device time of the last sample it handed over.
CHILD = textwrap.dedent(f"""
    import sys, time
    import numpy as np
    from firmware_bridge.listener import Notifier
    from firmware_bridge.messages import SampleBlock
    from monitor.recorder import Recorder

    def values(k):
        i = k * {BLOCK} + np.arange({BLOCK})
        q = (2000 + (i[:, None] * 7 + np.arange({CUPS}) * 13) % 500).astype(np.int16)
        return i, q.astype(np.float32) / np.float32(100.0)

    rec = Recorder(sys.argv[1], source="crash-test")
    print("session", rec.start_session(), flush=True)
    notifier = Notifier([rec])
    t0 = time.monotonic()
    k = 0
    while True:
        due = t0 + (k + 1) * {BLOCK} / {RATE}
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        i, s = values(k)
        notifier.publish_block(SampleBlock(i * 1000 / 1e6, s,
                                           np.full(({BLOCK}, {CUPS}), 8, np.uint8)))
        print("sent", repr(float(i[-1] * 1000 / 1e6)), flush=True)
        k += 1
""")


def _expected(t: np.ndarray) -> np.ndarray:
    i = np.round(t * 1e6 / 1000).astype(np.int64)
    q = (2000 + (i[:, None] * 7 + np.arange(CUPS) * 13) % 500).astype(np.int16)
    return q.astype(np.float32) / np.float32(100.0)


def test_kill_9_while_recording_loses_at_most_a_second(tmp_path):
    path = tmp_path / "c.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    sid, sent = None, 0.0
    deadline = time.monotonic() + 60
    try:
        # Commits tick every 0.5 s from the start: 2.45 s is just before one,
        # the worst moment to die.
        while sent < 2.45:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"child died: {proc.stderr.read()}"
            key, value = line.split()
            if key == "session":
                sid = int(value)
            else:
                sent = float(value)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    reader.join(timeout=30)
    while (line := lines.get(timeout=5)) is not None:   # what it said before dying
        sent = float(line.split()[1])

    with Store(path) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        row = s.get_session(sid)
        blocks = list(s.iter_blocks(sid))
        data = s.data_stats(sid)
    assert row["status"] == "interrupted"
    assert row["ended_wall"] is not None
    assert data["t_last"] >= sent - 1.0, (data["t_last"], sent)
    t = np.concatenate([b.t for b in blocks])
    suction = np.concatenate([b.suction for b in blocks])
    # Nothing stored is damaged or invented: every sample is the one that was sent.
    assert np.array_equal(t, np.arange(t.size) * 1000 / 1e6)
    assert np.array_equal(suction, _expected(t))
