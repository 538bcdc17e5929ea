"""Checkpoint-scale benchmarks, run as real `quant` processes (the installed command, or
`python -m quantcli`) under /usr/bin/time -v, with the whole process tree's RSS sampled every 20 ms.

Default (issue 18): a deterministic Llama-shaped bf16 checkpoint of about 1.5 GB (hidden 2048,
intermediate 5632, 12 layers, vocabulary 32000, untied head; 3 shards + model.safetensors.index.json)
built in a temporary folder and removed afterwards. Runs plain int4 g64 and `--target-bpw 4`, both
`--jobs 2` (wall time, side by side, alternating), then `--target-bpw 4 --jobs 1` (peak RSS), and
prints the ratios against the targets (planner <= 6x plain wall; RSS <= 3x the largest tensor as
float32 + 400 MB).

    python benchmarks/bench_checkpoint.py [--dir DIR] [--repeat 1] [--quant NEW=/path/quant --quant OLD=/other/quant]
    python benchmarks/bench_checkpoint.py --issue5 [--layers 10]   # the 4 GB int4 jobs 1/2 study

The --issue5 mode is the earlier one: a 4 GB bf16 checkpoint (4096x11008 and 4096x4096 tensors)
quantized to 4-bit group-64, peak RSS and wall time for --jobs 1 and --jobs 2 (issue 5).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading

import ml_dtypes
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from quantcli.io.output import SafetensorsWriter  # noqa: E402


def make_checkpoint(folder: str, layers: int) -> None:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.append((f"model.layers.{i}.self_attn.{proj}.weight", (4096, 4096)))
        for proj in ("gate_proj", "up_proj"):
            names.append((f"model.layers.{i}.mlp.{proj}.weight", (11008, 4096)))
        names.append((f"model.layers.{i}.mlp.down_proj.weight", (4096, 11008)))
        names.append((f"model.layers.{i}.input_layernorm.weight", (4096,)))
    per_shard = -(-len(names) // 3)
    weight_map = {}
    for s in range(3):
        shard = f"model-{s + 1:05d}-of-00003.safetensors"
        writer = SafetensorsWriter(os.path.join(folder, shard))
        for name, shape in names[s * per_shard:(s + 1) * per_shard]:
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= 0.02
            writer.add(name, x.astype(ml_dtypes.bfloat16))
            weight_map[name] = shard
        writer.finish({"format": "pt"})
    with open(index, "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def make_llama(folder: str, layers: int = 12, hidden: int = 2048, inter: int = 5632, vocab: int = 32000) -> int:
    """A Llama-shaped bf16 checkpoint in 3 shards + index; returns the largest tensor's element
    count. Deterministic: each tensor from its own seed, rows with log-normal scales (so tensors
    and rows differ, as in trained weights), float32 math per tensor."""
    index = os.path.join(folder, "model.safetensors.index.json")
    names = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [(p + f"self_attn.{n}_proj.weight", (hidden, hidden)) for n in "qkvo"]
        names += [(p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                  (p + "mlp.down_proj.weight", (hidden, inter)),
                  (p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,))]
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    largest = max(int(np.prod(shape)) for _, shape in names)
    if os.path.exists(index):
        return largest
    os.makedirs(folder, exist_ok=True)
    total = sum(int(np.prod(shape)) for _, shape in names)
    weight_map: dict[str, str] = {}
    shard, done, writer = 0, 0, None
    for seed, (name, shape) in enumerate(names):
        if writer is None or done >= (shard * total) // 3 and shard < 3:
            if writer is not None:
                writer.finish({"format": "pt"})
            shard += 1
            writer = SafetensorsWriter(os.path.join(folder, f"model-{shard:05d}-of-00003.safetensors"))
        rng = np.random.default_rng(seed)
        if len(shape) == 1:
            x = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= (0.02 * np.exp(0.3 * rng.standard_normal((shape[0], 1)))).astype(np.float32)
        writer.add(name, x.astype(ml_dtypes.bfloat16))
        weight_map[name] = f"model-{shard:05d}-of-00003.safetensors"
        done += int(np.prod(shape))
        del x
    assert writer is not None
    writer.finish({"format": "pt"})
    with open(index, "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return largest


def _tree_rss_mb(root: int) -> float:
    """Sum of VmRSS over `root` and all its descendants (the worker processes too)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def default_quant() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "quant")  # this environment's installed command
    quant = beside if os.path.exists(beside) else shutil.which("quant")
    return [quant] if quant else [sys.executable, "-m", "quantcli"]


def timed_run(args: list[str], cmd: list[str] | None = None) -> tuple[float, float, float, dict]:
    """(wall seconds, peak RSS MB of the main process from /usr/bin/time -v, peak summed RSS MB of
    the whole process tree sampled every 20 ms, JSON report) of one `quant quantize` run."""
    cmd = cmd or default_quant()
    p = subprocess.Popen(["/usr/bin/time", "-v", *cmd, "quantize", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss_mb(p.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = p.communicate()
    done.set()
    sampler.join()
    if p.returncode:
        raise RuntimeError(err)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", err)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, rss_kb / 1024, peak[0], json.loads(out)


def planner_benchmark(folder: str, repeat: int, builds: dict[str, list[str]]) -> None:
    ckpt = os.path.join(folder, "llama")
    t = time_now()
    largest = make_llama(ckpt)
    size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt))
    bound = 3 * 4 * largest / 2**20 + 400
    print(f"checkpoint: {size / 1e9:.2f} GB bf16, 3 shards + index (built in {time_now() - t:.0f} s); largest "
          f"tensor {largest} values = {4 * largest / 2**20:.0f} MiB as float32; RSS target {bound:.0f} MB")
    plain = ["--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64"]
    runs = {"int4 g64 --jobs 2": plain + ["--jobs", "2"], "--target-bpw 4 --jobs 2": ["--target-bpw", "4", "--jobs", "2"],
            "--target-bpw 4 --jobs 1": ["--target-bpw", "4", "--jobs", "1"]}
    walls: dict[tuple[str, str], list[float]] = {}
    rsss: dict[tuple[str, str], list[float]] = {}
    out = os.path.join(folder, "a.qnt.safetensors")
    for _ in range(repeat):
        for label, extra in runs.items():
            for build, cmd in builds.items():  # alternating, so the builds and runs see the same machine load
                if label.startswith("int4") and build != next(iter(builds)):
                    continue  # the yardstick once per round
                wall, rss_main, rss, doc = timed_run([ckpt, "-o", out, "--json", "--quiet", *extra], cmd)
                walls.setdefault((build, label), []).append(wall)
                rsss.setdefault((build, label), []).append(rss)
                planning = doc.get("plan", {}).get("totals", {}).get("planning_seconds")
                print(f"{build} {label}: {wall:.1f} s wall" + (f" (planning {planning:.1f} s)" if planning else "")
                      + f", peak RSS {rss:.0f} MB (tree), {rss_main:.0f} MB (main), "
                      f"{doc['totals']['bits_per_weight']:.4f} bits/weight, "
                      f"SQNR {doc['totals']['overall_sqnr_db']:.2f} dB", flush=True)
                os.unlink(out)
    plain_wall = statistics.median(walls[(next(iter(builds)), "int4 g64 --jobs 2")])
    for build in builds:
        plan_wall = statistics.median(walls[(build, "--target-bpw 4 --jobs 2")])
        rss = max(rsss[(build, "--target-bpw 4 --jobs 1")])
        print(f"{build}: planner / plain wall (--jobs 2): {plan_wall / plain_wall:.2f}x (target <= 6x); "
              f"peak RSS --jobs 1: {rss:.0f} MB (target <= {bound:.0f} MB)")


def time_now() -> float:
    import time
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None, help="where to build the checkpoint (default: a temporary folder)")
    ap.add_argument("--issue5", action="store_true", help="the 4 GB int4 --jobs 1/2 study instead")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--quant", action="append", default=[], metavar="NAME=COMMAND",
                    help="a build to run (repeatable; default: this environment's quant)")
    args = ap.parse_args()
    builds = {q.split("=", 1)[0]: q.split("=", 1)[1].split() for q in args.quant}
    builds = builds or {"quant": default_quant()}
    if not args.issue5:
        if args.dir:
            planner_benchmark(args.dir, args.repeat, builds)
        else:
            with tempfile.TemporaryDirectory(prefix="quant-llama-") as tmp:
                planner_benchmark(tmp, args.repeat, builds)
        return
    args.dir = args.dir or "/tmp/quant-ckpt"
    ckpt = os.path.join(args.dir, "ckpt")
    make_checkpoint(ckpt, args.layers)
    size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt))
    print(f"checkpoint: {ckpt}, {size / 1e9:.2f} GB bf16 in 3 shards")
    common = [ckpt, "--bits", "4", "--scheme", "asymmetric", "--granularity", "group", "--group-size", "64",
              "--json", "--quiet"]
    results = {}
    digests = {}
    for round_ in range(args.repeat):
        for jobs in (1, 2):  # interleaved, so both see the same machine load
            out = os.path.join(args.dir, f"j{jobs}.qnt.safetensors")
            wall, rss_main, rss, doc = timed_run([*common, "-o", out, "--jobs", str(jobs)])
            results.setdefault(jobs, []).append((wall, rss))
            import hashlib
            with open(out, "rb") as f:
                h = hashlib.sha256()
                while chunk := f.read(1 << 24):
                    h.update(chunk)
            digests[jobs] = h.hexdigest()
            print(f"round {round_ + 1} --jobs {jobs}: {wall:.1f} s, peak RSS {rss:.0f} MB summed over the process "
                  f"tree ({rss_main:.0f} MB main process, /usr/bin/time -v), "
                  f"{size / 1e6 / wall:.0f} MB/s, {doc['totals']['bits_per_weight']:.3f} bits/weight, "
                  f"SQNR {doc['totals']['overall_sqnr_db']:.2f} dB")
    w1 = statistics.median(w for w, _ in results[1][1:] or results[1])  # round 1 may read a cold page cache
    w2 = statistics.median(w for w, _ in results[2][1:] or results[2])
    print(f"\nmedian wall (rounds after the first): jobs1 {w1:.1f} s ({size / 1e6 / w1:.0f} MB/s), jobs2 {w2:.1f} s ({size / 1e6 / w2:.0f} MB/s), "
          f"speedup {w1 / w2:.2f}x; peak RSS jobs1 {max(r for _, r in results[1]):.0f} MB, "
          f"jobs2 {max(r for _, r in results[2]):.0f} MB; identical archives: {digests[1] == digests[2]}")


if __name__ == "__main__":
    main()
