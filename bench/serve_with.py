"""Start a server with a different runtime setting, to measure an optimization before
anyone changes src/:

    python bench/serve_with.py [--uvloop] [--gc-freeze] [--gc-threshold N] \
        [--switch-interval S] -- \
        -m payorch.entrypoints.cli serve ...
    python bench/serve_with.py --uvloop -- bench/bare_server.py --listen 127.0.0.1:0

--uvloop        asyncio.run() gets uvloop's event loop (pip install uvloop first)
--gc-freeze     move everything allocated at import into the permanent generation
--gc-threshold  the generation-0 threshold (CPython's default is 700)
--switch-interval  sys.setswitchinterval (CPython's default is 0.005 s): how long a
                thread that wants the GIL waits before asking the holder to let go

`bench/run.py --uvloop --gc-threshold 50000` passes these through.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import runpy
import sys
from pathlib import Path


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: serve_with.py [options] -- (-m MODULE | SCRIPT) ARGS...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--gc-freeze", action="store_true")
    p.add_argument("--gc-threshold", type=int, default=0)
    p.add_argument("--switch-interval", type=float, default=0.0)
    opts = p.parse_args(argv[:split])
    target = argv[split + 1 :]
    if opts.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if opts.switch_interval:
        sys.setswitchinterval(opts.switch_interval)
    if opts.gc_threshold:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(opts.gc_threshold, g1, g2)
    if target[0] == "-m":
        module, rest = target[1], target[2:]
        if opts.gc_freeze:
            __import__(module)
            if module.startswith("payorch."):
                __import__("payorch.entrypoints.serve")  # what `serve` imports lazily
            gc.freeze()
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script, rest = target[0], target[1:]
        if opts.gc_freeze:
            gc.freeze()
        sys.argv = [script, *rest]
        sys.path.insert(0, str(Path(script).resolve().parent))
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
