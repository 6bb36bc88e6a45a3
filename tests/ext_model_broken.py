"""A user module that fails at import time (`tests.ext_model_broken:build` must be one clear error)."""

import qact_cli_no_such_dependency  # noqa: F401


def build():
    raise AssertionError("never reached")
