"""What the severity curves and the reliability diagrams share: the resolution, the image formats
(named by the file's extension) and the atomic write."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..utils import atomic_path

DPI = 100
PLOT_FORMATS = ("png", "pdf", "svg")


def plot_format(path) -> str:
    """The image format named by the file's extension (png, pdf or svg); anything else is a usage error."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise UsageError(f"--plot {path}: unknown image type {('.' + ext) if ext else '(no extension)'}; "
                         "end the name with .png, .pdf or .svg")
    return ext


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure to `path` in the format its extension names (temp name, then renamed)."""
    path = Path(path)
    fmt = plot_format(path)
    with atomic_path(path, f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI)
    return path
