"""Context-modelled rANS for the codes of a matrix (codec `crans`): ecsq's entropy coder.

Why: measured on all-MiniLM-L6-v2 (docs/STUDY-ecsq.md, docs/BENCHMARKS-dq.md), an order-0 table
per tensor leaves two things on the table: the codes of a DQ trellis have a different distribution
under each of its two quantizers, and rows differ in scale. Both are contexts the decoder can
compute from codes it already decoded, so they cost no side information:
  - the quantizer of the DQ state (the VVC / NNC 4-state machine on the parity of each code);
  - a bucket of the mean |code| of the row so far (a backward-adaptive row scale).
Every context has its own frequency table at its own precision P (6..16 bits, chosen per context by
the total of table bits and code bits), sent as Elias-gamma codes of zig-zag deltas, so the many
small tables of a tensor cost a few bytes each.

Stream (full spec in docs/FORMAT.md section 6.6), codes k = code + offset of a [rows, cols] matrix
in column-major order (column 0's rows, then column 1's ...), code i in lane i mod L (L <= rows, so
every code's context is known when a vectorised decoder reaches it):
    header  u8 flags (bit 0: split by DQ quantizer), u8 rho, u8 buckets B, u8 base,
            varints: alphabet K, zig-zag offset, lanes L, table bytes T
    tables  T bytes, a little-endian bit stream: per context, 4 bits P - 6 (15: context unused),
            then gamma(lo + 1), gamma(m), and m gamma(zigzag(f_i - f_{i-1}) + 1)
    states  L uint64;  words  uint32 in decoding order
A lane's state lives in [2**32, 2**64); a context of precision P codes with frequencies summing to
2**P (rANS allows a different power of two per symbol as long as it divides 2**32).

The coding loops are numba kernels (kernels/crans.py, on the rANS core and DQ state machine of
kernels/rans.py and kernels/dq.py), imported when a stream is coded; tests/oracles/crans.py holds
the numpy twins they must match bit for bit.

Bounds: frequencies are capped at 2**P - 2**(P-6), so each code costs >= log2(64/63) bits and
n <= 1410 (W + L) as for `rans` (entropy.MAX_CODES_PER_WORD); checked before allocating. The
decoder's tables are as large as the stream and the output need, never [contexts, alphabet]:
one entry per symbol of each used context's span (each costs a table bit), and slot tables of
at most 8 (n + 64 u) entries for u used contexts (the encoder's cap on 2**P, max_slots), checked
before they are built.
"""

from __future__ import annotations

import numpy as np

from . import entropy
from .errors import CodecError

MIN_P, MAX_P = 6, 16
UNUSED = 15  # P code of a context no code uses
SUM_CAP = 1 << 40  # row sums of |k| saturate here (no overflow for any shape)
MAX_BUCKETS = 32
MAX_OFFSET = 1 << 24
CODES_PER_LANE = 1 << 17  # encoder's choice: 8 bytes of final state per 131072 codes,
MIN_LANES = 8  # and up to 8 lanes (one per 4096 codes, as rows allow): independent chains keep the kernels fast
HEADER_MIN = 8


# ----------------------------------------------------------------------------- contexts

def _level(s: np.ndarray, j: int | np.ndarray, rho: int) -> np.ndarray:
    """Integer log2 of the mean |k| so far, 2**rho steps an octave: with v = 16 S // j + 16,
    e = floor(log2 v), level = (e - 4) 2**rho + the rho bits of v after its leading one."""
    v = (16 * np.asarray(s, np.int64)) // np.maximum(j, 1) + 16
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # exact: v < 2**45
    return (e - 4) * (1 << rho) + ((v >> (e - rho)) & ((1 << rho) - 1))


def bucket(s: np.ndarray, j: int | np.ndarray, rho: int, buckets: int, base: int) -> np.ndarray:
    """Row-scale bucket of a code in column j with row sum s of |k| before it: 0 in column 0 or
    with one bucket, else 1 + clip(level - base, 0, buckets - 2)."""
    if buckets == 1:
        return np.zeros(np.shape(s), np.int64)
    b = 1 + np.clip(_level(s, j, rho) - base, 0, buckets - 2)
    return np.where(np.asarray(j) == 0, 0, b)


def row_state(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row sums of |k| before each code, saturating at SUM_CAP; the quantizer of each code's DQ
    state) for codes k [rows, cols] with the offset applied."""
    a = np.minimum(np.abs(k), SUM_CAP)
    s = np.minimum(np.cumsum(a, axis=1, dtype=np.int64) - a, SUM_CAP)
    return s, _quantizers(k)


def contexts(k: np.ndarray, cfg: tuple[int, int, int, int],
             state: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """int64 [rows, cols]: the context of each code k (with offset applied) under
    cfg = (split, rho, buckets, base): bucket * 2 + quantizer when split, else bucket."""
    split, rho, buckets, base = cfg
    s, q = state if state is not None else row_state(k)
    ctx = bucket(s, np.arange(k.shape[1])[None, :], rho, buckets, base)
    return 2 * ctx + q if split else ctx


def _quantizers(k: np.ndarray) -> np.ndarray:
    """The quantizer (state >> 1) each code of each row was coded under, rows starting in state 0
    (the one DQ state machine: kernels/dq.py)."""
    from ..kernels import dq

    k = np.ascontiguousarray(k)
    st = np.empty(k.shape, np.int8)
    if k.size:
        dq.states(k, st)
    return (st >> 1).astype(np.int64)


def n_contexts(split: int, buckets: int) -> int:
    return buckets * (2 if split else 1)


# ----------------------------------------------------------------------------- tables

def _gamma_len(v: np.ndarray) -> np.ndarray:
    return 2 * (np.frexp(np.asarray(v, np.float64))[1].astype(np.int64) - 1) + 1


def _zigzag(d: np.ndarray) -> np.ndarray:
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def quantize_counts_p(counts: np.ndarray, p: int) -> np.ndarray | None:
    """Frequencies summing to 2**p (entropy.quantize_counts' rule at precision p), or None when
    the present symbols do not fit (more than 2**(p-1) of them)."""
    counts = np.asarray(counts, np.int64)
    total = 1 << p
    cap = total - (total >> 6)
    present = counts > 0
    if np.count_nonzero(present) == 1:
        s = int(np.argmax(present))
        present[s + 1 if s + 1 < counts.size else s - 1] = True
    n, m = int(counts.sum()), int(np.count_nonzero(present))
    if 2 * m > total:
        return None
    scaled = counts * (total - m)
    freq = np.where(present, 1 + scaled // n, 0)
    short = total - int(freq.sum())
    if short:
        rem = np.where(present, scaled % n, -1)
        freq[np.argsort(-rem, kind="stable")[:short]] += 1
    top = int(np.argmax(freq))
    if freq[top] > cap:
        excess = int(freq[top]) - cap
        freq[top] = cap
        rest = freq.copy()
        rest[top] = -1
        freq[int(np.argmax(rest))] += excess
    return freq


def _table_bits(freq: np.ndarray) -> int:
    """Bits of one used context's table entry (P code included) for its frequency array."""
    nz = np.flatnonzero(freq)
    lo, hi = int(nz[0]), int(nz[-1])
    f = freq[lo:hi + 1]
    d = np.diff(f, prepend=0)
    return 4 + int(_gamma_len(np.array([lo + 1, hi - lo + 1])).sum() + _gamma_len(_zigzag(d) + 1).sum())


def max_slots(n: int) -> int:
    """The largest 2**P a context of n codes may use (the encoder's rule, which bounds the
    decoder's slot tables by the output: 8 (n + 64) slots per used context at most). On MiniLM
    and synthetic codes the best P never came near it (2**P <= 3.4 max(n, 64))."""
    return 8 * max(n, 64)


def max_total_slots(n: int, used: int) -> int:
    """The most slots `used` contexts holding n codes in all can declare under max_slots."""
    return 8 * (n + 64 * used)


def choose_table(counts: np.ndarray) -> tuple[int, np.ndarray | None, float]:
    """(P, frequencies, estimated bits of table + codes), P (near-)minimising that total with
    2**P <= max_slots(n); (UNUSED, None, 4) for a context with no codes."""
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    if n == 0:
        return UNUSED, None, 4.0
    present = counts > 0
    seen: dict[int, tuple[int, np.ndarray | None, float]] = {}

    def cost(p: int) -> tuple[int, np.ndarray | None, float]:
        if p not in seen:
            f = quantize_counts_p(counts, p) if MIN_P <= p <= MAX_P and 1 << p <= max_slots(n) else None
            bits = np.inf if f is None else \
                float(np.sum(counts[present] * (p - np.log2(f[present])))) + _table_bits(f)
            seen[p] = (p, f, bits)
        return seen[p]

    # the total is close to convex in P: walk from a guess while it improves
    p = int(min(MAX_P, max(MIN_P, round(0.5 * np.log2(n) + 3))))
    while cost(p)[2] == np.inf and p < MAX_P:
        p += 1
    for d in (1, -1):
        while cost(p + d)[2] < cost(p)[2]:
            p += d
    return cost(p)


class BitWriter:
    """Little-endian bit stream (bit i is bit i % 8 of byte i // 8), as the packed codes."""

    def __init__(self) -> None:
        self.bits: list[np.ndarray] = []

    def put(self, value: int, nbits: int) -> None:
        self.bits.append((value >> np.arange(nbits)) & 1)

    def gamma(self, values: np.ndarray) -> None:
        """Elias gamma of each v >= 1: floor(log2 v) zeros, then v's bits from the top."""
        v = np.asarray(values, np.int64)
        e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1
        width = 2 * e + 1
        owner = np.repeat(np.arange(v.size), width)
        pos = np.arange(owner.size) - np.repeat(np.cumsum(width) - width, width)  # bit index in its code
        shift = 2 * e[owner] - pos  # the value bits, top first, after e zeros
        self.bits.append(np.where(pos < e[owner], 0, (v[owner] >> np.maximum(shift, 0)) & 1))

    def tobytes(self) -> bytes:
        b = np.concatenate(self.bits) if self.bits else np.zeros(0, np.int64)
        return np.packbits(b.astype(np.uint8), bitorder="little").tobytes()


def _tables_bytes(tables: list[tuple[int, np.ndarray | None]]) -> bytes:
    w = BitWriter()
    for p, f in tables:
        if f is None:
            w.put(UNUSED, 4)
            continue
        w.put(p - MIN_P, 4)
        nz = np.flatnonzero(f)
        lo, hi = int(nz[0]), int(nz[-1])
        w.gamma(np.array([lo + 1, hi - lo + 1]))
        w.gamma(_zigzag(np.diff(f[lo:hi + 1], prepend=0)) + 1)
    return w.tobytes()


# ----------------------------------------------------------------------------- encoder

def fits(nctx: int, alphabet: int, n: int) -> bool:
    """The allocation rule a decoder enforces: nctx * alphabet <= 64 n + 2**17 table entries."""
    return nctx * alphabet <= 64 * n + (1 << 17)


def candidate_configs(k: np.ndarray, split_ok: bool, alphabet: int, n: int) -> list[tuple[int, int, int, int]]:
    """Context layouts the encoder tries: quantizer split or not, and 1, 4, 8, 14 or 20 row-scale
    buckets (4 an octave) placed around the tensor's mean |k| (and half an octave either side)."""
    mean = float(np.mean(np.abs(k))) if k.size else 0.0
    mid = int(_level(np.array([int(mean * 1024)]), 1024, 2)[0])
    out = []
    for split in ((0, 1) if split_ok else (0,)):
        out.append((split, 2, 1, 0))
        for b in (4, 8, 14, 20) if k.shape[1] > 1 else ():
            if fits(n_contexts(split, b), alphabet, n):
                out.extend((split, 2, b, max(0, min(255, mid - (b - 2) // 2 + d))) for d in (-2, 0, 2))
    return sorted(set(out))


def _estimate(counts: np.ndarray, scale: float) -> float:
    """Bits of one context's codes and table for counts measured on a sample `scale` times smaller
    than the tensor: order-0 entropy plus the table cost choose_table pays, as fitted on MiniLM's
    contexts (1.55 m log2(n/m) - 5.06 m + 62 bits for m symbols among n codes; within ~11 %)."""
    c = counts[counts > 0].astype(np.float64)
    if c.size == 0:
        return 4.0
    n = c.sum()
    m = c.size
    table = max(8.0 * m, 1.55 * m * np.log2(max(n * scale / m, 1.0)) - 5.06 * m + 62)
    return scale * float(-(c * np.log2(c / n)).sum()) + table


def choose_config(codes: np.ndarray, alphabet: int, offset: int, dq: bool) -> tuple[int, int, int, int]:
    """The layout with the fewest estimated bits, measured on evenly spaced rows (about 2**16 codes)."""
    step = -(-codes.size // (1 << 16))
    sample = codes[::step]
    scale = codes.size / sample.size
    kk = sample.astype(np.int64) + offset
    a = np.minimum(np.abs(kk), SUM_CAP)
    j = np.arange(kk.shape[1])[None, :]
    lev = _level(np.minimum(np.cumsum(a, axis=1) - a, SUM_CAP), j, 2)
    q = _quantizers(kk) if dq else np.zeros_like(kk)
    best = None
    for cfg in candidate_configs(kk, dq, alphabet, codes.size):
        split, _, buckets, base = cfg
        nctx = n_contexts(split, buckets)
        ctx = np.where(j == 0, 0, 1 + np.clip(lev - base, 0, buckets - 2)) if buckets > 1 else np.zeros_like(kk)
        if split:
            ctx = 2 * ctx + q
        cnt = np.bincount((ctx * alphabet + sample).ravel(), minlength=nctx * alphabet)
        bits = sum(_estimate(c, scale) for c in cnt.reshape(nctx, alphabet))
        if best is None or bits < best[0]:
            best = (bits, cfg)
    assert best is not None
    return best[1]


def encode(codes: np.ndarray, alphabet: int, offset: int = 0, dq: bool = False) -> bytes:
    """The `crans` stream of 2-D codes (0 <= code < alphabet, k = code + offset); `dq`: the codes
    come from the DQ trellis, so the quantizer split is among the layouts tried."""
    codes = np.ascontiguousarray(codes)
    if codes.ndim != 2 or codes.size == 0:
        raise CodecError("crans codes must be 2-D [rows, cols] with at least one code")
    alphabet = entropy._check_alphabet(alphabet)
    if not -MAX_OFFSET <= offset <= MAX_OFFSET:
        raise CodecError(f"offset {offset} beyond +-2**24")
    if int(codes.min()) < 0 or int(codes.max()) >= alphabet:
        raise CodecError(f"codes must lie in 0..{alphabet - 1}")
    rows, cols = codes.shape
    n = codes.size
    cfg = choose_config(codes, alphabet, offset, dq)
    split, rho, buckets, base = cfg
    nctx = n_contexts(split, buckets)
    from ..kernels import crans

    sym = np.ascontiguousarray(codes.T)  # column-major: the coding order
    cnt = np.zeros((nctx, alphabet), np.int64)
    ctx = np.empty(n, np.uint8)
    crans.walk(sym, offset, split, rho, buckets, base, ctx, cnt)
    sym = sym.reshape(-1)
    freq = np.zeros((nctx, alphabet), np.uint64)
    prec = np.zeros(nctx, np.int64)
    tables = []
    for c in range(nctx):
        p, f, _ = choose_table(cnt[c])
        tables.append((p, f))
        if f is not None:
            freq[c] = f
            prec[c] = p
    cum = (np.cumsum(freq, axis=1) - freq).astype(np.uint64)
    tbytes = _tables_bytes(tables)
    lanes = min(rows, max(min(MIN_LANES, -(-n // 4096)), -(-n // CODES_PER_LANE)))
    words = np.empty(n + lanes, np.uint32)
    states = np.empty(lanes, np.uint64)
    nw = crans.encode(sym, ctx, freq, cum, prec, lanes, words, states)
    words = words[:nw][::-1]
    zz = 2 * offset if offset >= 0 else -2 * offset - 1
    head = bytes([split, rho, buckets, base]) + b"".join(_uleb(v) for v in (alphabet - 1, zz, lanes, len(tbytes)))
    return head + tbytes + states.astype("<u8").tobytes() + words.astype("<u4").tobytes()


def _uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


# ----------------------------------------------------------------------------- decoder

def _varints(buf: np.ndarray, start: int, count: int) -> tuple[list[int], int]:
    """`count` canonical LEB128 varints (<= 4 bytes each) from buf[start:], and the position after."""
    out, pos = [], start
    for _ in range(count):
        end = pos
        while end < buf.size and end - pos < 3 and buf[end] & 0x80:
            end += 1
        if end >= buf.size or buf[end] & 0x80:
            raise CodecError("crans header ends inside a varint or has one longer than 4 bytes")
        v = 0
        for b in buf[pos:end + 1][::-1].tolist():
            v = (v << 7) | (b & 0x7F)
        if _uleb(v) != buf[pos:end + 1].tobytes():
            raise CodecError("crans header varint is not canonical")
        out.append(v)
        pos = end + 1
    return out, pos


def parse_header(buf: np.ndarray) -> tuple[tuple[int, int, int, int], int, int, int, int, int]:
    """(cfg, alphabet, offset, lanes, table bytes, header bytes) of a stream, validated."""
    if buf.size < HEADER_MIN:
        raise CodecError("crans stream shorter than its header")
    split, rho, buckets, base = (int(v) for v in buf[:4])
    if split > 1 or rho > 3 or not 1 <= buckets <= MAX_BUCKETS:
        raise CodecError(f"crans layout ({split}, {rho}, {buckets}) out of range")
    (am1, zz, lanes, tnb), pos = _varints(buf, 4, 4)
    alphabet = am1 + 1
    offset = zz >> 1 if zz % 2 == 0 else -((zz + 1) >> 1)
    if not 2 <= alphabet <= entropy.MAX_ALPHABET or abs(offset) > MAX_OFFSET:
        raise CodecError(f"crans alphabet {alphabet} or offset {offset} out of range")
    return (split, rho, buckets, base), alphabet, offset, lanes, tnb, pos


def max_decoded_count(nbytes: int) -> int:
    """The most codes any `crans` stream of nbytes can hold (from the length alone): n <= 1410
    (W + L) and each lane's 8 bytes of state are at least one word's 4."""
    return entropy.MAX_CODES_PER_WORD * (max(nbytes - HEADER_MIN, 0) // 4)


_TABLE_ERRORS = ("frequency tables end early", "table precision out of range", "table span does not fit the "
                 "alphabet", "table is not a valid distribution", "table bits left over")
_STREAM_ERRORS = ("entropy stream ends early", "entropy stream does not end where the declared count says",
                  "a code falls in a context with no table")


def decode(data, rows: int, cols: int) -> np.ndarray:
    """Codes [rows, cols] (uint8 or uint16 by alphabet) of a stream; CodecError on any mismatch.
    Everything is checked against the byte length before the output is allocated."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = rows * cols
    if n == 0:
        raise CodecError("crans stores at least one code")
    cfg, alphabet, offset, lanes, tnb, pos = parse_header(buf)
    split, rho, buckets, base = cfg
    body = buf.size - pos - tnb - 8 * lanes
    if not 1 <= lanes <= rows or body < 0 or body % 4:
        raise CodecError(f"crans stream of {buf.size} bytes does not fit {lanes} lanes and a {tnb}-byte table")
    if n > entropy.MAX_CODES_PER_WORD * (body // 4 + lanes):
        raise CodecError(f"declared count {n} exceeds what {buf.size} bytes can hold")
    nctx = n_contexts(split, buckets)
    if not fits(nctx, alphabet, n):
        raise CodecError(f"{nctx} contexts of alphabet {alphabet} exceed what {n} codes justify")
    bits = np.unpackbits(buf[pos:pos + tnb], bitorder="little")
    prec, lo, span = np.zeros(nctx, np.int64), np.zeros(nctx, np.int64), np.zeros(nctx, np.int64)
    freq = np.empty(bits.size, np.int32)  # each frequency costs >= 1 bit: the spans fit, whatever they say
    from ..kernels import crans

    status, nf = crans.tables(bits, nctx, alphabet, prec, lo, span, freq)
    if status:
        raise CodecError(_TABLE_ERRORS[status - 1])
    width = np.where(prec > 0, 1 << prec, 0)
    if int(width.sum()) > max_total_slots(n, int(np.count_nonzero(prec))):
        raise CodecError(f"table precisions declare {int(width.sum())} slots, more than {n} codes justify")
    pos += tnb
    states = buf[pos:pos + 8 * lanes].view("<u8").astype(np.uint64)
    if np.any(states < np.uint64(1 << 32)):
        raise CodecError("entropy lane state below 2**32")
    words = np.empty(body // 4 + 1, np.uint32)
    words[:-1] = buf[pos + 8 * lanes:].view("<u4")
    words[-1] = 0
    dt = entropy.output_dtype(alphabet)
    # Sparse tables, sized by the spans and slots the stream declares (both bounded above), never
    # [contexts, alphabet]: symbol s of context c is entry fbase[c] + s of the flat arrays, and each
    # context's slots follow the previous ones' (start), as its frequencies (summing to 2**P) do;
    # a slot maps to its entry (uint16 unless the spans hold more than 2**16 entries).
    f = freq[:nf].astype(np.int64)
    fstart = np.cumsum(span) - span
    fbase = fstart - lo
    start = np.cumsum(width) - width
    gcum = np.cumsum(f) - f  # = start[c] + the cumulative frequency inside context c
    slot2idx = np.repeat(np.arange(nf, dtype=np.uint16 if nf <= 1 << 16 else np.int32), f)
    fc = (f | ((gcum - np.repeat(start, span)) << 16)).astype(np.uint32)  # both < 2**16: one load
    out = np.empty((rows, cols), dt)
    status = crans.decode(words, states, fc, fbase, prec, slot2idx, start, offset, split, rho, buckets, base, out)
    if status:
        raise CodecError(_STREAM_ERRORS[status - 1])
    return out
