"""The settings the planner measures on each tensor, keyed by their frozen `Spec`."""

from __future__ import annotations

from ..errors import ConfigError
from ..methods import get_method
from ..spec import Spec

LEVELS = ("default", "fast")


def default_candidates(level: str = "default") -> list[Spec]:
    """The settings the planner measures per tensor.

    default: uniform asymmetric 2-8 bits at g32/g64/g128/channel (cheap, covers every rate),
    nf 2-5 bits at g32/g64/g128 (fixed non-uniform levels, +0.6-0.9 dB at 4 bits for ~4x the time
    of uniform), kmeans normalize=group 2-4 bits at g64/g128 (learned levels, the best measured
    4-bit setting; 5 bits doubles its cost for a rate the others cover), and fp16.
    fast: the same without kmeans (which is ~75% of the measuring time).
    """
    if level not in LEVELS:
        raise ConfigError(f"--candidates must be default or fast, got {level!r}")
    out = []
    for bits in range(2, 9):
        for g in (32, 64, 128):
            out.append(Spec(method="uniform", bits=bits, scheme="asymmetric", granularity="group", group_size=g))
        out.append(Spec(method="uniform", bits=bits, scheme="asymmetric", granularity="channel"))
    for bits in range(2, 6):
        for g in (32, 64, 128):
            out.append(Spec(method="nf", bits=bits, granularity="group", group_size=g))
    if level == "default":
        for bits in range(2, 5):
            for g in (64, 128):
                out.append(Spec(method="kmeans", bits=bits, normalize="group", group_size=g))
    out.append(Spec(method="fp16", bits=16))
    out.extend(ecsq_ladder())
    return out


def ecsq_ladder() -> list[Spec]:
    """ecsq with the step at 2^(-k/4) of each tensor's RMS, k = -2 .. 24: about 1.5 to 8 bits per
    weight in quarter-octave steps (a quarter of a bit apart), entropy-coded."""
    return [Spec(method="ecsq", step_rms=float(2.0 ** (-k / 4))) for k in range(-2, 25)]


def label(spec: Spec) -> str:
    """The setting's display name, independent of the tensor (e.g. 'int4 asym g64', 'nf3 g128')."""
    if spec.method == "ecsq" and spec.step_rms is not None:
        return f"ecsq step {spec.step_rms:.3g} rms"
    method = get_method(spec.method)
    return method.describe(method.params_for((1, 1), spec))


def family(spec: Spec) -> str:
    """The setting without its bits (one line of a rate-distortion plot): method and grouping."""
    if spec.method in ("fp16", "bf16", "ecsq"):
        return spec.method
    if spec.method == "kmeans" and spec.normalize == "group":
        return f"kmeans g{spec.group_size}"
    scheme = " asym" if spec.method == "uniform" and spec.scheme == "asymmetric" else ""
    grouping = f"g{spec.group_size}" if spec.granularity == "group" else spec.granularity
    return f"{spec.method}{scheme} {grouping}"
