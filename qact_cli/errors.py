"""Exceptions that map to the CLI's exit codes (interface §6).

Library code raises these with one line saying what went wrong, which path, and what to do;
the CLI prints the line on stderr and exits with `exit_code`, without a traceback.
"""


class QactError(Exception):
    exit_code = 3


class InputError(QactError):
    """Missing, truncated, corrupt or incompatible checkpoint, dataset or result file (exit 3)."""

    exit_code = 3


class UsageError(QactError):
    """Bad option value or combination (exit 2)."""

    exit_code = 2


class CheckFailed(QactError):
    """A regression or threshold check failed (exit 1)."""

    exit_code = 1
