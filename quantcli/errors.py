"""Exceptions raised by the library. The library raises; only the CLI prints and exits."""

from __future__ import annotations


def one_line(text: str) -> str:
    """Messages are one line whatever a path or name holds: control characters (and lone
    surrogates, which no terminal can print) are escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class QuantError(Exception):
    """Base class. `exit_code` is what the CLI exits with: 2 for bad input or usage."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, tensor: str | None = None):
        self.message = message
        self.path = path
        self.tensor = tensor
        super().__init__(self.render())

    def render(self) -> str:
        """One line: `path: tensor 'name': message`, leaving out what is unknown."""
        where = []
        if self.path:
            where.append(one_line(str(self.path)))
        if self.tensor is not None:
            where.append(f"tensor {self.tensor!r}")
        return ": ".join([*where, self.message])


class ConfigError(QuantError):
    """Options that cannot work together or are out of range."""


class InputError(QuantError):
    """A weight file that is missing, malformed, or holds values we refuse to quantize."""


class NonFiniteError(InputError):
    """A tensor holds NaN or Inf values (`count` of them)."""

    def __init__(self, count: int, *, path: str | None = None, tensor: str | None = None):
        self.count = count
        super().__init__(f"holds {count} NaN or Inf values", path=path, tensor=tensor)


class ArchiveError(InputError):
    """An archive that is malformed, corrupt, or from an unknown format version."""


class WorkError(QuantError):
    """A failure while working on valid input (disk full, write refused): exit status 1."""

    exit_code = 1
