"""The memory footprint of the gateway process: what `python -m app` does to itself before it imports the server.

Some libraries import another package only because it is installed, for a feature the gateway never uses. In a
development environment (where the test tools bring those packages in) that costs several MiB of resident memory
for nothing, so the server process records them as absent before anything imports them; each library then takes
its documented fallback, as it does in the production image where those packages are not installed:

* `trio`: httpcore and anyio support it besides asyncio; the gateway runs on asyncio only (uvloop).
* `rich`: structlog's console renderer and tracebacks use it for colours; the gateway renders JSON.
* `httpx._main`: httpx's command-line client (click, pygments, rich), never run by the gateway.
* `pydantic.v1`: FastAPI imports it to reject pydantic v1 models; the gateway has none (with it absent FastAPI
  knows there can be none).
* `watchfiles`: uvicorn's auto-reloader; the gateway never reloads (uvicorn falls back to its stat reloader,
  never started either).

Only the server entry point calls `leave_out_unused()`: tests and tools that import the app keep the libraries as
they are.

`limit_malloc_arenas()` caps glibc's malloc arenas (one per thread that allocates, by default up to 8 per core):
the gateway's threads (the job database's connection threads, `asyncio.to_thread` workers) then share two.
"""

from __future__ import annotations

import sys

UNUSED_MODULES = ("trio", "rich", "httpx._main", "pydantic.v1", "watchfiles")
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def leave_out_unused(names: tuple[str, ...] = UNUSED_MODULES) -> list[str]:
    """Mark `names` absent (an import of them raises ImportError), unless already imported; the names marked."""
    marked = []
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
            marked.append(name)
    return marked


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc malloc's arenas at `arenas` (to call before threads start); False where it cannot (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
