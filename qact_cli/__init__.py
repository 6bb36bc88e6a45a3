"""qact: robustness evaluation of image classifiers, built around the Quantile Activation."""

from .version import __version__

__all__ = ["evaluate", "load_model", "__version__"]


def __getattr__(name: str):
    # lazy: `import qact_cli` (and so the CLI's start) stays free of torch until a function is used
    if name in ("evaluate", "load_model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'qact_cli' has no attribute {name!r}")
