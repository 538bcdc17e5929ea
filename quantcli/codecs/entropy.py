"""Order-0 entropy coder for integer codes: interleaved rANS with a per-array frequency table.

Why rANS and not a library: measured on MiniLM codes (docs/BENCHMARKS.md, section 7), zstd level 1
loses 5-37 % against the order-0 entropy at 2-7 bits/code, and constriction's ANS coder is exact
but decodes only 35-59 M codes/s (binary search over the CDF). This coder is within 0.35 % of the
empirical entropy and decodes at 360-470 M codes/s; the loops are numba kernels (kernels/rans.py,
imported when a stream is coded), checked bit for bit against numpy twins in tests/oracles/.

Stream (full spec in docs/FORMAT.md section 6.3): codes are symbols 0 <= s < alphabet <= 2**16. Symbol i goes
to lane i % lanes; each lane is a 64-bit rANS state in [2**32, 2**64) renormalised in 32-bit words,
with probabilities quantised to 16 bits (frequencies summing to 2**16). The bytes are
`table || final states (uint64 LE, one per lane) || words (uint32 LE, in decoding order)`.

Bounds: no frequency may exceed MAX_FREQ, so every code costs at least log2(64/63) bits and a
stream of W words and L lanes can hold at most MAX_CODES_PER_WORD * (W + L) codes: the decoder
rejects a declared count above that before allocating its output.
"""

from __future__ import annotations

import numpy as np

from .errors import CodecError

PRECISION = 16
TOTAL = 1 << PRECISION  # the quantised frequencies sum to this
STATE_LOW = 1 << 32  # lane states live in [STATE_LOW, 2**64)
MAX_ALPHABET = 1 << 16
MAX_FREQ = TOTAL - TOTAL // 64  # each code costs >= log2(64/63) ~ 0.0227 bits: bounds the ratio
# Each decoded code divides a state by >= (TOTAL/MAX_FREQ)/(1 + 2**-16); a lane starts below 2**64,
# ends at 2**32 and gains < 2**32 per word read, so codes <= 32 * (W + L) / 0.022698 < 1410 (W + L).
MAX_CODES_PER_WORD = 1410
CODES_PER_LANE = 1 << 15  # encoder's choice: 64 bits of final state per 32768 codes (0.002 bit/code)
MAX_TABLE_VALUE = 1 << 17  # table varints are < 2**17, so at most 3 bytes each


# ----------------------------------------------------------------------------- frequency table

def quantize_counts(counts: np.ndarray) -> np.ndarray:
    """Frequencies summing to TOTAL, >= 1 for every present symbol, none above MAX_FREQ.

    Integer arithmetic only, so every platform gets the same table: each present symbol gets
    1 + floor(count * (TOTAL - m) / n); the shortfall goes to the largest remainders (ties: lower
    symbol). With one present symbol its upper (or lower) neighbour is made present so the cap holds.
    """
    counts = np.asarray(counts, dtype=np.int64)
    present = counts > 0
    if np.count_nonzero(present) == 1:
        s = int(np.argmax(present))
        present[s + 1 if s + 1 < counts.size else s - 1] = True
    n = int(counts.sum())
    m = int(np.count_nonzero(present))
    scaled = counts * (TOTAL - m)
    freq = np.where(present, 1 + scaled // n, 0)
    rem = np.where(present, scaled % n, -1)
    short = TOTAL - int(freq.sum())
    if short:
        order = np.argsort(-rem, kind="stable")
        freq[order[:short]] += 1
    top = int(np.argmax(freq))
    if freq[top] > MAX_FREQ:
        excess = int(freq[top]) - MAX_FREQ
        freq[top] = MAX_FREQ
        rest = freq.copy()
        rest[top] = -1
        freq[int(np.argmax(rest))] += excess
    return freq.astype(np.uint32)


def _varint_encode(values: np.ndarray) -> bytes:
    """LEB128 (7 bits per byte, low group first, high bit = more follows) of values < 2**21."""
    v = np.asarray(values, dtype=np.int64)
    nb = 1 + (v >= 1 << 7) + (v >= 1 << 14)
    idx = np.repeat(np.arange(v.size), nb)
    pos = np.arange(idx.size) - np.repeat(np.cumsum(nb) - nb, nb)
    byte = (v[idx] >> (7 * pos)) & 0x7F
    more = pos < nb[idx] - 1
    return (byte | (more << 7)).astype(np.uint8).tobytes()


def _varint_decode(buf: np.ndarray) -> np.ndarray:
    """Inverse of _varint_encode; rejects truncated, overlong (> 3 bytes) or non-canonical input."""
    if buf.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = (buf & 0x80) == 0
    if not last[-1]:
        raise CodecError("frequency table ends inside a varint")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if np.any(ends - starts >= 3):
        raise CodecError("frequency table varint longer than 3 bytes")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    pos = np.arange(buf.size) - starts[group]
    vals = np.zeros(ends.size, dtype=np.int64)
    np.add.at(vals, group, (buf.astype(np.int64) & 0x7F) << (7 * pos))
    if _varint_encode(vals) != buf.tobytes():
        raise CodecError("frequency table varint is not canonical")
    return vals


def _table_bytes(freq: np.ndarray) -> bytes:
    """`lo, m, freq[lo], ..., freq[lo+m-1]` as varints: the span of symbols that occur."""
    nz = np.flatnonzero(freq)
    lo, hi = int(nz[0]), int(nz[-1])
    return _varint_encode(np.concatenate([[lo, hi - lo + 1], freq[lo : hi + 1]]))


def _parse_table(buf: np.ndarray, alphabet: int) -> np.ndarray:
    """The full-alphabet frequency array from table bytes, validated before use."""
    vals = _varint_decode(buf)
    if vals.size < 2:
        raise CodecError("frequency table too short")
    lo, m = int(vals[0]), int(vals[1])
    if m < 2 or lo + m > alphabet or vals.size != 2 + m:
        raise CodecError(f"frequency table span {lo}+{m} does not fit alphabet {alphabet} / table size")
    f = vals[2:]
    if int(f.sum()) != TOTAL or int(f.max()) > MAX_FREQ or f[0] == 0 or f[-1] == 0:
        raise CodecError("frequency table is not a valid 16-bit distribution")
    freq = np.zeros(alphabet, dtype=np.uint64)
    freq[lo : lo + m] = f
    return freq


# ----------------------------------------------------------------------------- kernels

def _kernels():
    """kernels/rans.py, imported on first use (it imports numba)."""
    from ..kernels import rans

    return rans


# ----------------------------------------------------------------------------- public API

def _check_alphabet(alphabet) -> int:
    if not isinstance(alphabet, (int, np.integer)) or isinstance(alphabet, bool) or not 2 <= alphabet <= MAX_ALPHABET:
        raise CodecError(f"alphabet must be an integer in 2..{MAX_ALPHABET}, got {alphabet!r}")
    return int(alphabet)


def output_dtype(alphabet: int) -> np.dtype:
    """uint8 for alphabets up to 256, else uint16."""
    return np.dtype(np.uint8 if alphabet <= 256 else np.uint16)


def encode(codes: np.ndarray, alphabet: int) -> tuple[bytes, dict]:
    """Entropy-code non-negative integer `codes` (any shape, each < alphabet) in C order.

    Returns (bytes, params); params = {"alphabet", "lanes", "table_nbytes"} is all the decoder
    needs besides the declared count. The bytes depend only on the codes and alphabet.
    """
    alphabet = _check_alphabet(alphabet)
    flat = np.ascontiguousarray(codes).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise CodecError(f"codes must be integers, got {flat.dtype}")
    n = flat.size
    if n == 0:
        return b"", {"alphabet": alphabet, "lanes": 0, "table_nbytes": 0}
    if int(flat.min()) < 0 or int(flat.max()) >= alphabet:
        raise CodecError(f"codes must lie in 0..{alphabet - 1}")
    sym = flat.astype(output_dtype(alphabet), copy=False)
    return encode_symbols(sym, alphabet, histogram(sym, alphabet))


def histogram(sym: np.ndarray, alphabet: int) -> np.ndarray:
    """Counts of each symbol (a kernel: np.bincount widens to int64 first)."""
    counts = np.zeros(alphabet, dtype=np.int64)
    if sym.size:
        _kernels().histogram(sym, counts)
    return counts


def encode_symbols(sym: np.ndarray, alphabet: int, counts: np.ndarray) -> tuple[bytes, dict]:
    """`encode` for a flat uint8/uint16 array already checked to lie below alphabet, with its counts."""
    n = sym.size
    freq = quantize_counts(counts).astype(np.uint64)
    cum = (np.cumsum(freq) - freq).astype(np.uint64)
    table = _table_bytes(freq)
    lanes = -(-n // CODES_PER_LANE)
    words = np.empty(n, dtype=np.uint32)
    states = np.empty(lanes, dtype=np.uint64)
    nw = _kernels().encode(sym, freq, cum, lanes, words, states)
    words = words[:nw][::-1]
    data = table + states.astype("<u8").tobytes() + words.astype("<u4").tobytes()
    return data, {"alphabet": alphabet, "lanes": lanes, "table_nbytes": len(table)}


def _params(params: dict) -> tuple[int, int, int]:
    if not isinstance(params, dict) or set(params) != {"alphabet", "lanes", "table_nbytes"}:
        raise CodecError("entropy params must be exactly {alphabet, lanes, table_nbytes}")
    alphabet = _check_alphabet(params["alphabet"])
    lanes, tnb = params["lanes"], params["table_nbytes"]
    for key, v in (("lanes", lanes), ("table_nbytes", tnb)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CodecError(f"entropy param {key} must be a non-negative integer, got {v!r}")
    return alphabet, lanes, tnb


def max_decoded_count(nbytes: int, params: dict) -> int:
    """The most codes `nbytes` of stream with these params can hold (the zip-bomb bound)."""
    _, lanes, tnb = _params(params)
    if lanes == 0:
        return 0
    return MAX_CODES_PER_WORD * (max(nbytes - tnb - 8 * lanes, 0) // 4 + lanes)


def decode(data, params: dict, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode exactly `count` codes (uint8 or uint16 by alphabet); CodecError on any mismatch.

    Everything is checked against the byte length before the output is allocated: lanes and
    table fit, the table is a valid distribution, and count <= MAX_CODES_PER_WORD * (words + lanes).
    """
    alphabet, lanes, tnb = _params(params)
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise CodecError(f"declared count must be a non-negative integer, got {count!r}")
    count = int(count)
    if lanes == 0 or count == 0:
        if lanes or tnb or buf.size or count:
            raise CodecError("empty entropy stream must have no lanes, no table, no bytes and count 0")
        return np.zeros(0, dtype=output_dtype(alphabet))
    if lanes > count:
        raise CodecError(f"{lanes} lanes for {count} codes")
    body = buf.size - tnb - 8 * lanes
    if tnb > 3 * (2 + alphabet) or body < 0 or body % 4:
        raise CodecError(f"entropy stream of {buf.size} bytes does not fit {lanes} lanes and a {tnb}-byte table")
    if count > max_decoded_count(buf.size, params):
        raise CodecError(f"declared count {count} exceeds what {buf.size} bytes can hold")
    freq = _parse_table(buf[:tnb], alphabet)
    cum = (np.cumsum(freq) - freq).astype(np.uint64)
    states = buf[tnb : tnb + 8 * lanes].view("<u8").astype(np.uint64)
    if np.any(states < np.uint64(STATE_LOW)):
        raise CodecError("entropy lane state below 2**32")
    words = np.empty(body // 4 + 1, dtype=np.uint32)  # one spare 0 word: see kernels/rans.decode_step
    words[:-1] = buf[tnb + 8 * lanes :].view("<u4")
    words[-1] = 0
    dt = output_dtype(alphabet)
    f = freq.astype(np.int64)
    slot2sym = np.repeat(np.arange(alphabet, dtype=dt), f)
    if out is None:
        out = np.empty(count, dtype=dt)
    elif out.dtype != dt or out.shape != (count,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {dt} array of {count} elements")
    status = _kernels().decode(words, states, freq, cum, slot2sym, out)
    if status == 1:
        raise CodecError("entropy stream ends early")
    if status == 2:
        raise CodecError("entropy stream does not end where the declared count says")
    return out


def size_bound(counts: np.ndarray) -> int:
    """An upper bound of len(encode(codes)) for codes with this histogram, without encoding.

    The table's bytes are exact (it depends on the counts alone) and so are the lanes' final
    states; each lane starts at 2**32 and ends in [2**32, 2**64), and encoding a symbol of
    quantised frequency f multiplies the state by at most (TOTAL / f) (1 + f / 2**32), so a
    lane emits at most its sum of log2(TOTAL / f) (1 + 2**-16 slack) / 32 words."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return 0
    freq = quantize_counts(counts).astype(np.float64)
    present = counts > 0
    bits = float(np.sum(counts[present] * (PRECISION - np.log2(freq[present])))) + n * 2.2014e-5
    lanes = -(-n // CODES_PER_LANE)
    words = int(bits // 32) + lanes  # + one per lane for floating-point slack in the sum
    return table_nbytes(counts) + 8 * lanes + 4 * words


def table_nbytes(counts: np.ndarray) -> int:
    """Bytes of the frequency table `encode` writes for codes with this histogram (exact)."""
    return len(_table_bytes(quantize_counts(np.asarray(counts, dtype=np.int64))))

