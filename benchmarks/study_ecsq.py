"""ECSQ feasibility study on all-MiniLM-L6-v2's 40 2-D float tensors (22,682,112 weights).

Every figure is an ideal code length (benchmarks/ecsq_core.py) plus side info, over all 40 tensors;
SQNR is over all of them together; cosine is the mean cosine of the 301 sentences of
sentences_eval.txt embedded with the quantized vs the float weights (benchmarks/minilm.py).
Results are written up in docs/STUDY-ecsq.md.

    python benchmarks/study_ecsq.py --part a        # a b c d e cos time (several may be given)
    python benchmarks/study_ecsq.py --part e --json /tmp/e.json

Parts: a one global step, plain rounding (global vs per-tensor tables, three coder cost models);
b per-tensor steps (Lagrangian MSE allocation vs one step; steps proportional to RMS);
c RDOQ with lambda = c step^2; d context models on the codes of a and c; e dependent (trellis)
quantization; cos embedding cosine at 2.5/3.5/4.5 bpw, relative vs MSE allocation and finer or
coarser word embeddings; time encode time per MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ecsq_core as E  # noqa: E402
import minilm  # noqa: E402

TARGETS_DB = (41.2, 27.0, 20.9, 14.6)
TARGETS_BPW = (2.5, 3.5, 4.5)
NNCODEC = {41.2: 6.93, 27.0: 4.5, 20.9: 3.5, 14.6: 2.5}  # bpw NNCodec needs for about these SQNRs
LADDER = 0.0011 * 2.0 ** (np.arange(0, 19) / 3)  # global steps, 0.0011 .. 0.07
SIDE_BITS = 64  # per tensor: its step (float32) and its code range (2 x int16)
WORD = "embeddings.word_embeddings.weight"
POOLER = "pooler.dense.weight"  # unused by sentence-transformers' mean pooling


def tensors() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(all weights, the 40 2-D float tensors)."""
    w = minilm.load_weights()
    return w, {n: a for n, a in w.items() if a.ndim == 2 and a.dtype == np.float32}


def prev_ctx(q: np.ndarray) -> np.ndarray:
    """Context of each code: min(|previous code in its row|, 2); the first of a row has 0."""
    c = np.zeros(q.shape, np.int64)
    c[:, 1:] = np.minimum(np.abs(q[:, :-1]), 2)
    return c


def row_ctx(x: np.ndarray) -> np.ndarray:
    """Context of each code: the quartile of its row's RMS within the tensor (2 bits a row to send)."""
    rms = np.sqrt((x.astype(np.float64) ** 2).mean(1))
    cls = np.searchsorted(np.quantile(rms, [0.25, 0.5, 0.75]), rms)
    return np.broadcast_to(cls[:, None], x.shape)


def rates(x: np.ndarray, q: np.ndarray, base_ctx: np.ndarray | None = None, n_base: int = 1,
          models: tuple[str, ...] | None = None) -> dict[str, float]:
    """Bits of one tensor's codes under each cost model (all, or those named): order-0 entropy (free
    table), static coder (entropy + table), adaptive KT coder, and adaptive with neighbour / row-scale
    / both contexts (row scale classes cost 2 bits a row). base_ctx (e.g. the DQ quantizer of each
    code) is crossed with every context."""
    base = np.zeros(q.shape, np.int64) if base_ctx is None else base_ctx.astype(np.int64)
    want = set(models or ("h0", "static", "kt", "kt_prev", "kt_row", "kt_prev_row"))
    out = {}
    if want & {"h0", "static", "kt"}:
        c0 = E.context_counts(q, base, n_base)
        out.update({"h0": E.entropy_bits(c0), "static": E.entropy_bits(c0) + E.static_table_bits(c0),
                    "kt": E.adaptive_bits(c0)})
    if want & {"kt_prev", "kt_prev_row"}:
        pc = prev_ctx(q)
        out["kt_prev"] = E.adaptive_bits(E.context_counts(q, base * 3 + pc, n_base * 3))
    if want & {"kt_row", "kt_prev_row"}:
        rc = row_ctx(x)
        out["kt_row"] = E.adaptive_bits(E.context_counts(q, base * 4 + rc, n_base * 4)) + 2 * x.shape[0]
    if "kt_prev_row" in want:
        out["kt_prev_row"] = (E.adaptive_bits(E.context_counts(q, (base * 3 + pc) * 4 + rc, n_base * 12))
                              + 2 * x.shape[0])
    return {k: v + SIDE_BITS for k, v in out.items() if k in want}


def point(mats: dict[str, np.ndarray], quantize, steps: dict[str, float], keep_recon: bool = False,
          models: tuple[str, ...] | None = None):
    """Quantize every tensor with quantize(x, step) -> (codes, recon, base_ctx, n_base); return
    (bits by cost model summed over tensors, error energy, recon by name or None)."""
    bits: dict[str, float] = {}
    err = 0.0
    recon = {} if keep_recon else None
    for name, x in mats.items():
        q, xh, base, nb = quantize(x, steps[name])
        for k, v in rates(x, q, base, nb, models).items():
            bits[k] = bits.get(k, 0.0) + v
        err += float(((x.astype(np.float64) - xh) ** 2).sum())
        if keep_recon:
            recon[name] = xh.astype(np.float32)
    return bits, err, recon


def plain(x, step):
    q = E.round_codes(x, step)
    return q, q * np.float32(step), None, 1


def rdoq_with(c):
    def f(x, step):
        q = E.rdoq(x, step, c)
        return q, q * np.float32(step), None, 1
    return f


def dq_with(c, passes=3):
    def f(x, step):
        tall = x.shape[1] > x.shape[0]  # the trellis runs along the shorter side: fewer Python steps
        xs = x.T if tall else x
        k, rec = E.dq_quantize(np.ascontiguousarray(xs), step, c, passes)
        qz = E.QUANTIZER[E.dq_states(k)]
        xh = rec * np.float32(step)
        return (k.T, xh.T, qz.T, 2) if tall else (k, xh, qz, 2)
    return f


class Study:
    def __init__(self):
        self.w, self.mats = tensors()
        self.n = sum(a.size for a in self.mats.values())
        self.energy = sum(float((a.astype(np.float64) ** 2).sum()) for a in self.mats.values())
        self.rms = float(np.sqrt(self.energy / self.n))  # relative steps are g * tensor RMS / this
        self.out: dict = {}

    def steps(self, g: float, rel: bool = False, factors: dict[str, float] | None = None) -> dict[str, float]:
        """Per-tensor steps: g everywhere, or g * RMS (rel), times optional per-tensor factors."""
        f = factors or {}
        return {n: g * (float(np.sqrt((a.astype(np.float64) ** 2).mean())) / self.rms if rel else 1.0) * f.get(n, 1.0)
                for n, a in self.mats.items()}

    def curve(self, quantize, ladder=LADDER, rel=False, factors=None, label=""):
        """Rows (step, SQNR, bpw by cost model) over a ladder of global steps."""
        rows = []
        for g in ladder:
            t0 = time.perf_counter()
            bits, err, _ = point(self.mats, quantize, self.steps(g, rel, factors))
            rows.append({"step": float(g), "sqnr": E.sqnr_db(self.energy, err),
                         **{k: v / self.n for k, v in bits.items()}})
            print(f"  {label} step {g:.5f}: {rows[-1]['sqnr']:6.2f} dB  kt {rows[-1]['kt']:.3f} bpw "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return rows

    @staticmethod
    def bpw_at(rows, db, model="kt"):
        s = np.array([r["sqnr"] for r in rows])
        b = np.array([r[model] for r in rows])
        o = np.argsort(s)
        if not s.min() <= db <= s.max():
            return float("nan")
        return float(np.interp(db, s[o], b[o]))

    @staticmethod
    def step_at(rows, bpw, model="kt"):
        """Global step giving bpw, interpolated in log step."""
        b = np.array([r[model] for r in rows])
        g = np.log(np.array([r["step"] for r in rows]))
        o = np.argsort(b)
        return float(np.exp(np.interp(bpw, b[o], g[o])))

    def table(self, title, curves: dict[str, list], models=("kt",)):
        print(f"\n### {title}\n")
        print("| variant | cost model | " + " | ".join(f"bpw @ {d} dB" for d in TARGETS_DB) + " |")
        print("|---|---|" + "---|" * len(TARGETS_DB))
        print("| NNCodec (anchor) | archive | " + " | ".join(f"{NNCODEC[d]:.2f}" for d in TARGETS_DB) + " |")
        for name, rows in curves.items():
            for m in models:
                print(f"| {name} | {m} | " + " | ".join(f"{self.bpw_at(rows, d, m):.3f}" for d in TARGETS_DB) + " |")
        sys.stdout.flush()

    # ------------------------------------------------------------------ parts

    def part_a(self):
        rows = self.curve(plain, label="a")
        # one table over all tensors (the "one global step" hint): codes of all tensors pooled
        for r in rows:
            codes = np.concatenate([E.round_codes(a, r["step"]).ravel() for a in self.mats.values()])
            cnt = E.context_counts(codes)
            r["h0_global"] = (E.entropy_bits(cnt) + 64) / self.n
            r["kt_global"] = (E.adaptive_bits(cnt) + 64) / self.n
        self.out["a"] = rows
        self.table("(a) one global step, plain rounding", {"global step": rows},
                   ("h0_global", "kt_global", "h0", "static", "kt"))

    def part_b(self):
        """Per-tensor Lagrangian allocation on per-tensor RD points of a fine ladder."""
        fine = 0.0011 * 2.0 ** (np.arange(0, 37) / 6)
        names = list(self.mats)
        bits = np.zeros((len(names), len(fine)))
        err = np.zeros_like(bits)
        for i, n in enumerate(names):
            x = self.mats[n]
            for j, g in enumerate(fine):
                q = E.round_codes(x, g)
                bits[i, j] = E.adaptive_bits(E.context_counts(q)) + SIDE_BITS
                err[i, j] = float(((x.astype(np.float64) - q * g) ** 2).sum())
        rows = []
        for lam in np.geomspace(1e-9, 1e-3, 200):  # error energy per bit
            pick = (err + lam * bits).argmin(1)
            tb, te = bits[np.arange(len(names)), pick].sum(), err[np.arange(len(names)), pick].sum()
            rows.append({"step": float(lam), "sqnr": E.sqnr_db(self.energy, te), "kt": tb / self.n,
                         "spread": float(np.ptp(np.log2(fine[pick])))})
        same = [{"step": float(g), "sqnr": E.sqnr_db(self.energy, err[:, j].sum()), "kt": bits[:, j].sum() / self.n}
                for j, g in enumerate(fine)]
        rel = self.curve(plain, ladder=fine[::2], rel=True, label="b-rel")
        self.out["b"] = {"lagrangian": rows, "same": same, "rel": rel}
        self.table("(b) per-tensor steps (plain rounding, adaptive per-tensor coder)",
                   {"one step (fine ladder)": same, "Lagrangian per-tensor steps": rows,
                    "steps proportional to RMS": rel})
        for d in TARGETS_DB:
            r = min(rows, key=lambda r: abs(r["sqnr"] - d))
            print(f"- at {d} dB the Lagrangian steps span {r['spread']:.2f} octaves (log2 max/min step)")

    def part_c(self, cs=(0.05, 0.1, 0.15, 0.2, 0.3)):
        curves = {"plain": self.out.get("a") or self.curve(plain, label="c0")}
        for c in cs:
            curves[f"RDOQ c={c}"] = self.curve(rdoq_with(c), label=f"c{c}")
        self.out["c"] = curves
        self.table("(c) RDOQ, lambda = c step^2, 3 passes, order-0 per-tensor model", curves, ("kt",))

    def part_d(self):
        curves = {k: v for k, v in (self.out.get("c") or {}).items()}
        if not curves:
            curves = {"plain": self.curve(plain, label="d0"), "RDOQ c=0.1": self.curve(rdoq_with(0.1), label="d1")}
        self.table("(d) context models (adaptive coder) on the codes of (a) and (c)", curves,
                   ("kt", "kt_prev", "kt_row", "kt_prev_row"))

    def part_e(self, cs=(0.0, 0.1), ladder=None, passes=3):
        """The trellis is slow in numpy (a Python step per column), so --dq-steps can restrict the
        ladder to the steps that bracket the target SQNRs."""
        ladder = 0.0011 * 2.0 ** (np.arange(-3, 16) / 3) if ladder is None else ladder
        curves = {f"DQ c={c}": self.curve(dq_with(c, passes), ladder=ladder, label=f"e{c}") for c in cs}
        self.out["e"] = curves
        self.table("(e) dependent quantization (4-state trellis), contexts = quantizer of the state", curves,
                   ("kt", "kt_prev", "kt_prev_row"))

    def hit(self, qf, bpw: float, rel=False, factors=None, model="kt", guess=0.012):
        """(step, bits, error, recon) at bpw +- 0.01 under `model`: secant steps on log2(step), started
        from the high-rate slope of -1 bit per octave."""
        g, pts = guess, []
        for _ in range(6):
            bits, err, recon = point(self.mats, qf, self.steps(g, rel, factors), keep_recon=True, models=(model,))
            b = bits[model] / self.n
            pts.append((np.log2(g), b))
            if abs(b - bpw) < 0.01:
                break
            if len(pts) == 1:
                slope = -1.0
            else:
                (l0, b0), (l1, b1) = pts[-2], pts[-1]
                slope = (b1 - b0) / (l1 - l0) if b1 != b0 else -1.0
            g = 2.0 ** (pts[-1][0] + (bpw - b) / slope)
        return g, bits, err, recon

    def part_cos(self, variants=None, sentences=None):
        """Embedding cosine at the target rates; MSE (one step) vs relative (step ~ RMS) allocation,
        and the word embeddings' step scaled against the rest."""
        sentences = sentences or minilm.read_sentences(minilm.EVAL_SENTENCES)
        ref = minilm.embed(self.w, sentences)
        all_variants = {
            "plain, one step": (plain, False, None, "kt"),
            "plain, step ~ RMS": (plain, True, None, "kt"),
            "plain, one step, word emb. step x0.5": (plain, False, {WORD: 0.5}, "kt"),
            "plain, one step, word emb. step x2": (plain, False, {WORD: 2.0}, "kt"),
            "plain, step ~ RMS, word emb. step x2": (plain, True, {WORD: 2.0}, "kt"),
            "plain, one step, word emb. step x4": (plain, False, {WORD: 4.0}, "kt"),
            "plain, step ~ RMS, word emb. step x4": (plain, True, {WORD: 4.0}, "kt"),
            "plain, one step, word emb. step x8": (plain, False, {WORD: 8.0}, "kt"),
            "plain, one step, word emb. step x16": (plain, False, {WORD: 16.0}, "kt"),
            "plain, one step, word emb. x4, pooler x8": (plain, False, {WORD: 4.0, POOLER: 8.0}, "kt"),
            "DQ c=0.1 (2 passes), one step, word emb. step x2": (dq_with(0.1, 2), False, {WORD: 2.0}, "kt_prev_row"),
            "RDOQ c=0.1, one step": (rdoq_with(0.1), False, None, "kt_prev_row"),
            "RDOQ c=0.1, step ~ RMS": (rdoq_with(0.1), True, None, "kt_prev_row"),
            "DQ c=0.1 (2 passes), one step": (dq_with(0.1, 2), False, None, "kt_prev_row"),
        }
        variants = variants or [v for v in all_variants if not v.startswith("DQ")]
        res = {}
        print("\n### embedding cosine at equal rate\n")
        print("| variant | cost model | " + " | ".join(f"SQNR / cos @ {b} bpw (bpw)" for b in TARGETS_BPW) + " |")
        print("|---|---|" + "---|" * len(TARGETS_BPW))
        for name in variants:
            qf, rel, factors, model = all_variants[name]
            cells = []
            for b in TARGETS_BPW:
                guess = {2.5: 0.04, 3.5: 0.02, 4.5: 0.01}[b] * (0.55 if name.startswith("DQ") else 1.0)
                g, bits, err, recon = self.hit(qf, b, rel, factors, model, guess)
                wq = dict(self.w)
                wq.update(recon)
                cos = minilm.embedding_cosine(self.w, wq, sentences, reference=ref)
                cells.append({"step": g, "bpw": bits[model] / self.n, "sqnr": E.sqnr_db(self.energy, err), "cos": cos})
            res[name] = cells
            print(f"| {name} | {model} | " + " | ".join(
                f"{c['sqnr']:.2f} dB / {c['cos']:.4f} ({c['bpw']:.3f})" for c in cells) + " |", flush=True)
        self.out["cos"] = res

    def part_time(self):
        """Encode seconds per MB of float32 input at a step near 3.5 bpw, medians of 3 runs."""
        mb = self.n * 4 / 1e6
        print("\n### encode time (all 40 tensors, %.1f MB float32)\n" % mb)
        print("| quantizer | s per MB | runs |")
        print("|---|---|---|")
        for name, qf, runs in [("plain rounding", plain, 3), ("RDOQ c=0.1, 3 passes", rdoq_with(0.1), 3),
                               ("DQ c=0.1, 3 passes", dq_with(0.1), 1)]:
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                for x in self.mats.values():
                    qf(x, 0.012)
                ts.append(time.perf_counter() - t0)
            print(f"| {name} | {np.median(ts) / mb:.4f} | {runs} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["a", "b", "c", "d", "e", "cos", "time"])
    ap.add_argument("--json", help="write the raw curves here")
    ap.add_argument("--dq-c", type=float, nargs="+", default=[0.0, 0.1], help="part e: RDO constants c")
    ap.add_argument("--dq-steps", type=float, nargs="+", help="part e: global steps (default a ladder)")
    ap.add_argument("--cos-variants", nargs="+", help="part cos: variant names (default all but DQ)")
    ap.add_argument("--dq-passes", type=int, default=3, help="part e: trellis passes (first: distortion only)")
    args = ap.parse_args()
    st = Study()
    print(f"{len(st.mats)} tensors, {st.n:,} weights")
    for p in args.part:
        if p == "e":
            st.part_e(tuple(args.dq_c), None if args.dq_steps is None else np.array(args.dq_steps), args.dq_passes)
        elif p == "cos":
            st.part_cos(args.cos_variants)
        else:
            getattr(st, f"part_{p}")()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(st.out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
