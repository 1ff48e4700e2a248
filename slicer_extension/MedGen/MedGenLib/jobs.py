"""One generation run: export the input -> ``medgen`` child process -> import the output with provenance.

``GenerationJob`` is what the module's Logic drives. :meth:`GenerationJob.poll` is for the GUI (call it
from a timer on the main thread: it returns new events and imports the result once the child is done);
:meth:`GenerationJob.run` is the blocking mode. MRML is only touched from the calling thread. A
cancelled or failed run leaves no output node and no temporary files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from MedGenLib import scene_io
from MedGenLib.commands import Command, Device, GenerationRequest, build_command, variant_output_paths
from MedGenLib.process import MedGenProcess, State
from MedGenLib.progress import Event, StateEvent

__all__ = ["GenerationJob", "JobOptions", "task_label"]

_FINAL_STATES = {State.DONE.value, State.CANCELLED.value, State.FAILED.value}

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """What to run, independent of files: see :class:`MedGenLib.commands.GenerationRequest`."""

    action: str
    bundle: str | None = None
    scale: int = 2
    variant: str | None = None
    direction: str | None = None
    seed: int | None = None
    strength: float | None = None
    count: int = 1
    device: Device = Device.AUTO
    axes: str = "inplane"
    target_spacing: float | None = None
    adapt_seconds: float | None = None
    gate: bool = True


def task_label(options: JobOptions) -> str:
    """The ``<task>`` part of a new output's name, e.g. ``"upscale x2"``, ``"translate a2b"``."""
    if options.action == "upscale":
        return "upscale through-plane" if options.axes == "through" else f"upscale x{int(options.scale)}"
    if options.action == "translate":
        return f"translate {options.direction}" if options.direction else "translate"
    if options.action == "augment" and options.strength is not None:
        return f"augment s{options.strength:g}"
    return options.action


def _is_final(event: Event) -> bool:
    """A child's own Done/Cancelled/Failed (the job reports its final state itself, after importing)."""
    return isinstance(event, StateEvent) and event.state in _FINAL_STATES


class GenerationJob:
    """Run one request on ``input_node`` of ``scene``.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in the app, a fresh ``vtkMRMLScene`` in tests).
        input_node: scalar volume to process.
        options: what to run.
        output_node: volume to fill; ``None`` creates ``"<input> <task> (AI)"`` on success (one node per
            variant, ``"<input> augment #i (AI)"``, when ``options.count`` > 1; then ``output_node`` must be ``None``).
        executable: argv prefix of the CLI (default ``python -m medgen_core.cli.main``).
        temp_root: where the run's private folder is created (default: the system temp folder).
        keep_files: keep that folder after the run (debugging).
        on_event: called with every event; from the reader thread for process events, so thread-safe only.
        process_factory: builds the child process from a :class:`Command` (tests inject stand-ins).
    """

    def __init__(
        self,
        scene: Any,
        input_node: Any,
        options: JobOptions,
        output_node: Any | None = None,
        executable: Sequence[str] | None = None,
        temp_root: str | Path | None = None,
        keep_files: bool = False,
        on_event: Callable[[Event], None] | None = None,
        process_factory: Callable[[Command, Callable[[Event], None] | None], MedGenProcess] | None = None,
    ) -> None:
        if input_node is None:
            raise ValueError("select an input volume")
        if output_node is not None and output_node is input_node:
            raise ValueError("the output volume must differ from the input volume")
        if output_node is not None and int(options.count) > 1:
            raise ValueError("several variants each get a new volume: leave the output volume empty")
        self.scene, self.input_node, self.options, self.output_node = scene, input_node, options, output_node
        self.executable, self.temp_root, self.keep_files, self.on_event = executable, temp_root, keep_files, on_event
        self.process_factory = process_factory or (lambda cmd, cb: MedGenProcess(cmd.argv, cmd.env, on_event=cb))
        self._forward = None if on_event is None else (lambda e: None if _is_final(e) else on_event(e))
        self.state = State.INITIALIZING
        self.workspace: Path | None = None
        self._outputs: list[Path] = []
        self.command: Command | None = None
        self.process: MedGenProcess | None = None
        self.result_node: Any | None = None
        self.result_nodes: list[Any] = []
        self.error: str | None = None
        self.problems: list[str] = []

    # -- driving ---------------------------------------------------------------------------------
    def start(self) -> GenerationJob:
        """Export the input and start the child (returns at once)."""
        self._set_state(State.INITIALIZING)
        try:
            self.workspace = scene_io.make_workspace(self.temp_root)
            in_path = scene_io.export_volume(self.scene, self.input_node, self.workspace / "input.nrrd")
            request = GenerationRequest(input_path=in_path, output_path=self.workspace / "output.nrrd", **dataclasses.asdict(self.options))
            self._outputs = variant_output_paths(request)
            self.command = build_command(request, self.executable)
            logger.info("MedGen: %s", self.command.display())
            self.process = self.process_factory(self.command, self._forward)
            self.process.start()
        except Exception as err:  # noqa: BLE001 - any start failure becomes the Failed state
            self._fail(f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, OSError)) else str(err))
            return self
        if self.process.state is State.FAILED:
            self._fail(self.process.error_message or "could not start medgen")
        else:
            self.state = State.RUNNING
        return self

    def poll(self) -> list[Event]:
        """New events; once the child has finished, imports the result (main thread) and appends the final state."""
        events = [e for e in self.process.poll_events() if not _is_final(e)] if self.process is not None else []
        if self.process is not None and not self.state.finished and self.process.state.finished:
            events.extend(self._finalize())
        return events

    def run(self, timeout_s: float | None = None) -> State:
        """Blocking mode: start, wait for the child (cancel it after ``timeout_s``), import; returns the final state."""
        if self.process is None and not self.state.finished:
            self.start()
        if self.process is not None and not self.state.finished:
            if not self.process.wait(timeout_s).finished:
                self.error = f"timed out after {timeout_s} s"
                self.process.cancel()
            self.poll()
        return self.state

    def cancel(self, wait: bool = True) -> None:
        """Kill the child process tree; the job ends Cancelled on the next :meth:`poll` (``wait=False``: no blocking)."""
        if self.process is not None and not self.state.finished:
            self.process.cancel(wait=wait)

    @property
    def elapsed_s(self) -> float:
        return self.process.elapsed_s if self.process is not None else 0.0

    # -- internals -------------------------------------------------------------------------------
    def _set_state(self, state: State, detail: str = "") -> StateEvent:
        self.state = state
        event = StateEvent(state.value, detail)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _fail(self, message: str) -> StateEvent:
        self.error = message
        self._cleanup()
        return self._set_state(State.FAILED, message)

    def _cleanup(self) -> None:
        if not self.keep_files:
            scene_io.remove_workspace(self.workspace)

    def _finalize(self) -> list[Event]:
        assert self.process is not None and self.workspace is not None
        if self.process.state is State.CANCELLED:
            self._cleanup()
            return [self._set_state(State.CANCELLED, self.error or "cancelled by the user")]
        if self.process.state is State.FAILED:
            return [self._fail(self.process.error_message or "medgen failed")]
        events: list[Event] = [self._set_state(State.IMPORTING)]
        created = self.output_node is None
        nodes: list[Any] = []
        label = task_label(self.options)
        try:
            for i, path in enumerate(self._outputs):
                task = label if len(self._outputs) == 1 else f"{label} #{i + 1}"
                node = scene_io.import_output(self.scene, path, self.input_node, self.output_node, task)
                nodes.append(node)
                self.problems += [f"{task}: {p}" if len(self._outputs) > 1 else p for p in scene_io.validate_output(node, self.input_node)]
        except Exception as err:  # noqa: BLE001 - a failed import is a failed run, never a stray node
            self.problems.append(f"import failed: {err}")
        if self.problems:
            for node in nodes:
                if created and node is not None and node.GetScene() is not None:
                    scene_io.remove_node(self.scene, node)  # never leave an unchecked output behind
            events.append(self._fail("; ".join(self.problems)))
            return events
        self.result_nodes = nodes
        self.result_node = nodes[0]
        self._cleanup()
        events.append(self._set_state(State.DONE, "output: " + ", ".join(n.GetName() for n in nodes)))
        return events
