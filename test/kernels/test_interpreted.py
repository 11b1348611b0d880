"""The interpreter tests (``interpreted/``) in a fresh pytest process: see conftest.py for why."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_kernels_match_numpy_in_the_triton_interpreter():
    suite = HERE / "interpreted"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "--confcutdir", str(suite), "-q"],
        cwd=HERE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
