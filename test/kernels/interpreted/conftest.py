"""Run by test/kernels/test_interpreted.py in its own pytest process (``--confcutdir`` here).

Sets TRITON_INTERPRET before anything imports triton, so every kernel, triton's own included,
runs on CPU in the interpreter. Direct use: ``pytest test/kernels/interpreted --confcutdir
test/kernels/interpreted``.
"""

import os
import sys

import pytest

if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    raise pytest.UsageError(
        "triton was imported before TRITON_INTERPRET=1 could be set; run these tests with "
        "--confcutdir test/kernels/interpreted (as test/kernels/test_interpreted.py does)"
    )
os.environ["TRITON_INTERPRET"] = "1"
