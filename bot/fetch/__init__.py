"""Fetch stage: the arXiv search client, Atom parsing, the request gate, keyword queries."""

import sys

# httpx imports its command-line client (click, rich, pygments: a sixth of the start-up of `run`)
# whenever those are installed, as they are here; the daemon never runs it. Its package then
# falls back to a stub `httpx.main` that says the CLI is not available.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
