"""Run every benchmark in bench/ and print one table (`make bench`).

A module with `collect()` gives rows for the table (`bench/_table.py` fixes which rows and their order); its own
`main()` still prints its standalone report. A module with `PART_OF` is run by that module (bench/load.py's load
is put on bench/gateway.py's gateway). A module with only `main()` is run and its output printed as it is.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from bench._table import Row, machine, render


def main() -> int:
    here = Path(__file__).parent
    rc = 0
    rows: list[Row] = []
    start = time.monotonic()
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")):
        module = importlib.import_module(f"bench.{mod}")
        if hasattr(module, "PART_OF"):
            continue
        t0 = time.monotonic()
        print(f"== bench/{mod}.py", file=sys.stderr, flush=True)
        try:
            if hasattr(module, "collect"):
                rows += module.collect([])
            elif hasattr(module, "main"):
                rc |= int(module.main() or 0)
        except Exception:
            traceback.print_exc()
            rc = 1
        print(f"   bench/{mod}.py took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"\nMeasured {machine()}; each figure the median of the rounds in its last column "
          f"(all benchmarks took {time.monotonic() - start:.0f} s).\n")
    print(render(rows))
    return rc


if __name__ == "__main__":
    sys.exit(main())
