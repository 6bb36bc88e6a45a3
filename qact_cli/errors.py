"""Exceptions that map to the CLI's exit codes (docs/reference.md, "Exit codes").

Library code raises these with one line saying what went wrong, which path, and what to do;
the CLI prints the line on stderr and exits with `exit_code`, without a traceback.
"""


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
