"""A soak: one `payorch serve` under a closed loop for minutes, its RSS sampled, to see
whether anything grows with the number of payments.

    python bench/soak.py                                    # SQLite, 240 s, remember=20000
    python bench/soak.py --database-url postgresql://postgres@127.0.0.1:5432/payorch_soak
    python bench/soak.py --seconds 600 --remember 0         # the simulator keeps everything

The simulated processor keeps every PaymentIntent unless told otherwise (about 0.9 KB a
payment, as Stripe keeps them), so a soak bounds it with `--remember` (passed as
`--simulate remember=N`); with N well below the payments of the run, what is left to
grow is the server's own. Prints one line per sample and a JSON summary: payments, rate,
RSS at the start, after the warm-up and at the end, and the growth over the second half
in MB per 100,000 payments. A PostgreSQL database must exist (it is not dropped). A
benchmark aid, not a test: `make test` runs it for a few seconds so it cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BENCH, BENCH_SECRETS_KEY, MERCHANT, PYTHON, Server, start_process


def _key(database_url: str, cwd: Path) -> str:
    command = [PYTHON, "-m", "payorch.entrypoints.cli", "keys", "--database-url", database_url]
    out = subprocess.run(
        [*command, "create", "--merchant", MERCHANT],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        timeout=120,
    ).stdout
    return str(json.loads(out.splitlines()[0])["api_key"])


def _rss_mb(server: Server) -> float:
    return server.status_kb("VmRSS") / 1024


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = args.database_url or f"sqlite:///{workdir}/soak.db"
    token = _key(url, workdir)
    cmd = [PYTHON, "-m", "payorch.entrypoints.cli", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--http-port", "0", "--database-url", url]
    if args.remember:
        cmd += ["--simulate", f"remember={args.remember}"]
    env = {"PAYORCH_SECRETS_KEY": BENCH_SECRETS_KEY, **os.environ}
    server = start_process("payorch", cmd, env, workdir)
    procs: list[subprocess.Popen[str]] = []
    samples: list[tuple[float, float]] = []
    try:
        start_at = time.time() + 2.0
        for w in range(args.workers):
            loadgen = [PYTHON, str(BENCH / "loadgen.py"), "--target", server.address]
            loadgen += [
                "--token",
                token,
                "--mode",
                "closed",
                "--concurrency",
                str(args.concurrency),
            ]
            loadgen += ["--start-at", f"{start_at:.6f}", "--duration", str(args.seconds)]
            loadgen += ["--run-id", f"soak{w}", "--worker", str(w)]
            procs.append(
                subprocess.Popen(loadgen, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        while True:
            t = time.monotonic() - t0
            samples.append((round(t, 1), round(_rss_mb(server), 1)))
            print(f"{t:6.0f} s  RSS {samples[-1][1]:7.1f} MB", flush=True)
            if t >= args.seconds:
                break
            time.sleep(min(args.interval, args.seconds - t))
        codes: dict[str, int] = {}
        for p in procs:
            out, err = p.communicate(timeout=args.seconds + 120)
            if p.returncode != 0 or not out.strip():
                raise RuntimeError(f"load generator failed: {err.strip()[-500:]}")
            for k, v in json.loads(out.strip().splitlines()[-1])["codes"].items():
                codes[k] = codes.get(k, 0) + v
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.stop()
    ok = codes.get("OK", 0)
    half = [s for s in samples if s[0] >= args.seconds / 2]
    growth = half[-1][1] - half[0][1] if len(half) > 1 else 0.0
    half_payments = ok * (half[-1][0] - half[0][0]) / args.seconds if len(half) > 1 else 0
    return {
        "database": "postgresql" if url.startswith("postgres") else "sqlite",
        "seconds": args.seconds,
        "remember": args.remember,
        "codes": codes,
        "payments_per_s": round(ok / args.seconds, 1),
        "rss_mb": {
            "start": samples[0][1],
            "end": samples[-1][1],
            "max": max(r for _, r in samples),
        },
        "second_half_growth_mb_per_100k_payments": (
            round(growth / half_payments * 100_000, 2) if half_payments else None
        ),
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--remember", type=int, default=20_000, help="simulator intents kept (0: all)")
    p.add_argument("--workers", type=int, default=2, help="load generator processes")
    p.add_argument("--concurrency", type=int, default=32, help="in flight per worker")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="payorch-soak-") as tmp:
        result = soak(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
