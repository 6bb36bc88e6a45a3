"""Terminal output: tables on stdout, progress and messages on stderr.

Progress bars disappear when stderr is not a terminal. Tables never lose a digit: a table is drawn
in the first of its layouts that fits the terminal whole (numbers are never wrapped or cut, only
text labels wrap); piped output always gets the first (widest, complete) layout at its natural
width, so scripts and `grep` see one line per row.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

WIDE = 1 << 16  # "unlimited" width for measuring


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


# ---------------------------------------------------------------------------------------------- widths


def natural_width(console: Console, item: RenderableType) -> int:
    """Columns `item` takes when nothing is wrapped."""
    return console.measure(item, options=console.options.update_width(WIDE)).maximum


def whole_width(console: Console, item: RenderableType) -> int:
    """The narrowest width at which `item` prints without cutting a cell.

    Rich shrinks a too-wide table by wrapping its wrappable columns down to their longest word, then
    by cutting every column evenly ("0.99…"). Columns marked `no_wrap` (numbers) must keep their
    full width, so a table fits only when those plus the wrapped minimum of the others fit.
    """
    if not isinstance(item, Table):
        return natural_width(console, item) if isinstance(item, Text) and item.no_wrap else 1
    options = console.options.update_width(WIDE)
    need = item._extra_width  # borders and edges
    for column in item.columns:
        m = item._measure_column(console, options, column)
        need += m.maximum if column.no_wrap else m.minimum
    return need


def fits(console: Console, items: Sequence[RenderableType]) -> bool:
    return all(whole_width(console, it) <= console.width for it in items)


def choose_layout(console: Console, layouts: Sequence[Sequence[RenderableType]]) -> int:
    """Index of the layout to print: on a terminal the first that fits whole (else the narrowest
    last one, printed at its natural width and soft-wrapped by the terminal); elsewhere the first."""
    if not console.is_terminal:
        return 0
    for k, items in enumerate(layouts):
        if fits(console, items):
            return k
    return len(layouts) - 1


def print_whole(console: Console, item: RenderableType) -> None:
    """Print `item`; a table wider than the console is printed at its natural width instead of cut."""
    need = natural_width(console, item) if isinstance(item, Table) else 0
    if need <= console.width or (console.is_terminal and whole_width(console, item) <= console.width):
        console.print(item)
        return
    width = console.width
    console.width = need
    try:
        console.print(item)
    finally:
        console.width = width


def print_layouts(console: Console, layouts: Sequence[Sequence[RenderableType]]) -> int:
    """Print the layout `choose_layout` picks, item by item. Returns its index."""
    k = choose_layout(console, layouts)
    for item in layouts[k]:
        print_whole(console, item)
    return k
