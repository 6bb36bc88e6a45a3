"""Exceptions that map to the CLI's exit codes (docs/reference.md, "Exit codes").

Library code raises these with one line saying what went wrong, which path, and what to do;
the CLI prints the line on stderr and exits with `exit_code`, without a traceback.
"""

from __future__ import annotations

import re


def first_line(e: BaseException, with_type: bool = False, limit: int = 200) -> str:
    """An exception's message fit for a one-line error: its first line (at most `limit` characters) without the
    "[file.cc:123] " source prefix that C++ backends such as gloo put in front; the type's name when the message is
    empty, and in front of the line with `with_type` (for errors from libraries whose messages do not say what
    failed)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])[:limit]
    return f"{type(e).__name__}: {line}" if with_type else line


class QactError(Exception):
    exit_code = 3

    def __init__(self, *args):
        # A DataLoader worker's error is re-raised in the main process as `type("Caught ... in DataLoader worker
        # process N. Original Traceback ...")`: keep only the original one-line message (the traceback's last line).
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught ") \
                and "DataLoader worker" in args[0].split("\n", 1)[0]:
            args = (_last_line(args[0]),)
        super().__init__(*args)


def _last_line(traceback_text: str) -> str:
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else traceback_text
    head, sep, rest = last.partition(": ")
    return rest if sep and head.split(".")[-1].endswith("Error") else last


class InputError(QactError):
    """Missing, truncated, corrupt or incompatible checkpoint, dataset or result file (exit 3)."""

    exit_code = 3


class UsageError(QactError):
    """Bad option value or combination (exit 2)."""

    exit_code = 2


class CheckFailed(QactError):
    """A regression or threshold check failed (exit 1)."""

    exit_code = 1
