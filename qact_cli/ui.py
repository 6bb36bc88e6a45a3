"""Terminal output: tables on stdout, progress and messages on stderr.

Progress bars disappear when stderr is not a terminal; tables never truncate numbers when stdout is
piped (a fixed wide console instead of Rich's 80-column default).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stdout_console() -> Console:
    if sys.stdout.isatty():
        return Console()
    return Console(width=int(os.environ.get("COLUMNS", 200)), soft_wrap=False)


def stderr_console() -> Console:
    return Console(stderr=True)


def progress(console: Console | None = None, *fields: str) -> Progress:
    console = console or stderr_console()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn("{task.fields[%s]}" % f) for f in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
