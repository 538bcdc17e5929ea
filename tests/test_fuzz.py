"""Mutation fuzzing through the real CLI: see tests/fuzzing.py for the seeds, mutations and oracle.

Every case must end in exit 2 or 1 with one error line, no traceback, no output or temp file, no
hang; or in exit 0 only when the mutation is provably harmless (same result as the seed, or an input
that an independent reader accepts and reads the same way). tools/fuzz.py runs the same cases longer.
"""

from __future__ import annotations

import collections
import os

import pytest
from hypothesis import given, settings, strategies as st

import fuzzing as fz


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fz.build_seeds(str(tmp_path_factory.mktemp("seeds")))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("work") / "case")


def _assert_clean(outcomes):
    problems = [o for o in outcomes if o.problem]
    assert not problems, "\n".join(f"{o.seed} {o.mutation} {o.command}: {o.problem}" for o in problems)


ARCHIVES = ["archive-int4-asym-group", "archive-int8-sym-channel", "archive-int3-sym-tensor", "archive-fp16",
            "archive-bf16", "archive-ecsq", "archive-ecsq-trellis", "archive-int4-entropy", "archive-lossless"]
INPUTS = ["input-safetensors", "input-npy", "input-npy-f64-fortran", "input-npz", "input-npz-deflate"]
STATISTICS = ["importance"]  # a mutated --importance file beside an intact model


@pytest.mark.parametrize("seed_name", ARCHIVES + INPUTS + STATISTICS)
@pytest.mark.parametrize("mutation", ["truncate", "bitflip", "bytes", "header", "manifest"])
@settings(max_examples=70, database=None)
@given(data=st.data())
def test_mutations_fail_cleanly_or_are_harmless(seeds, workdir, seed_name, mutation, data):
    seed = seeds[seed_name]
    if mutation not in fz.mutations_for(seed):
        return
    _assert_clean(fz.run_case(seed, mutation, fz.DrawChooser(data), workdir))


STREAMS = ["stream-ecsq", "stream-ecsq-trellis", "stream-int4-group", "stream-int8", "stream-nf4", "stream-kmeans",
           "stream-vq", "stream-pq", "stream-fp16", "stream-lossless"]  # rans, crans, lossless planes


@pytest.mark.parametrize("seed_name", STREAMS)
@pytest.mark.parametrize("mutation", ["stream", "manifest"])
@settings(max_examples=25, database=None)
@given(data=st.data())
def test_forged_streams_fail_cleanly_or_decode_within_the_cost_bounds(seeds, workdir, seed_name, mutation, data):
    """Re-signed forgeries of every entropy-coded stream (bytes, length, codec params, lanes, codec
    name) and manifest edits: one line naming the file and tensor, or a finite decode that verify and
    dequantize agree on; every run within the cost bounds (`fuzzing.cost_problem`)."""
    _assert_clean(fz.run_case(seeds[seed_name], mutation, fz.DrawChooser(data), workdir))


def test_every_codec_and_method_has_a_stream_seed(seeds):
    """The stream seeds cover each codec an archive records, under every method that stores one."""
    coded = {(fz._manifest(seeds[n])["tensors"][i]["method"], fz._manifest(seeds[n])["tensors"][i]["codecs"][role]["codec"])
             for n in STREAMS for i, role in fz._coded(seeds[n])}
    assert {c for _, c in coded} == {"rans", "crans", "lossless"}
    assert {m for m, _ in coded} == {"ecsq", "uniform", "nf", "kmeans", "vq", "pq", "fp16", "lossless"}


class Exhaustive(fz.Chooser):
    """Pins the region and the offset; other choices come from a fixed sequence."""

    def __init__(self, region: int, offset: int, bit: int = 0):
        self.answers = [region, offset, bit]

    def int(self, lo: int, hi: int) -> int:
        value = self.answers.pop(0) if self.answers else lo
        assert lo <= value <= hi
        return value


@pytest.mark.parametrize("seed_name", ["archive-int4-asym-group", "archive-fp16", "input-safetensors",
                                       "input-npy", "input-npz", "importance"])
def test_truncation_at_every_region_boundary_and_inside(seeds, workdir, seed_name):
    """Truncate at the first, second, middle and last byte of every region of the format."""
    seed = seeds[seed_name]
    outcomes = []
    for i, (_label, start, end) in enumerate(seed.regions):
        for at in sorted({start, min(start + 1, end - 1), (start + end) // 2, end - 1}):
            outcomes += fz.run_case(seed, "truncate", Exhaustive(i, at), workdir)
    _assert_clean(outcomes)
    assert outcomes and all(o.result == "exit 2" for o in outcomes)


@pytest.mark.parametrize("seed_name", ARCHIVES)
def test_every_bit_flip_in_stored_arrays_is_detected(seeds, workdir, seed_name):
    """A flipped bit in any stored array (each array, first/last byte, every bit position across the
    array) makes verify and dequantize exit 2 naming the tensor; inspect may only say what it said."""
    seed = seeds[seed_name]
    outcomes = []
    for i, (label, start, end) in enumerate(seed.regions):
        if not label.startswith("array:"):
            continue
        for k, at in enumerate(sorted({start, (start + end) // 2, end - 1})):
            for bit in range(k, 8, 3):
                outcomes += fz.run_case(seed, "bitflip", Exhaustive(i, at, bit), workdir)
    _assert_clean(outcomes)
    by_command = collections.Counter((o.command, o.result) for o in outcomes)
    n = len(outcomes) // 3
    assert by_command[("verify", "exit 2")] == n and by_command[("dequantize", "exit 2")] == n
    assert by_command[("inspect", "exit 0 same result")] == n  # inspect reads no stored array


def test_a_flipped_producer_bit_is_harmless_and_decodes_the_same(seeds, workdir):
    """The producer string is the one byte range no checksum covers: flipping it must change nothing."""
    seed = seeds["archive-int8-sym-channel"]
    i = [r[0] for r in seed.regions].index("producer")
    _, start, end = seed.regions[i]
    outcomes = fz.run_case(seed, "bitflip", Exhaustive(i, start + 1, 0), workdir)  # "quantcli" -> "pu..."
    _assert_clean(outcomes)
    assert [o.result for o in outcomes] == ["exit 0 same result"] * 3


def test_no_case_leaves_files(seeds, workdir):
    """The harness itself checks the folder after every failed run; make sure it would notice."""
    seed = seeds["archive-fp16"]
    fz.run_case(seed, "truncate", Exhaustive(0, 3), workdir)
    assert os.listdir(workdir) == ["in.qnt.safetensors"]


def test_the_naming_and_cost_rules_notice_what_they_look_for(seeds):
    """The oracle itself: a refusal that names no file, or a decoding refusal that names no tensor,
    is a failure; a run over its time or memory bound is a failure."""
    seed = seeds["stream-int8"]
    line = "quant: error: /x/in.qnt.safetensors: tensor 'w': its codes array: entropy stream ends early\n"
    assert fz._naming_problem(seed, "/x/in.qnt.safetensors", "dequantize", "forged", line) == ""
    assert "does not name the file" in fz._naming_problem(seed, "/y/in.qnt.safetensors", "verify", "forged", line)
    untensored = line.replace("tensor 'w': ", "")
    assert "does not name the tensor" in fz._naming_problem(seed, "/x/in.qnt.safetensors", "verify", "forged",
                                                            untensored)
    assert fz._naming_problem(seed, "/x/in.qnt.safetensors", "inspect", "forged", untensored) == ""
    assert "peak RSS" in fz.cost_problem(fz.Run(2, "", line, rss_rise=100 << 20), 10_000)
    assert "took" in fz.cost_problem(fz.Run(2, "", line, seconds=60.0), 10_000)
