"""benchmarks/gpu_check.sh where there is no GPU: one line and exit 3 (the dry run, --allow-cpu, is run by hand:
docs/gpu.md); its JUnit reading and step records."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _steps():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_no_cuda_device_is_one_line_and_exit_3(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "g.json")], capture_output=True, text=True,
                       env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable})
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("gpu_check: no CUDA device") and "--allow-cpu" in r.stderr
    assert not (tmp_path / "g.json").exists()


def test_bad_option_is_exit_3():
    r = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert r.returncode == 3 and "unknown option --fast" in r.stderr


def test_junit_rows_and_counts(tmp_path):
    (tmp_path / "j.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_cuda" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.1"><failure message="3 grey levels">x</failure>'
        '</testcase><testcase classname="tests.test_cuda" name="test_c" time="0">'
        '<skipped message="needs two CUDA devices"/></testcase></testsuite></testsuites>')
    got = _steps().junit_results(tmp_path / "j.xml")
    assert (got["passed"], got["failed"], got["skipped"], got["error"]) == (1, 1, 1, 0)
    assert got["tests"][1] == {"name": "tests.test_cuda::test_b", "outcome": "failed", "seconds": 0.1,
                               "message": "3 grey levels"}
    assert _steps().junit_results(tmp_path / "none.xml")["tests"] == []


def test_step_records_exit_code_time_limit_and_result(tmp_path):
    steps = _steps()
    (tmp_path / "r.json").write_text('{"rows": 2}')
    ok = steps.run_step("ok", [sys.executable, "-c", "print('hi')"], 30, json_file=tmp_path / "r.json")
    assert ok["ok"] and ok["rc"] == 0 and ok["stdout_tail"] == "hi\n" and ok["result"] == {"rows": 2}
    bad = steps.run_step("bad", [sys.executable, "-c", "import sys; sys.exit(4)"], 30)
    assert not bad["ok"] and bad["rc"] == 4 and "result" not in bad
    slow = steps.run_step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert slow["timed_out"] and not slow["ok"] and slow["rc"] is None
