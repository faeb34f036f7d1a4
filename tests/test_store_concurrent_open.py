"""Two parts of cupmon open the same new database at the same moment (the
recorder's writer and the calibration reader start together): neither may fail."""

from __future__ import annotations

import threading

from monitor.store import SCHEMA_VERSION, Store


def test_concurrent_openers_of_a_new_file_all_succeed(tmp_path):
    failures: list[str] = []
    for i in range(40):
        path = tmp_path / f"s{i}.db"
        start = threading.Barrier(3)

        def open_once(path=path, start=start):
            start.wait()
            try:
                with Store(path) as s:
                    assert s.schema_version == SCHEMA_VERSION
                    s.conn.execute("SELECT count(*) FROM band_changes").fetchone()
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(f"{path.name}: {exc}")

        threads = [threading.Thread(target=open_once) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert failures == []
