"""Progress reporting for batch runs: a progress bar on a terminal, JSON lines otherwise (CronJob logs)."""

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
        """``amount`` units of the current step are done."""

    def end_step(self) -> None:
        """The current step is finished."""

    def close(self) -> None:
        """The run is over; release the terminal."""


class JsonLinesProgress:
    """One JSON object per event on a stream, throttled to one ``advance`` line per second per step."""

    def __init__(self, stream: TextIO | None = None, *, run_id: str | None = None) -> None:
        self._stream = stream or sys.stderr
        self._run_id = run_id
        self._step: str | None = None
        self._done = 0
        self._total: int | None = None
        self._last = 0.0

    def _emit(self, event: str, **fields: Any) -> None:
        payload = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, **fields}
        if self._run_id:
            payload["run_id"] = self._run_id
        self._stream.write(json.dumps(payload) + "\n")
        self._stream.flush()

    def start_step(self, name: str, total: int | None = None) -> None:
        """Emit ``step_started``."""
        self._step, self._done, self._total, self._last = name, 0, total, time.monotonic()
        self._emit("step_started", step=name, total=total)

    def advance(self, amount: int = 1) -> None:
        """Count work; emit ``progress`` at most once a second."""
        self._done += amount
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self._emit("progress", step=self._step, done=self._done, total=self._total)

    def end_step(self) -> None:
        """Emit ``step_finished`` with the final count."""
        self._emit("step_finished", step=self._step, done=self._done, total=self._total)
        self._step = None

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
        self._task: Any = None

    def start_step(self, name: str, total: int | None = None) -> None:
        """Add a bar for the step."""
        self._task = self._bar.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        """Move the current bar."""
        if self._task is not None:
            self._bar.advance(self._task, amount)

    def end_step(self) -> None:
        """Complete the current bar."""
        if self._task is not None:
            task = self._bar.tasks[-1]
            self._bar.update(self._task, total=task.completed or 1, completed=task.completed or 1)
            self._task = None

    def close(self) -> None:
        """Stop drawing."""
        self._bar.stop()


class SilentProgress:
    """Progress that goes nowhere (runs launched from an API, tests)."""

    def start_step(self, name: str, total: int | None = None) -> None:
        """Ignore."""

    def advance(self, amount: int = 1) -> None:
        """Ignore."""

    def end_step(self) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


def progress_for(stream: TextIO | None = None, *, run_id: str | None = None) -> Progress:
    """A progress bar when ``stream`` is a terminal, JSON lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        return RichProgress()
    return JsonLinesProgress(stream, run_id=run_id)
