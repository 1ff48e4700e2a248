"""Parse the ``medgen`` CLI's output lines into events for the progress bar and the log box.

``medgen ... --progress json`` prints ``MEDGEN_PROGRESS {"stage", "done", "total", "fraction"}`` lines
on stdout; a user-fixable failure ends with one ``medgen: error: ...`` line on stderr (exit code 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["ErrorEvent", "Event", "LogEvent", "ProgressEvent", "StateEvent", "parse_line"]

PROGRESS_PREFIX = "MEDGEN_PROGRESS "
ERROR_PREFIX = "medgen: error: "


@dataclass(frozen=True)
class ProgressEvent:
    """Step ``done`` of ``total`` of ``stage``; ``fraction`` in [0, 1] or ``None`` if unknown."""

    stage: str
    done: int
    total: int | None
    fraction: float | None


@dataclass(frozen=True)
class ErrorEvent:
    """The CLI's one-line error message (without the ``medgen: error:`` prefix)."""

    message: str


@dataclass(frozen=True)
class LogEvent:
    """Any other output line."""

    text: str


@dataclass(frozen=True)
class StateEvent:
    """The job or process entered ``state`` (a :class:`MedGenLib.process.State` value); ``detail`` says why."""

    state: str
    detail: str = ""


Event = ProgressEvent | ErrorEvent | LogEvent | StateEvent


def _as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_line(line: str) -> Event:
    """The event for one output line (malformed progress lines become :class:`LogEvent`).

    The child's stderr is merged into stdout, so a progress or error line may follow a tqdm fragment
    on the same line (tqdm writes ``\r`` without a newline); the marker is searched anywhere.
    """
    text = line.rstrip("\r\n")
    at = text.find(PROGRESS_PREFIX + "{")
    if at >= 0:
        try:
            payload = json.loads(text[at + len(PROGRESS_PREFIX):].strip())
        except ValueError:
            return LogEvent(text)
        if not isinstance(payload, dict):
            return LogEvent(text)
        done, total = _as_int(payload.get("done")), _as_int(payload.get("total"))
        fraction = payload.get("fraction")
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
            fraction = done / total if done is not None and total else None
        fraction = None if fraction is None else min(max(float(fraction), 0.0), 1.0)
        return ProgressEvent(stage=str(payload.get("stage", "")), done=done or 0, total=total, fraction=fraction)
    at = text.find(ERROR_PREFIX)
    if at >= 0:
        return ErrorEvent(text[at + len(ERROR_PREFIX):].strip())
    return LogEvent(text)
