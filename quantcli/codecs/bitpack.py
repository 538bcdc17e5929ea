"""Bit packing of integer codes (1 to 16 bits) into a little-endian bit stream.

Layout: code i occupies bits [i*b, (i+1)*b) of the stream, least significant bit first,
and stream bit j lives in byte j // 8 at bit position j % 8. So for b = 4 the first code is
the low nibble of byte 0; for b = 8 the stream is the codes themselves. The packed length is
ceil(n * b / 8) bytes; unused high bits of the last byte are zero.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArchiveError

MAX_BITS = 16


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes needed for `count` codes of `bits` bits."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integer `codes` (any shape, each < 2**bits) into a uint8 stream."""
    _check_bits(bits)
    flat = np.ascontiguousarray(codes).reshape(-1)
    n = flat.size
    if bits == 8:
        return flat.astype(np.uint8, copy=True)
    if bits == 16:
        return flat.astype("<u2").view(np.uint8).copy()
    if bits > 8:
        # Rare (PQ codebooks of more than 256 centroids): expand to bits and repack.
        shifts = np.arange(bits, dtype=np.uint32)
        bitplanes = ((flat.astype(np.uint32)[:, None] >> shifts) & 1).astype(np.uint8)
        return np.packbits(bitplanes.reshape(-1), bitorder="little")
    if bits == 4:
        src = flat.astype(np.uint8, copy=False)
        if n % 2:
            src = np.concatenate([src, np.zeros(1, np.uint8)])
        pairs = src.reshape(-1, 2)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).astype(np.uint8)
    # Eight codes of b bits make exactly b bytes: combine them in a uint64 and keep b bytes.
    groups = -(-n // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:n] = flat
    lanes = padded.reshape(groups, 8)
    word = np.zeros(groups, dtype=np.uint64)
    for j in range(8):  # eight vectorised passes, not a loop over elements
        word |= lanes[:, j] << np.uint64(j * bits)
    out = word.astype("<u8").view(np.uint8).reshape(groups, 8)[:, :bits]
    return np.ascontiguousarray(out).reshape(-1)[: packed_nbytes(n, bits)]


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: the first `count` codes as uint8 (bits <= 8) or uint16."""
    _check_bits(bits)
    need = packed_nbytes(count, bits)
    buf = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    if buf.size != need:
        raise ArchiveError(f"packed codes hold {buf.size} bytes, expected {need} for {count} x {bits}-bit codes")
    if bits == 8:
        return buf.copy()
    if bits == 16:
        return buf.view("<u2").astype(np.uint16)
    if bits > 8:
        bitplanes = np.unpackbits(buf, bitorder="little")[: count * bits].reshape(count, bits)
        weights = (1 << np.arange(bits, dtype=np.uint32)).astype(np.uint32)
        return (bitplanes.astype(np.uint32) @ weights).astype(np.uint16)
    if bits == 4:
        out = np.empty(buf.size * 2, dtype=np.uint8)
        out[0::2] = buf & 0x0F
        out[1::2] = buf >> 4
        return out[:count]
    groups = -(-count // 8)
    stream = np.zeros(groups * bits, dtype=np.uint8)
    stream[: buf.size] = buf
    full = np.zeros((groups, 8), dtype=np.uint8)
    full[:, :bits] = stream.reshape(groups, bits)
    word = full.reshape(-1).view("<u8").astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((groups, 8), dtype=np.uint8)
    for j in range(8):
        out[:, j] = (word >> np.uint64(j * bits)) & mask
    return out.reshape(-1)[:count]
