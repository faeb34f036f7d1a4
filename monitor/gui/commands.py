"""Commands to the device from the window, without ever waiting for them.

``CommandSender.send(source, cmd, cups, label)`` hands the command to one
worker thread (the first copy of a frame is written by the caller of
``Source.send_command``, and a serial write may block), and returns a
:class:`CommandRecord` at once in state "sending". The source's future
resolves on its reader thread; the result comes back to the GUI thread
through a queued signal, and ``changed(record)`` tells the window to show
the ACK, the NACK reason in words, or the timeout.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6 import QtCore

from firmware_bridge.errors import CommandNacked, CommandTimeout, LinkError, NotSupported
from firmware_bridge.protocol import ACK_ATTEMPTS, ACK_TIMEOUT_S, NackReason
from firmware_bridge.source import Source

log = logging.getLogger(__name__)

#: What each NACK reason means to the person who pressed the button.
NACK_WORDS: dict[int, str] = {
    NackReason.UNKNOWN_COMMAND: "the device does not know this command (older firmware?)",
    NackReason.BAD_LENGTH: "the command was garbled on the way (bad length)",
    NackReason.BAD_CUP: "no such cup on the device",
    NackReason.OUT_OF_RANGE: "value out of the device's range",
    NackReason.BUSY: "the device is busy – try again",
    NackReason.UNSUPPORTED: "this device cannot do that",
    NackReason.INTERLOCK: "the cup is latched by the safety limit – Start clears it",
    NackReason.STORAGE: "the device could not store it",
    NackReason.SENSOR_FAULT: "the cup's sensor is faulty",
}

#: Seconds after which a command still "sending" is reported as unanswered,
#: in case a source never resolves its future (the link itself gives up after
#: ACK_TIMEOUT_S x ACK_ATTEMPTS).
GIVE_UP_S = ACK_TIMEOUT_S * ACK_ATTEMPTS + 2.0


def failure_text(exc: BaseException) -> str:
    """One line saying why a command did not go through."""
    if isinstance(exc, CommandNacked):
        try:
            name = NackReason(exc.reason).name
        except ValueError:
            name = f"reason {exc.reason}"
        words = NACK_WORDS.get(exc.reason, "the device refused it")
        return f"refused: {words} ({name})"
    if isinstance(exc, CommandTimeout):
        return f"no answer from the device after {exc.attempts} attempts – check the cable"
    if isinstance(exc, NotSupported | LinkError):
        return str(exc)
    if isinstance(exc, ValueError):  # did not fit the wire format; nothing was sent
        return f"not sent: {exc}"
    return f"not sent: {type(exc).__name__}: {exc}"


@dataclass
class CommandRecord:
    """One command and what became of it.

    state: "sending", "ack" or "failed". text: one line for a person
    ("Vent: sending…", "Vent: done", "Band: refused: …").
    """

    id: int
    label: str
    cups: tuple[int, ...]
    state: str = "sending"
    detail: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    result: Any = None
    on_ack: Callable[[CommandRecord], None] | None = None
    verb: str = ""
    """Short name for a tile ("Vent"); the label by default."""

    def _say(self, what: str) -> str:
        if self.state == "sending":
            return f"{what}: sending…"
        if self.state == "ack":
            return f"{what}: done"
        return f"{what}: {self.detail}"

    @property
    def text(self) -> str:
        """"Vent cup 2: sending…", "… done", "…: refused: …" (status line)."""
        return self._say(self.label)

    @property
    def tile_text(self) -> str:
        """The same for the cup's own tile ("Vent: done")."""
        return self._say(self.verb or self.label)

    @property
    def tile_short(self) -> str:
        """For a narrow tile: "Vent…", "Vent ✓", "Vent ✗" (the reason is in
        the tooltip and the status line)."""
        mark = {"sending": "…", "ack": " ✓"}.get(self.state, " ✗")
        return f"{self.verb or self.label}{mark}"

    @property
    def level(self) -> str:
        """"busy", "ok" or "bad" (for colours)."""
        return {"sending": "busy", "ack": "ok"}.get(self.state, "bad")


class CommandSender(QtCore.QObject):
    """Sends commands on a worker thread; reports every change on the GUI thread."""

    #: A CommandRecord changed (sent, acknowledged, failed). GUI thread.
    changed = QtCore.Signal(object)
    #: (record id, Ack or None, exception or None) from a worker / reader thread.
    _finished = QtCore.Signal(int, object, object)

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gui-command")
        self._ids = itertools.count(1)
        self.records: dict[int, CommandRecord] = {}
        self._finished.connect(self._on_finished)
        self._watch = QtCore.QTimer(self)
        self._watch.setInterval(500)
        self._watch.timeout.connect(self._give_up_overdue)
        self._watch.start()

    @property
    def pending(self) -> list[CommandRecord]:
        return [r for r in self.records.values() if r.state == "sending"]

    def send(self, source: Source, cmd: Any, cups: Sequence[int], label: str,
             on_ack: Callable[[CommandRecord], None] | None = None,
             verb: str = "") -> CommandRecord:
        """Send ``cmd`` to ``source`` for ``cups`` (1-based, for display);
        ``on_ack(record)`` runs on the GUI thread if the device ACKs."""
        rec = CommandRecord(next(self._ids), label, tuple(cups), on_ack=on_ack, verb=verb)
        self.records[rec.id] = rec
        # Keep the memory bounded on a long day.
        if len(self.records) > 500:
            for rid in sorted(self.records)[:-200]:
                if self.records[rid].state != "sending":
                    del self.records[rid]
        self.changed.emit(rec)
        rid = rec.id

        def work() -> None:
            try:
                future = source.send_command(cmd)
            except Exception as exc:  # NotSupported, a bad value: reported as one line
                self._emit(rid, None, exc)
                return

            def done(f: concurrent.futures.Future) -> None:  # reader thread: keep short
                if f.cancelled():
                    self._emit(rid, None, LinkError("the command was withdrawn before an answer"))
                    return
                exc = f.exception()
                self._emit(rid, None if exc else f.result(), exc)

            future.add_done_callback(done)

        self._pool.submit(work)
        return rec

    def _emit(self, rid: int, ack: Any, exc: BaseException | None) -> None:
        try:
            self._finished.emit(rid, ack, exc)
        except RuntimeError:  # the window is gone
            pass

    def _on_finished(self, rid: int, ack: Any, exc: BaseException | None) -> None:
        rec = self.records.get(rid)
        if rec is None or rec.state != "sending":
            return
        rec.finished = time.monotonic()
        if exc is None:
            rec.state, rec.result = "ack", ack
            log.info("%s acknowledged", rec.label)
            if rec.on_ack is not None:
                try:
                    rec.on_ack(rec)
                except Exception as e:  # e.g. the monitor refused the band
                    rec.state, rec.detail = "failed", f"done by the device, but {e}"
                    log.warning("after %s: %s", rec.label, e)
        else:
            rec.state, rec.detail = "failed", failure_text(exc)
            log.info("%s failed: %s", rec.label, rec.detail)
        self.changed.emit(rec)

    def _give_up_overdue(self) -> None:
        now = time.monotonic()
        for rec in self.pending:
            if now - rec.started > GIVE_UP_S:
                rec.state, rec.finished = "failed", now
                rec.detail = "no answer from the device"
                self.changed.emit(rec)

    def shutdown(self) -> None:
        self._watch.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
