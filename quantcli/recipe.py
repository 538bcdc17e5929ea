"""Recipes: a TOML file mapping tensor-name patterns to method settings. First match wins.

    [default]                       # applied on top of the command-line options
    bits = 4
    scheme = "asymmetric"
    granularity = "group"
    group_size = 64

    [[rule]]
    pattern = "embed|lm_head"       # a Python regex, searched anywhere in the full tensor name
    keep = true                     # store as it is

    [[rule]]
    pattern = 'attention\\.self\\.(query|key)\\.weight$'
    bits = 8
    granularity = "channel"

Every key other than `pattern` and `keep` is a Spec field (method, bits, scheme, granularity,
group_size, scale_dtype, seed, ...). Unknown keys are an error naming the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from .methods import KEEP, get_method
from .spec import Spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SPEC_KEYS = {f.name for f in fields(Spec)}


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    keep: bool
    options: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    path: str
    default: dict[str, Any]
    rules: tuple[Rule, ...]

    def spec_for(self, name: str, base: Spec) -> tuple[Spec | None, str, bool]:
        """(spec, '', pinned) for a tensor to quantize, pinned when a rule matched; or
        (None, reason, False) for one the recipe keeps."""
        spec = base.with_options(**self.default) if self.default else base
        for i, rule in enumerate(self.rules):
            if rule.pattern.search(name):
                if rule.keep:
                    return None, f"kept: recipe rule {i + 1} ({rule.pattern.pattern})", False
                return self._checked(spec.with_options(**rule.options), set(rule.options), f"rule {i + 1}"), "", True
        return self._checked(spec, set(self.default), "[default]"), "", False

    def _checked(self, spec: Spec, keys: set[str], where: str) -> Spec:
        """The same refusal as on the command line: a key of the rule that decided (or of
        [default] when none did) that the chosen method would not read."""
        try:
            method = get_method(spec.method)
            method.check_spec(spec)
            method.refuse_unread(spec, keys, where)
        except ConfigError as e:
            raise ConfigError(e.message, path=self.path) from None
        return spec


def _options(table: dict[str, Any], path: str, where: str) -> dict[str, Any]:
    unknown = sorted(set(table) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SPEC_KEYS))}",
                          path=path)
    return dict(table)


def load_recipe(path: str) -> Recipe:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("no such recipe file", path=path) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"not a valid TOML recipe: {e}", path=path) from None
    extra = sorted(set(doc) - {"default", "rule"})
    if extra:
        raise ConfigError(f"unknown section(s) {', '.join(extra)}; a recipe has [default] and [[rule]]", path=path)
    default = _options(doc.get("default", {}), path, "[default]")
    rules = []
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("rules are written [[rule]]", path=path)
    for i, raw in enumerate(raw_rules, 1):
        raw = dict(raw)
        pattern = raw.pop("pattern", None)
        if not isinstance(pattern, str):
            raise ConfigError(f"rule {i} needs a pattern (a regular expression)", path=path)
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"rule {i}: {pattern!r} is not a valid regular expression: {e}", path=path) from None
        keep = raw.pop(KEEP, False)
        if not isinstance(keep, bool):
            raise ConfigError(f"rule {i}: keep must be true or false", path=path)
        rules.append(Rule(compiled, keep, _options(raw, path, f"rule {i}")))
    recipe = Recipe(path, default, tuple(rules))
    try:  # validate every combination once, up front, not halfway through a model
        base = Spec().with_options(**default)
        for r in recipe.rules:
            base.with_options(**r.options)
    except ConfigError as e:
        raise ConfigError(e.message, path=path) from None
    except TypeError as e:
        raise ConfigError(f"a value has the wrong type: {e}", path=path) from None
    return recipe
