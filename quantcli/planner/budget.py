"""What the planner plans for: a bits-per-weight target, an archive size, or a quality floor."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..archive.dequant import parse_size
from ..errors import ConfigError


MAX_BYTES = float(1 << 62)  # a limit beyond any file: a huge --target-bpw is no limit at all


@dataclass(frozen=True)
class Budget:
    """kind: 'bpw' (bits per quantized weight), 'bytes' (whole archive file), or 'sqnr' (every
    planned tensor at least this many dB, smallest archive)."""

    kind: str
    value: float
    text: str = ""

    def describe(self) -> str:
        return {"bpw": f"--target-bpw {self.value:g}", "bytes": f"--max-size {self.text or int(self.value)}",
                "sqnr": f"--min-sqnr {self.value:g}"}[self.kind]

    def limit_bytes(self, quantized_elements: int, kept_bytes: int) -> int | None:
        """The archive may not exceed this many bytes (None for a quality floor). A bpw target
        counts every byte except kept tensors' arrays (`archive_bits_per_weight`)."""
        if self.kind == "bytes":
            return int(self.value)
        if self.kind == "bpw":
            return kept_bytes + int(math.floor(min(self.value * quantized_elements / 8, MAX_BYTES)))
        return None


def budget_from_options(target_bpw: float | None, max_size: str | None, min_sqnr: float | None) -> Budget | None:
    """The one budget given on the command line, or None; ConfigError when more than one."""
    given = [n for n, v in (("--target-bpw", target_bpw), ("--max-size", max_size), ("--min-sqnr", min_sqnr))
             if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --target-bpw, --max-size, --min-sqnr, not {' and '.join(given)}")
    if target_bpw is not None:
        if not math.isfinite(target_bpw) or target_bpw <= 0:
            raise ConfigError(f"--target-bpw must be a positive number of bits, got {target_bpw}")
        return Budget("bpw", float(target_bpw))
    if max_size is not None:
        try:
            size = parse_size(max_size)
        except ConfigError:
            raise ConfigError(f"--max-size {max_size!r} is not a size like 30MB, 2GB or 1GiB") from None
        return Budget("bytes", float(size), max_size)
    if min_sqnr is not None:
        if not math.isfinite(min_sqnr):
            raise ConfigError(f"--min-sqnr must be a finite number of dB, got {min_sqnr}")
        return Budget("sqnr", float(min_sqnr))
    return None
