"""Headless Chromium for the report tests (Debian's `chromium`; .ci/run installs it)."""

import os
import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium); "
                                                             ".ci/run installs it")


def run_chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "LANG": "C.UTF-8"})
