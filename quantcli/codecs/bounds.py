"""Bounds a decoded stream must keep, as pure functions of what the archive declares (params,
shape, stream length, alphabet): each returns nothing or raises CodecError, before a kernel runs
or before its result reaches a method. Callers add the file and tensor (storage, archive)."""

from __future__ import annotations

import numpy as np

from .errors import CodecError


def check_codes(codes: np.ndarray, bits: int) -> None:
    """Codes of a `bits`-wide alphabet are 0 <= c < 2**bits: an entropy-coded stream may carry
    symbols up to its own alphabet (crans: any 16-bit value), and a method's codebook of 2**bits
    levels must never be indexed past its end (kmeans, vq) or into a neighbour row's codebook."""
    if codes.size and int(codes.max()) >> bits:
        raise CodecError(f"code {int(codes.max())} is outside the {bits}-bit alphabet 0..{(1 << bits) - 1}")


def check_lanes(lanes: int, count: int, per_lane: int, rows: int | None = None) -> None:
    """An interleaved rANS stream decodes its lanes side by side, one code per lane per step: its
    time is count / lanes steps. The encoder gives each lane at most `per_lane` codes (and crans one
    lane per row at most), so a stream that puts the codes of hundreds of lanes into one (a forged,
    re-signed archive: minutes on the numpy path instead of seconds) is refused before decoding."""
    need = -(-count // per_lane)
    if rows is not None:
        need = min(need, rows)
    if lanes < need:
        raise CodecError(f"{lanes} lanes for {count} codes: at most {per_lane} codes go in a lane, so at "
                         f"least {need} lanes")
