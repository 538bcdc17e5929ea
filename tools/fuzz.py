"""Long fuzzing run: N mutated cases through the real CLI, counts by outcome.

    python tools/fuzz.py 20000 --seed 1 [--json]

Uses the same seeds, mutations and oracle as tests/test_fuzz.py (tests/fuzzing.py), drawing the
choices from random.Random(seed) so a run can be repeated. Prints, per command, how many runs ended
in exit 2 / exit 1 / exit 0 (and why exit 0 was acceptable), per mutation family the same, the slowest
run and the largest peak-RSS rise (the cost oracle's margins), then every failing case (rerun with the
same seed and count to reproduce it). Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import fuzzing as fz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", type=int, help="number of mutated files to try")
    ap.add_argument("--seed", type=int, default=0, help="random seed (a run is repeatable)")
    ap.add_argument("--json", action="store_true", help="print the counts as one JSON document")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    chooser = fz.RandomChooser(rng)
    by_command: collections.Counter[tuple[str, str]] = collections.Counter()
    by_family: collections.Counter[tuple[str, str]] = collections.Counter()
    failures = []
    slowest, highest = (0.0, ""), (0, "")  # the cost oracle's margins: worst time and RSS rise seen
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-fuzz-") as tmp:
        seeds = fz.build_seeds(os.path.join(tmp, "seeds"))
        names = sorted(seeds)
        for i in range(args.cases):
            seed = seeds[rng.choice(names)]
            mutation = rng.choice(fz.mutations_for(seed))
            for o in fz.run_case(seed, mutation, chooser, os.path.join(tmp, "work")):
                outcome = "failed" if o.problem else o.result
                by_command[(o.command, outcome)] += 1
                by_family[(mutation, outcome)] += 1
                where = f"case {i}: {o.seed} {o.mutation} {o.command}"
                slowest = max(slowest, (o.seconds, where))
                highest = max(highest, (o.rss_rise or 0, where))
                if o.problem:
                    failures.append({"case": i, "seed": o.seed, "mutation": o.mutation, "command": o.command,
                                     "problem": o.problem})
    seconds = time.perf_counter() - start
    runs = sum(by_command.values())
    if args.json:
        print(json.dumps({"cases": args.cases, "runs": runs, "seconds": round(seconds, 1), "seed": args.seed,
                          "by_command": {f"{c} {r}": n for (c, r), n in sorted(by_command.items())},
                          "by_mutation": {f"{m} {r}": n for (m, r), n in sorted(by_family.items())},
                          "slowest_run": {"seconds": round(slowest[0], 3), "case": slowest[1]},
                          "largest_rss_rise": {"bytes": highest[0], "case": highest[1]},
                          "failures": failures}, indent=2))
    else:
        print(f"{args.cases} cases, {runs} command runs, {seconds:.1f} s, seed {args.seed}")
        for title, counts in (("by command", by_command), ("by mutation family", by_family)):
            print(f"\n{title}:")
            for (key, outcome), n in sorted(counts.items()):
                print(f"  {key:<11} {outcome:<20} {n:>8}")
        print(f"\nslowest run {slowest[0]:.2f} s ({slowest[1]}); largest peak-RSS rise "
              f"{highest[0] / 2**20:.1f} MB ({highest[1]})")
        print(f"\nfailures: {len(failures)}")
        for f in failures[:50]:
            print(f"  case {f['case']}: {f['seed']} {f['mutation']} {f['command']}: {f['problem']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
