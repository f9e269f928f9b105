"""`python -m app`: the same command line as `lxd-gateway` (app/command.py); only `serve` starts anything."""

from __future__ import annotations

import sys

from app.command import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:], prog_name="python -m app"))
