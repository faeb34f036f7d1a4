"""Run slow work (database reads and writes, opening and closing files) off
the GUI thread and get the result back on it.

``runner.submit(fn, done)`` runs ``fn()`` on a small thread pool; when it
returns or raises, ``done(result, exc)`` is called on the GUI thread (a queued
signal), so ``done`` may touch widgets. The GUI never waits for ``fn``.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from PySide6 import QtCore

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]


class AsyncRunner(QtCore.QObject):
    """A thread pool whose results come back on the GUI thread."""

    #: A closure to run on the GUI thread (emitted from a worker: queued).
    _deliver = QtCore.Signal(object)

    def __init__(self, parent: QtCore.QObject | None = None, workers: int = 2,
                 name: str = "gui-io") -> None:
        super().__init__(parent)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._deliver.connect(self._run)
        self.pending = 0
        """Jobs submitted whose ``done`` has not run yet (tests wait for 0)."""

    def submit(self, fn: Callable[[], Any], done: Done | None = None) -> None:
        """Run ``fn()`` on a worker; then ``done(result, exc)`` on the GUI thread."""
        self.pending += 1

        def job() -> None:
            try:
                result, exc = fn(), None
            except BaseException as e:  # handed to done(): shown as one line there
                result, exc = None, e
            try:
                self._deliver.emit(lambda: done(result, exc) if done is not None else None)
            except RuntimeError:  # the window was deleted meanwhile
                pass

        self._pool.submit(job)

    def _run(self, callback: Callable[[], None]) -> None:
        self.pending -= 1
        try:
            callback()
        except Exception:  # a bug in a callback must not take the window down
            log.exception("GUI callback failed")

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
