"""The memory footprint of the gateway process: what `python -m app` does to itself before it imports the server.

Some libraries import another module only because it is installed, for a feature the gateway never uses: several
MiB of resident memory for nothing (`trio` and `rich` are not even dependencies of the gateway; the test tools
bring them into a development environment). The server process records them as absent before anything imports
them, and each library takes the fallback it has for when they are not installed:

* `trio`: httpcore and anyio support it besides asyncio; the gateway runs on asyncio only (uvloop).
* `rich`: structlog's console renderer and tracebacks use it for colours; the gateway renders JSON.
* `httpx._main`: httpx's command-line client (click, pygments, rich), never run by the gateway.
* `pydantic.v1`: FastAPI imports it to reject pydantic v1 models; the gateway has none (with it absent FastAPI
  knows there can be none).
* `watchfiles`: uvicorn's auto-reloader; the gateway never reloads (uvicorn falls back to its stat reloader,
  never started either).

Only the server entry point calls `leave_out_unused()`: tests and tools that import the app keep the libraries as
they are.

`settle_after_startup(app)`: once the app's start-up is done, import what the first call to LXD imports anyway
(httpx's connection layer and anyio's asyncio backend, whose bytecode is compiled on first import where no cache
was written), collect garbage and hand the freed heap back to the system (`malloc_trim`): what start-up only
needed for a moment (compiling, building the routes) no longer counts in the resident memory of an idle gateway.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

UNUSED_MODULES = ("trio", "rich", "httpx._main", "pydantic.v1", "watchfiles")
FIRST_CALL_MODULES = ("httpcore", "anyio._backends._asyncio")


def leave_out_unused(names: tuple[str, ...] = UNUSED_MODULES) -> list[str]:
    """Mark `names` absent (an import of them raises ImportError), unless already imported; the names marked."""
    marked = []
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
            marked.append(name)
    return marked


def trim_heap() -> bool:
    """Collect garbage, then return the heap's free pages to the system; False where it cannot (not glibc)."""
    gc.collect()
    return return_free_heap()


def return_free_heap() -> bool:
    """Hand the heap's free pages back to the system, without a garbage collection first; False where it cannot
    (not glibc). It takes milliseconds on a heap of a hundred MiB and holds no GIL: run it on a thread. The read
    model has it run after applying a large listing: parsing LXD's answer for 1,000 containers takes tens of MiB
    for a moment, which would otherwise stay resident."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def settle() -> None:
    """Import what the first LXD call needs, then trim the heap (see the module's text)."""
    for name in FIRST_CALL_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    trim_heap()


def settle_after_startup(app: Any) -> None:
    """Run `settle()` once `app`'s (a Starlette app's) lifespan start-up is done, before it serves."""
    startup = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(instance: Any) -> AsyncIterator[Any]:
        async with startup(instance) as state:
            settle()
            yield state

    app.router.lifespan_context = lifespan
