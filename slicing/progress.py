"""Progress reporting for long steps (calibrate, compile, setup, prove): rich bars, or nothing.

Library code takes a `ProgressSink` and calls `start(total)`, `step(description)` before each long
step and `advance()` after it; the CLI passes `RichProgress` (on stderr) or `NullProgress` for
`--quiet`.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class ProgressSink(Protocol):
    def start(self, total: int, title: str) -> None: ...
    def step(self, description: str) -> None: ...
    def advance(self) -> None: ...
    def note(self, message: str) -> None: ...


class NullProgress:
    """Reports nothing (`--quiet`, tests, node/)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def start(self, total: int, title: str) -> None:
        return None

    def step(self, description: str) -> None:
        return None

    def advance(self) -> None:
        return None

    def note(self, message: str) -> None:
        return None


class RichProgress:
    """One bar per `start`, on stderr, with the current step as its description."""

    def __init__(self) -> None:
        self.console = Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("{task.fields[title]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def start(self, total: int, title: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description="done")
        self.task = self.progress.add_task("", total=total, title=title)

    def step(self, description: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=description)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def note(self, message: str) -> None:
        self.progress.console.print(message)
