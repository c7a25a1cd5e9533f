"""Progress reporting for batch runs: a progress bar on a terminal, JSON lines otherwise (CronJob logs).

Steps may overlap (finops-batch builds two months at once), so a step is ended by name; ``advance`` counts
towards the most recently started step still open.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """What a job reports while it runs."""

    def start_step(self, name: str, total: int | None = None) -> None:
        """A named step begins; ``total`` units of work are expected if known."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` units of the most recently started open step are done."""

    def end_step(self, name: str) -> None:
        """The step ``name`` is finished."""

    def close(self) -> None:
        """The run is over; release the terminal."""


class JsonLinesProgress:
    """One JSON object per event on a stream, throttled to one ``advance`` line per second per step."""

    def __init__(self, stream: TextIO | None = None, *, run_id: str | None = None) -> None:
        self._stream = stream or sys.stderr
        self._run_id = run_id
        # Open steps by name, in start order: [done, total]; the last one is the one ``advance`` counts for.
        self._open: dict[str, list[Any]] = {}
        self._last = 0.0

    def _emit(self, event: str, **fields: Any) -> None:
        payload = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
        if self._run_id:
            payload["run_id"] = self._run_id
        self._stream.write(json.dumps(payload) + "\n")
        self._stream.flush()

    def start_step(self, name: str, total: int | None = None) -> None:
        """Emit ``step_started``."""
        self._open[name] = [0, total]
        self._last = time.monotonic()
        self._emit("step_started", step=name, total=total)

    def advance(self, amount: int = 1) -> None:
        """Count work; emit ``progress`` at most once a second."""
        if not self._open:
            return
        step, counts = next(reversed(self._open.items()))
        counts[0] += amount
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self._emit("progress", step=step, done=counts[0], total=counts[1])

    def end_step(self, name: str) -> None:
        """Emit ``step_finished`` with the step's final count."""
        done, total = self._open.pop(name, [0, None])
        self._emit("step_finished", step=name, done=done, total=total)

    def close(self) -> None:
        """Nothing to release."""


class RichProgress:
    """A rich progress bar per step, for a developer at a terminal."""

    def __init__(self) -> None:
        from rich.progress import (  # noqa: PLC0415 - rich is only needed on a terminal
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar  # noqa: PLC0415

        self._bar = RichBar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._bar.start()
        self._tasks: dict[str, Any] = {}  # open steps' bars, in start order

    def start_step(self, name: str, total: int | None = None) -> None:
        """Add a bar for the step."""
        self._tasks[name] = self._bar.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        """Move the bar of the most recently started open step."""
        if self._tasks:
            self._bar.advance(next(reversed(self._tasks.values())), amount)

    def end_step(self, name: str) -> None:
        """Complete the step's bar."""
        task_id = self._tasks.pop(name, None)
        if task_id is not None:
            completed = next(task.completed for task in self._bar.tasks if task.id == task_id) or 1
            self._bar.update(task_id, total=completed, completed=completed)

    def close(self) -> None:
        """Stop drawing."""
        self._bar.stop()


class SilentProgress:
    """Progress that goes nowhere (runs launched from an API, tests)."""

    def start_step(self, name: str, total: int | None = None) -> None:
        """Ignore."""

    def advance(self, amount: int = 1) -> None:
        """Ignore."""

    def end_step(self, name: str) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


def progress_for(stream: TextIO | None = None, *, run_id: str | None = None) -> Progress:
    """A progress bar when ``stream`` is a terminal, JSON lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress()
    return JsonLinesProgress(stream, run_id=run_id)
