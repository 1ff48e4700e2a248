"""Run the ``medgen`` CLI as a child process: stream its output, report progress, cancel the whole tree.

The child runs in its own session / process group, so :meth:`MedGenProcess.cancel` can kill it and
everything it started (``os.killpg``; ``taskkill /T`` on Windows). Output lines are read by a reader
thread, parsed into events (:mod:`MedGenLib.progress`), queued for :meth:`MedGenProcess.poll_events`
(the GUI drains them from a timer on the main thread) and passed to an optional callback.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from MedGenLib.progress import ErrorEvent, Event, StateEvent, parse_line

__all__ = ["CANCELLED_RETURN_CODE", "MedGenProcess", "State"]

logger = logging.getLogger(__name__)

#: Return code recorded for a run cancelled by the user (outside the range of real exit codes).
CANCELLED_RETURN_CODE = -1000
_STRAGGLER_GRACE_S = 2.0


class State(str, Enum):
    """Processing states shown in the module (the job adds Importing between Running and Done)."""

    INITIALIZING = "Initializing"
    RUNNING = "Running"
    IMPORTING = "Importing"
    DONE = "Done"
    CANCELLED = "Cancelled"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.CANCELLED, State.FAILED)


class MedGenProcess:
    """One child process.

    Args:
        argv: the command (e.g. :attr:`MedGenLib.commands.Command.argv`).
        env: child environment; default the current one.
        on_event: called from the reader thread with every event (keep it thread-safe; no Qt calls).
        cwd: working directory of the child.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.argv, self.env, self.cwd, self.on_event = list(argv), None if env is None else dict(env), cwd, on_event
        self.state = State.INITIALIZING
        self.returncode: int | None = None
        self.error_message: str | None = None
        self.lines: list[str] = []
        self._events: queue.Queue[Event] = queue.Queue()
        self._popen: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._cancel_requested = False
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._ended_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> MedGenProcess:
        """Start the child and the reader thread; returns ``self``."""
        if self._popen is not None:
            raise RuntimeError("process already started")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True  # own session + process group: killpg reaches the whole tree
        self._started_at = time.monotonic()
        try:
            self._popen = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1, env=self.env, cwd=self.cwd, **kwargs,
            )
        except OSError as err:
            self._finish(State.FAILED, None, f"cannot start {self.argv[0]}: {err}")
            return self
        self._set_state(State.RUNNING)
        self._reader = threading.Thread(target=self._read, name="MedGenProcessReader", daemon=True)
        self._reader.start()
        threading.Thread(target=self._reap_stragglers, name="MedGenProcessWaiter", daemon=True).start()
        return self

    def cancel(self, grace_s: float = 3.0, wait: bool = True) -> None:
        """Kill the child and its descendants: TERM, then KILL to the whole group after ``grace_s``.

        The state becomes Cancelled once the output is drained. With ``wait=False`` the escalation
        runs in a background thread (for GUIs: no modal wait).
        """
        with self._lock:
            if self.state.finished:
                return
            self._cancel_requested = True
        if self._popen is None:
            self._finish(State.CANCELLED, CANCELLED_RETURN_CODE, "cancelled before start")
            return
        self._kill_tree(signal.SIGTERM)
        if not wait:
            threading.Thread(target=self._escalate, args=(grace_s,), name="MedGenProcessKiller", daemon=True).start()
            return
        self._escalate(grace_s)
        self.wait(timeout=grace_s + 5.0)

    def _escalate(self, grace_s: float) -> None:
        assert self._popen is not None
        try:
            self._popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._kill_tree(getattr(signal, "SIGKILL", signal.SIGTERM))  # descendants that ignored TERM

    def wait(self, timeout: float | None = None) -> State:
        """Block until the child has exited and its output is read (or ``timeout``); returns the state."""
        if self._reader is not None:
            self._reader.join(timeout)
        return self.state

    def poll_events(self) -> list[Event]:
        """Events since the last call (non-blocking; call from the GUI thread)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # -- properties ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def elapsed_s(self) -> float:
        """Seconds since start (until the end once finished)."""
        if self._started_at is None:
            return 0.0
        return (self._ended_at or time.monotonic()) - self._started_at

    # -- internals -------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        self._events.put(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken callback must not kill the reader
                logger.exception("MedGen progress callback failed")

    def _set_state(self, state: State, detail: str = "") -> None:
        self.state = state
        self._emit(StateEvent(state.value, detail))

    def _finish(self, state: State, returncode: int | None, detail: str) -> None:
        with self._lock:
            if self.state.finished:
                return
            self.returncode, self._ended_at = returncode, time.monotonic()
            if state is State.FAILED:
                self.error_message = detail
            self._set_state(state, detail)

    def _read(self) -> None:
        assert self._popen is not None and self._popen.stdout is not None
        last_error: str | None = None
        for line in self._popen.stdout:
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            self.lines.append(text)
            event = parse_line(text)
            if isinstance(event, ErrorEvent):
                last_error = event.message
            self._emit(event)
        self._popen.stdout.close()
        rc = self._popen.wait()
        if self._cancel_requested:
            self._finish(State.CANCELLED, CANCELLED_RETURN_CODE, "cancelled by the user")
        elif rc == 0:
            self._finish(State.DONE, rc, "")
        else:
            tail = next((t for t in reversed(self.lines) if not t.startswith("MEDGEN_PROGRESS")), "")
            self._finish(State.FAILED, rc, last_error or tail.strip() or f"medgen exited with code {rc}")

    def _reap_stragglers(self) -> None:
        """After the child exits, kill descendants still holding the output pipe (no hang at the end)."""
        assert self._popen is not None
        self._popen.wait()
        if self._reader is not None:
            self._reader.join(_STRAGGLER_GRACE_S)
            if self._reader.is_alive():
                logger.warning("medgen exited but its child processes kept running; killing them")
                self._kill_tree(getattr(signal, "SIGKILL", signal.SIGTERM))

    def _kill_tree(self, sig: int) -> None:
        if self._popen is None:
            return
        if os.name == "nt":  # pragma: no cover - Windows only
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._popen.pid)], capture_output=True, check=False)
            return
        try:
            os.killpg(self._popen.pid, sig)  # the child leads its own group (start_new_session)
        except ProcessLookupError:
            pass
        except PermissionError as err:  # pragma: no cover
            logger.warning("cannot signal process group %s: %s", self._popen.pid, err)
