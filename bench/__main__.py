"""Run every benchmark module in bench/ that has a `main()`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    rc = 0
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")):
        module = importlib.import_module(f"bench.{mod}")
        if hasattr(module, "main"):
            print(f"== bench/{mod}.py", flush=True)
            rc |= int(module.main() or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
