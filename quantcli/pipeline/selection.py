"""Which tensors are quantized, and with which spec: decided from names, dtypes and shapes
before any tensor data is read."""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import ConfigError, InputError
from ..methods import get_method
from ..recipe import Recipe
from ..io.sources import Sources, TensorRef
from ..spec import Spec


@dataclass
class Selection:
    """Which tensors get quantized. By default: float tensors of 2 or more dimensions, and any
    float .npy file the user names. `only`/`skip` are regular expressions searched in the full name."""

    only: str | None = None
    skip: str | None = None
    include_1d: bool = False
    _only: re.Pattern[str] | None = field(default=None, init=False, repr=False)
    _skip: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("only", "skip"):
            pattern = getattr(self, attr)
            if pattern is not None:
                try:
                    setattr(self, f"_{attr}", re.compile(pattern))
                except re.error as e:
                    raise ConfigError(f"--{attr} {pattern!r} is not a valid regular expression: {e}") from None

    def reason_to_keep(self, ref: TensorRef) -> str:
        """Why `ref` is kept as it is, or '' when it is to be quantized."""
        if not ref.is_float:
            return f"kept: {ref.dtype} is not a float type"
        if len(ref.shape) < 2 and not ref.named_file and not self.include_1d:
            return "kept: 1-D (bias or norm); --include-1d quantizes it"
        if self._only is not None and not self._only.search(ref.name):
            return "kept: not matched by --only"
        if self._skip is not None and self._skip.search(ref.name):
            return "kept: matched by --skip"
        if ref.size == 0:
            return "kept: empty"
        return ""


@dataclass(frozen=True)
class PlanItem:
    """What will happen to one tensor: its spec (None = kept as it is) and the reason if kept;
    `pinned` when a recipe rule chose the spec (the planner leaves such tensors alone)."""

    ref: TensorRef
    spec: Spec | None
    note: str
    pinned: bool = False

    @property
    def keep(self) -> bool:
        return self.spec is None

    def _replace_spec(self, spec: Spec) -> "PlanItem":
        return PlanItem(self.ref, spec, self.note, self.pinned)


# Python's regex engine backtracks: `(a+)+$` takes seconds on a 27-character name and doubles
# with each character more. Name matching gets this much CPU time in all, then fails cleanly.
REGEX_CPU_SECONDS = 1.0


@contextmanager
def regex_time_limit(seconds: float | None = None) -> Iterator[None]:
    """Bound the CPU time of matching names against --only/--skip/recipe patterns (the regex
    engine checks for signals while it backtracks). Main thread only; elsewhere unbounded."""
    seconds = REGEX_CPU_SECONDS if seconds is None else seconds
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise ConfigError(f"matching tensor names against the --only/--skip/recipe patterns took over {seconds:g} s "
                          "of CPU time: a pattern with nested repeats like (a+)+ backtracks exponentially; "
                          "simplify it")

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def plan_tensors(refs: list[TensorRef], spec: Spec, selection: Selection,
                 recipe: Recipe | None = None) -> list[PlanItem]:
    """Decide every tensor's method before any data is read: --only/--skip and the default
    policy first, then the recipe (first matching rule wins). Every chosen spec is checked once
    here, against the method that will read it."""
    items = []
    with regex_time_limit():
        for ref in refs:
            reason = selection.reason_to_keep(ref)
            chosen: Spec | None = None if reason else spec
            pinned = False
            if not reason and recipe is not None:
                chosen, reason, pinned = recipe.spec_for(ref.name, spec)
            items.append(PlanItem(ref, chosen, reason, pinned))
    for item in items:
        if item.spec is not None:
            get_method(item.spec.method).check_spec(item.spec)
    return items


def refuse_archives(sources: Sources) -> None:
    """Quantizing an archive would treat its codes and scales as weights: say what to do instead."""
    for path in sources.archives:
        raise InputError("is already a quant archive; dequantize it first to re-quantize", path=path)
