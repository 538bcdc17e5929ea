"""Moved into the package: `quant collect-importance` (quantcli/collect.py, docs/IMPORTANCE.md).

    python tools/collect_importance.py ARGS...   is   quant collect-importance ARGS...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from quantcli.cli.commands import app  # noqa: E402

if __name__ == "__main__":
    app(["collect-importance", *sys.argv[1:]], prog_name="quant")
