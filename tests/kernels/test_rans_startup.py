"""kernels/rans.py loads numba's registries without scipy.linalg (numba's BLAS probe, which no
kernel uses, cost 0.13 s of every entropy-coded dequantize), and numba code that does need BLAS
still compiles afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
import numpy as np
from quantcli.codecs import entropy
codes = np.arange(5000) % 7
data, params = entropy.encode(codes, 7)
assert np.array_equal(entropy.decode(data, params, codes.size), codes)
print("linalg", "scipy.linalg" in sys.modules)
import numba
@numba.njit
def dot(a, b):
    return np.dot(a, b)
print("dot", dot(np.ones((2, 3)), np.ones((3, 2)))[0, 0])
"""


def test_rans_kernels_load_without_scipy_linalg_and_blas_still_works():
    pytest.importorskip("scipy")
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["linalg", "False", "dot", "3.0"], run.stdout + run.stderr
