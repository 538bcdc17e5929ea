"""The compiled engine: every numba kernel of quant, each a module-level function compiled once per
install and loaded from numba's on-disk cache afterwards (no compile on a second run).

Importing any module here imports numba, so callers import them inside the functions that run a
kernel (`from ..kernels import rans`), and commands that need none (`quant inspect`) never load
numba. This package imports nothing from the rest of quantcli: methods and codecs both reach down to
it, which is why the dependent-quantization state machine lives here (dq.py), used by the trellis
(methods/dq.py) and by the context model of `crans` (codecs/context.py), and why `rans` and `crans`
share one rANS core (rans.py).

  _jit.py    the decorator: njit(cache=True, nogil=True), no fastmath (floats round as numpy's)
  dq.py      the DQ state machine, levels, the trellis (Viterbi) and ecsq's reconstruction sums
  rans.py    the rANS state updates (encode, decode) and the order-0 coder `rans`
  crans.py   contexts, table reader and coder of `crans`, on rans.py's core and dq.py's machine
  lut.py     pq-dot's gather-sum over lookup tables (parallel over rows)

The numpy twins these replaced are in tests/oracles/: the kernels must match them bit for bit.

numba keys a kernel's on-disk cache by the content of the file defining it, not of the files it
calls into, so each module here carries DEPENDS, a digest of the kernel files it imports
(tests/test_structure.py checks it): editing rans.py or dq.py changes crans.py too, and its
kernels recompile instead of loading code built against the old core.
"""
