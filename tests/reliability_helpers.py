"""Importable by worker processes (tests/ is on their PYTHONPATH): an encode function that marks
which process runs it and then holds still, so a test can kill that very worker."""

from __future__ import annotations

import os
import time


def slow_encode(ref, spec, note, keep_nonfinite):  # noqa: ANN001 - the EncodeFn signature
    with open(os.path.join(os.environ["QUANT_TEST_MARKERS"], str(os.getpid())), "w"):
        pass
    time.sleep(120)
    raise AssertionError("the test should have killed this worker")
