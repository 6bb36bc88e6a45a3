"""Time the bundled quickstart (`qact compare` with no items) from scratch, as a user would run it.

    python benchmarks/bench_quickstart.py [--threads 2] [--keep DIR]

Runs in a fresh temporary folder (nothing reused), on the CPU, with torch limited to `--threads`
threads (a 2-core laptop), and prints the wall time and the CPU time (user + sys) of the run. The
target: under 10 minutes on a 2-core laptop CPU, aiming for 3. On a shared machine the CPU time is
the steadier number; wall time on an idle 2-core machine is about CPU time / 1.3-1.8.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", help="run in this folder instead of a temporary one (its qact-quickstart/ is reused)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), QACT_FEATURE_CACHE="0")
    folder = args.keep or tempfile.mkdtemp(prefix="qact-quickstart-bench-")
    os.makedirs(folder, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "qact_cli", "compare", "--device", "cpu"], cwd=folder, env=env)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"quickstart: exit {r.returncode}, wall {wall:.0f} s, CPU {cpu:.0f} s ({args.threads} threads), outputs in "
          f"{folder}/qact-quickstart", file=sys.stderr)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
