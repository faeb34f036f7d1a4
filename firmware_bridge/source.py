"""The one board interface every source implements, and the command tracker.

A :class:`Source` produces :class:`SampleBlock` s and messages on its
:class:`Notifier` (the python-can ``BusABC`` / BrainFlow board shape): the
serial link, the replay of a stored session and the replay of a capture file
all look the same to the checker, the recorder and the GUI.

Link state is itself a stream of messages: every change is published as a
:class:`LinkEvent` (CONNECTING, CONNECTED, LOST, RECONNECTING, RECONNECTED,
CLOSED, ERROR), so listeners see it in order with the data.

:class:`CommandTracker` is the host side of the command protocol
(docs/protocol.md 3.4): sequence numbers, one future per command, resending
the *same* frame after each ACK timeout. Any source that speaks bytes reuses it.
"""

from __future__ import annotations

import abc
import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import CommandNacked, CommandTimeout, LinkError, NotSupported
from .listener import Listener, Notifier
from .messages import Ack, DeviceInfo, LinkEvent, LinkState, LinkStats, Nack
from .protocol import ACK_ATTEMPTS, ACK_TIMEOUT_S, SEQ_WRAP, TIME_WRAP_US

if TYPE_CHECKING:
    from .codec import Command

log = logging.getLogger(__name__)

#: States after which the source delivers live data.
_UP = frozenset({LinkState.CONNECTED, LinkState.RECONNECTED})
#: States after which it does not (ERROR says nothing about connectivity).
_DOWN = frozenset({LinkState.CONNECTING, LinkState.LOST, LinkState.RECONNECTING,
                   LinkState.CLOSED})


class Source(abc.ABC):
    """A producer of sample blocks and messages for listeners.

    Subclasses implement :meth:`start` and :meth:`stop`, publish data on
    ``self.notifier`` and report link changes with :meth:`_publish_state`.
    """

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier: Notifier = notifier if notifier is not None else Notifier()
        self._info: DeviceInfo | None = None
        self._state: LinkState | None = None
        self._connected = threading.Event()

    # -- listeners ---------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Start delivering blocks and messages to ``listener`` (its own thread)."""
        self.notifier.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop delivering to ``listener``; its ``stop()`` is called."""
        self.notifier.remove_listener(listener)

    # -- lifecycle ---------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Begin acquisition without blocking. Raises :class:`LinkError` (one
        line) if the source cannot be opened at all."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop acquisition, then ``notifier.stop()`` (listeners' ``stop()`` is
        called). Idempotent."""

    def __enter__(self) -> Source:
        try:
            self.start()
        except BaseException:
            self.stop()  # __exit__ will not run: release listener threads here
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -------------------------------------------------------------
    @property
    def info(self) -> DeviceInfo | None:
        """The device's INFO (last received), or None (text device, replay without it)."""
        return self._info

    @property
    def state(self) -> LinkState | None:
        """The last published :class:`LinkState` (None before :meth:`start`)."""
        return self._state

    def stats(self) -> LinkStats:
        """Counters so far; the base class knows only listener overruns."""
        s = LinkStats()
        s.listener_overruns = self.notifier.overruns()
        return s

    def wait_connected(self, timeout: float) -> bool:
        """Block up to ``timeout`` s until the source is CONNECTED/RECONNECTED."""
        return self._connected.wait(timeout)

    def _publish_state(self, state: LinkState, message: str = "",
                       info: DeviceInfo | None = None) -> LinkEvent:
        """Record and publish a link state change (for subclasses)."""
        event = LinkEvent(state, time.monotonic(), " ".join(message.split()), info)
        if state is not LinkState.ERROR:
            self._state = state
        if state in _UP:
            self._connected.set()
        elif state in _DOWN:
            self._connected.clear()
        log.info("%s: %s", state.value, event.message)
        self.notifier.publish_message(event)
        return event

    # -- commands ----------------------------------------------------------
    def send_command(self, cmd: Command, timeout: float = ACK_TIMEOUT_S,
                     attempts: int = ACK_ATTEMPTS) -> concurrent.futures.Future:
        """Send ``cmd``; the future resolves to the device's :class:`Ack` or fails
        with :class:`CommandNacked` / :class:`CommandTimeout`. ``timeout`` is
        seconds per attempt. Sources that cannot send raise :class:`NotSupported`."""
        raise NotSupported(f"{type(self).__name__} does not take commands")

    def command(self, cmd: Command, **kw: Any) -> Ack:
        """Send ``cmd`` and wait for its ACK (raises CommandNacked/CommandTimeout)."""
        future = self.send_command(cmd, **kw)
        # The future resolves by itself after every attempt; the margin only
        # guards against a subclass that forgets to resolve it.
        limit = kw.get("timeout", ACK_TIMEOUT_S) * kw.get("attempts", ACK_ATTEMPTS) + 2.0
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            raise CommandTimeout(int(cmd.type), kw.get("attempts", ACK_ATTEMPTS), limit) from None


@dataclass(slots=True)
class PendingCommand:
    """A command waiting for its ACK/NACK."""

    cmd: Command
    frame: bytes
    future: concurrent.futures.Future
    timeout: float
    attempts: int
    internal: bool
    sent: int = 0
    deadline: float = 0.0
    first_sent: float = 0.0
    last_error: str = ""


def host_time_us(clock: Callable[[], float] = time.monotonic) -> int:
    """The host clock in µs, wrapped like the device's (for command frames)."""
    return int(clock() * 1e6) % TIME_WRAP_US


class CommandTracker:
    """Sequence numbers, ack futures and retransmission for one byte link.

    ``write(frame)`` sends bytes (it may raise; the attempt then counts as made
    and the error is kept for the timeout message). The owner feeds every ACK/NACK
    to :meth:`resolve` and calls :meth:`poll` at least every few tens of ms
    (the serial reader does it on every read). Futures are completed on the
    thread that calls resolve/poll, so done-callbacks must be quick.
    """

    def __init__(self, write: Callable[[bytes], None], *, first_seq: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 encode: Callable[..., bytes] | None = None) -> None:
        self._write = write
        self._clock = clock
        self._encode = encode
        # A random first seq: a device that remembers the last seq it executed
        # must not mistake our first command after a host restart for a repeat.
        self._seq = random.randrange(SEQ_WRAP) if first_seq is None else first_seq % SEQ_WRAP
        self._pending: dict[int, PendingCommand] = {}
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Commands still waiting for an answer."""
        with self._lock:
            return len(self._pending)

    def submit(self, cmd: Command, timeout: float = ACK_TIMEOUT_S,
               attempts: int = ACK_ATTEMPTS, internal: bool = False) -> concurrent.futures.Future:
        """Assign the next seq to ``cmd``, send it and return its future.

        ``internal`` marks the link's own commands (GET_INFO on connect,
        keep-alive PING) whose ACKs are not published to listeners. Raises
        ValueError (nothing sent) if ``cmd`` does not fit the wire format."""
        if timeout <= 0 or attempts < 1:
            raise ValueError("command timeout must be > 0 s and attempts >= 1")
        encode = self._encode
        if encode is None:
            from .codec import encode_command as encode
        # Left PENDING (not RUNNING) so that the caller may cancel() it.
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            seq = self._seq
            cmd = replace(cmd, seq=seq)
            # Raises ValueError for a command that does not fit the wire format,
            # before anything changes.
            frame = encode(cmd, host_time_us(self._clock))
            self._seq = (self._seq + 1) % SEQ_WRAP
            stale = self._pending.pop(seq, None)  # 65536 commands later: give up on it
            entry = PendingCommand(cmd, frame, future, timeout, attempts, internal)
            # Registered before the first write: a fast device may answer
            # before write() has returned.
            self._pending[seq] = entry
        if stale is not None:
            _fail(stale.future, CommandTimeout(int(stale.cmd.type), stale.sent,
                                               self._clock() - stale.first_sent))
        self._transmit(entry, self._clock(), first=True)
        return future

    def _transmit(self, entry: PendingCommand, now: float, first: bool = False) -> None:
        entry.sent += 1
        entry.deadline = now + entry.timeout
        if first:
            entry.first_sent = now
        try:
            self._write(entry.frame)
        except Exception as exc:  # the port may be gone; the retry or timeout says so
            entry.last_error = " ".join(str(exc).split()) or type(exc).__name__
            log.debug("command seq %d not sent: %s", entry.cmd.seq, entry.last_error)

    def resolve(self, msg: Ack | Nack) -> PendingCommand | None:
        """Complete the command ``msg`` answers. Returns it, or None if ``msg``
        answers nothing pending (a duplicate ACK of a retransmission)."""
        with self._lock:
            entry = self._pending.get(msg.seq)
            if entry is None or int(entry.cmd.type) != int(msg.cmd):
                return None
            del self._pending[msg.seq]
        if isinstance(msg, Ack):
            _succeed(entry.future, msg)
        else:
            _fail(entry.future, CommandNacked(msg.reason, int(entry.cmd.type)))
        return entry

    def poll(self, now: float | None = None) -> float | None:
        """Resend commands whose ACK is overdue, fail those out of attempts.
        Returns seconds until the next deadline (None if nothing pending)."""
        now = self._clock() if now is None else now
        resend, expired = [], []
        with self._lock:
            for seq, e in list(self._pending.items()):
                if e.future.cancelled():
                    del self._pending[seq]
                elif now >= e.deadline:
                    if e.sent >= e.attempts:
                        del self._pending[seq]
                        expired.append(e)
                    else:
                        resend.append(e)
        for e in resend:
            self._transmit(e, now)  # the same frame: the same seq, so no double execution
        for e in expired:
            _fail(e.future, CommandTimeout(int(e.cmd.type), e.sent, now - e.first_sent,
                                           e.last_error))
        with self._lock:
            if not self._pending:
                return None
            return max(0.0, min(e.deadline for e in self._pending.values()) - now)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending command with ``exc`` (the link closed)."""
        with self._lock:
            entries, self._pending = list(self._pending.values()), {}
        for e in entries:
            _fail(e.future, exc)


def _succeed(future: concurrent.futures.Future, value: object) -> None:
    try:
        future.set_result(value)
    except concurrent.futures.InvalidStateError:  # cancelled by the caller meanwhile
        pass


def _fail(future: concurrent.futures.Future, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass


__all__ = ["CommandTracker", "LinkError", "PendingCommand", "Source", "host_time_us"]
