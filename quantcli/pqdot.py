"""pq-dot: queries times PQ-encoded weight rows through lookup tables, with an optional check
against the original weights and a timing of the LUT path against a dense matmul."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .archive.container import open_archive
from .errors import ArchiveError, ConfigError, InputError
from .methods import LOOKUP, get_method
from .methods.base import to_float32
from .io.output import atomic_output, check_output
from .reports import PQDotReport
from .io.sources import Sources


def _single_tensor(path: str, what: str) -> np.ndarray:
    with Sources([path]) as sources:
        if len(sources.refs) != 1:
            raise InputError(f"{what} must hold exactly one array, it holds {len(sources.refs)}", path=path)
        ref = sources.refs[0]
        if not ref.is_float:
            raise InputError(f"{what} must be a float array, got {ref.dtype}", path=path, tensor=ref.name)
        x = to_float32(ref.load())
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise InputError(f"{what} holds NaN or Inf values", path=path)
    return x


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: first calls compile kernels and fault pages in
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def pq_dot(archive_path: str, query_path: str, tensor: str | None = None, *, output: str | None = None,
           reference: str | None = None, repeat: int = 7) -> PQDotReport:
    """`Q @ W_hat.T` for a PQ-encoded tensor W, by lookup tables, without reconstructing W.

    `query_path` holds a float array `[d]` or `[b, d]`. With `reference` (the original weights),
    also the exact product's relative error (Frobenius norm), and the LUT path timed against a
    dense float32 matmul of the reconstructed matrix in the same run (medians of `repeat`).

    Example:
        >>> r = pq_dot("m.pq.safetensors", "q.npy", "layer.0.weight", reference="model.safetensors")
        >>> r.result.shape, r.relative_error < 0.5, r.speedup > 0
        ((4, 32), True, True)
    """
    from .lut import lookup_dot

    if repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {repeat}")
    if output is not None:
        check_output(output, [archive_path, query_path] + ([reference] if reference else []), ".npy")
    with open_archive(archive_path) as archive:
        pq_names = [t.name for t in archive.tensors if t.method == LOOKUP]
        if tensor is None:
            if len(pq_names) != 1:
                listed = ", ".join(pq_names[:5]) + (" ..." if len(pq_names) > 5 else "")
                raise ConfigError(f"the archive has {len(pq_names)} PQ tensors; name one with --tensor"
                                  + (f" ({listed})" if pq_names else ""), path=archive_path)
            tensor = pq_names[0]
        t = archive.by_name.get(tensor)
        if t is None:
            raise ConfigError("no such tensor in the archive", path=archive_path, tensor=tensor)
        if t.method != LOOKUP:
            raise ConfigError(f"is stored with method {t.method}, not {LOOKUP}; pq-dot needs a pq-encode "
                              "archive", path=archive_path, tensor=tensor)
        method = get_method(t.method)
        try:
            enc = archive.encoding(t)
            pq = method.lookup_codes(enc, t.shape)
        except ArchiveError as e:  # the method's own check names neither file nor tensor
            raise ArchiveError(e.message, path=archive_path, tensor=tensor) from None
    queries = _single_tensor(query_path, "the query file")
    if queries.ndim not in (1, 2) or queries.shape[-1] != pq.d:
        raise InputError(f"queries must be [{pq.d}] or [b, {pq.d}] to match {tensor} "
                         f"({'x'.join(map(str, t.shape))}), got {list(queries.shape)}", path=query_path)
    result = lookup_dot(queries, pq)
    report = PQDotReport(archive_path, tensor, result, "numba", output=output, reference=reference)
    if reference is not None:
        with Sources([reference]) as sources:
            refs = {r.name: r for r in sources.refs}
            if tensor not in refs:
                raise InputError("the reference weights have no such tensor", path=reference, tensor=tensor)
            if tuple(refs[tensor].shape) != tuple(t.shape):
                raise InputError(f"the reference tensor is {list(refs[tensor].shape)}, the archive's "
                                 f"{list(t.shape)}", path=reference, tensor=tensor)
            w = to_float32(refs[tensor].load()).reshape(pq.n, pq.d)
        q2 = queries.reshape(-1, pq.d)
        exact = q2.astype(np.float64) @ w.T.astype(np.float64)
        err = result.reshape(exact.shape).astype(np.float64) - exact
        norm = float(np.sqrt((exact ** 2).sum()))
        report.relative_error = float(np.sqrt((err ** 2).sum())) / norm if norm else None  # no scale to relate to
        w_hat = method.decode(enc, tuple(t.shape)).reshape(pq.n, pq.d)
        report.dense_ms = _median_ms(lambda: q2 @ w_hat.T, repeat)
        report.lut_ms = _median_ms(lambda: lookup_dot(queries, pq), repeat)
    if output is not None:
        with atomic_output(output) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(result), allow_pickle=False)
    return report
