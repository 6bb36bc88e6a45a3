""""Did you mean" for every closed set of names the CLI accepts (corruptions, datasets, archs, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(value: object, choices: Iterable[str]) -> str | None:
    """The choice nearest to `value` (difflib's ratio, cutoff 0.6), or None when nothing is close."""
    text = str(value).strip().lower()
    options = [str(c) for c in choices]
    if not text or not options:
        return None
    lowered = {c.lower(): c for c in options}
    if text in lowered:  # a case slip: the right spelling is the suggestion
        return lowered[text]
    hit = difflib.get_close_matches(text, list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


def did_you_mean(value: object, choices: Iterable[str], several: bool = False) -> str:
    """'; did you mean 'x'?' for an error message, or '' when no choice is close. `several`: up to three
    close names, exact case, unquoted ('; did you mean resnet18 or resnet34?'), as model names are given."""
    if several:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.6)
        return f"; did you mean {' or '.join(close)}?" if close else ""
    hit = closest(value, choices)
    return f"; did you mean {hit!r}?" if hit else ""


def unknown(what: str, value: object, choices: Iterable[str]) -> str:
    """One error line: "unknown WHAT 'value'; did you mean 'x'? choose one of a, b, c"."""
    options = [str(c) for c in choices]  # choices may be numbers (--channels 1|3)
    hint = closest(value, options)
    head = f"unknown {what} {str(value)!r}"
    return (f"{head}; did you mean {hint!r}? " if hint else f"{head}; ") + f"choose one of {', '.join(options)}"
