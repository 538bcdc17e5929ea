"""Every install hint names a distribution that is ours or the library it asks for: `quantcli`
and `quant` on the package index are unrelated projects, so no hint may name them."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = "quant-weights"


def _texts():
    for folder in ("quantcli", "docs"):
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".py", ".md")):
                    yield os.path.join(base, f)
    yield os.path.join(ROOT, "README.md")


def test_the_distribution_has_our_name():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert re.search(rf'^name = "{OURS}"', text, re.M)


def test_no_hint_installs_someone_elses_package():
    hint = re.compile(r"pip install\s+['\"]?(quantcli|quant)(\[|['\"\s`)]|$)")
    found = [(p, m.group(0)) for p in _texts() for m in hint.finditer(open(p, encoding="utf-8").read())]
    assert not found, found
