"""The ``memberwise`` console script.

Importing the whole command line (:mod:`memberwise.cli`) loads every domain and their engines
(LightGBM, SciPy, Ibis, Alembic, uvicorn), seconds of start-up. ``memberwise ingest`` needs
only the events domain, so it is dispatched to a Typer app holding just that command; every
other command goes to the full app. Both parse the same arguments the same way.
"""

from __future__ import annotations

import gc
import sys

#: Commands that run from their own small Typer app (name -> "module:attribute").
FAST_COMMANDS = {"ingest": "memberwise.events.commands:ingest_app"}


def main() -> None:
    """Run the command named in ``sys.argv``."""
    target = FAST_COMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    if target is not None:
        from memberwise.events.timeline import mark

        mark("python started")
    if target is None:
        from memberwise.cli import app

        app(prog_name="memberwise")
        return
    if "--help" not in sys.argv[2:]:
        from memberwise.config import get_settings
        from memberwise.home import not_ready

        problem = not_ready(get_settings())
        if problem is not None:
            print(problem, file=sys.stderr)
            raise SystemExit(2)
    module, attribute = target.split(":")
    fast = getattr(__import__(module, fromlist=[attribute]), attribute)
    mark("imports done")
    # Objects made so far (the imports) and by the command live until the process ends: kept
    # out of the collector's full passes, and of the one at exit that would walk them all.
    gc.freeze()
    try:
        fast(prog_name="memberwise")
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
