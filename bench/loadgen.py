"""The load generator: N worker processes, each one grpc.aio channel and one event loop.

h2load cannot be used for CreatePayment: it sends the same body on every request,
and every payment needs a fresh request_id (the same id is an idempotent replay).
So each worker builds its requests from a pre-serialized template plus the
request_id field appended as raw protobuf bytes (a few hundred nanoseconds), and
sends bytes through a generic `unary_unary` with no (de)serializer: the client
spends its CPU on gRPC, not on protobuf.

Two modes:
- closed: K requests in flight per worker, each loop sends the next request as
  soon as the previous one answers (throughput at saturation);
- open: a fixed schedule of R requests/s per worker whatever the server does;
  latency is measured from the scheduled send time, so a client or server that
  falls behind shows up in the latency (no coordinated omission).

A worker warms up until `--start-at`, records every request that starts inside
[start_at, start_at + duration), waits for those to finish and prints one JSON
line: counts per status code, latencies (microseconds), its own CPU time.

    python bench/loadgen.py --target 127.0.0.1:PORT --token po_... --body single \
        --mode closed --concurrency 32 --start-at <unix time> --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import grpc

PATH = "/payments.orchestrator.v1.PaymentOrchestrator/CreatePayment"
# Request ids never hold a long digit run (the server refuses card-number look-alikes).
REQUEST_ID_TAG = b"\x12"  # field 2 (request_id), wire type 2 (length-delimited)


def template(body: str) -> bytes:
    """The serialized CreatePaymentRequest without its request_id."""
    from payments.orchestrator.v1 import orchestrator_pb2 as orch

    req = orch.CreatePaymentRequest(currency="USD", amount_minor=10000)
    if body == "single":
        req.payment_method = "pm_card_visa"
        req.method = "card"
    elif body == "split":
        req.methods.extend(
            [
                orch.PaymentMethodInput(
                    method="apple_pay", token="pm_card_visa", amount_minor=6000
                ),
                orch.PaymentMethodInput(method="card", token="pm_card_visa"),
            ]
        )
    else:
        raise SystemExit(f"unknown body {body!r}")
    return req.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


class Requests:
    """Fresh, distinct request bodies: template + request_id field (any field order parses)."""

    def __init__(self, body: str, run_id: str, worker: int, replay_ids: int = 0) -> None:
        self._template = template(body)
        self._prefix = f"bench.{run_id}.w{worker}.".encode()
        self._n = 0
        # > 0: ids cycle over this many, so after the first round every request is
        # an idempotent replay of a finished payment (a client's retry storm).
        self._cycle = replay_ids

    def next(self) -> bytes:
        self._n += 1
        n = (self._n - 1) % self._cycle + 1 if self._cycle else self._n
        rid = self._prefix + str(n).encode()
        return self._template + REQUEST_ID_TAG + _varint(len(rid)) + rid


class Recorder:
    def __init__(self, start_at: float, stop_at: float) -> None:
        self.start_at = start_at
        self.stop_at = stop_at
        self.latencies_us: list[int] = []
        self.codes: Counter[str] = Counter()
        self.total_codes: Counter[str] = Counter()  # warm-up included
        self.first_error: str = ""
        self.max_lag_us = 0
        # (start, latency, code) of each recorded request, for --trace.
        self.trace: list[tuple[float, int, str]] | None = None

    def record(self, started_wall: float, latency_s: float, code: str) -> None:
        self.total_codes[code] += 1
        if self.start_at <= started_wall < self.stop_at:
            self.codes[code] += 1
            if code == "OK":
                self.latencies_us.append(int(latency_s * 1e6))
            if self.trace is not None:
                self.trace.append((started_wall, int(latency_s * 1e6), code))


async def _send(
    call: Any, body: bytes, metadata: tuple[tuple[str, str], ...], deadline_s: float, rec: Recorder
) -> str:
    try:
        await call(body, metadata=metadata, timeout=deadline_s)
        return "OK"
    except grpc.aio.AioRpcError as exc:
        if not rec.first_error:
            rec.first_error = f"{exc.code().name}: {exc.details()}"[:300]
        return str(exc.code().name)


async def closed_loop(args: argparse.Namespace, call: Any, reqs: Requests, rec: Recorder) -> None:
    metadata = (("authorization", f"Bearer {args.token}"),)
    issued = 0

    async def loop() -> None:
        nonlocal issued
        while True:
            wall = time.time()
            if wall >= rec.stop_at or (args.max_requests and issued >= args.max_requests):
                return
            issued += 1
            t0 = time.perf_counter()
            code = await _send(call, reqs.next(), metadata, args.timeout, rec)
            rec.record(wall, time.perf_counter() - t0, code)

    await asyncio.gather(*(loop() for _ in range(args.concurrency)))


async def open_loop(args: argparse.Namespace, call: Any, reqs: Requests, rec: Recorder) -> None:
    metadata = (("authorization", f"Bearer {args.token}"),)
    interval = 1.0 / args.rate
    # Wall clock and perf_counter tied once; the schedule runs on perf_counter.
    wall0, perf0 = time.time(), time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    backlog_limit = max(1000, int(args.rate * args.timeout))

    async def one(scheduled_perf: float, body: bytes) -> None:
        code = await _send(call, body, metadata, args.timeout, rec)
        rec.record(wall0 + (scheduled_perf - perf0), time.perf_counter() - scheduled_perf, code)

    i = 0
    stop_perf = perf0 + (rec.stop_at - wall0)
    while True:
        scheduled = perf0 + i * interval
        if scheduled >= stop_perf or (args.max_requests and i >= args.max_requests):
            break
        now = time.perf_counter()
        if scheduled > now:
            await asyncio.sleep(scheduled - now)
        else:
            rec.max_lag_us = max(rec.max_lag_us, int((now - scheduled) * 1e6))
        if len(tasks) >= backlog_limit:
            rec.record(wall0 + (scheduled - perf0), 0.0, "CLIENT_BACKLOG_FULL")
        else:
            task = asyncio.create_task(one(scheduled, reqs.next()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    reqs = Requests(args.body, args.run_id, args.worker, args.replay_ids)
    channel = grpc.aio.insecure_channel(
        args.target,
        options=[
            # One HTTP/2 connection per worker; never let streams queue client-side.
            ("grpc.max_concurrent_streams", 1 << 20),
            ("grpc.enable_retries", 0),
        ],
    )
    call = channel.unary_unary(PATH, request_serializer=None, response_deserializer=None)
    await asyncio.wait_for(channel.channel_ready(), timeout=10)
    # Connected: wait for the warm-up to begin (all workers begin together).
    delay = args.start_at - args.warmup - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    rec = Recorder(args.start_at, args.start_at + args.duration)
    if args.trace:
        rec.trace = []
    cpu0 = time.process_time()
    if args.mode == "closed":
        await closed_loop(args, call, reqs, rec)
    else:
        await open_loop(args, call, reqs, rec)
    cpu1 = time.process_time()
    await channel.close()
    return {
        "worker": args.worker,
        "pid": os.getpid(),
        "codes": dict(rec.codes),
        "total_codes": dict(rec.total_codes),
        "latencies_us": rec.latencies_us,
        "first_error": rec.first_error,
        "max_lag_us": rec.max_lag_us,
        # CPU over the whole run (warm-up included), and its wall time, for cores used.
        "cpu_s": cpu1 - cpu0,
        "wall_s": time.time() - (args.start_at - args.warmup),
        "trace": rec.trace,
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="one load generator worker")
    p.add_argument("--target", required=True)
    p.add_argument("--token", default="none")
    p.add_argument("--body", choices=["single", "split"], default="single")
    p.add_argument("--mode", choices=["closed", "open"], default="closed")
    p.add_argument("--concurrency", type=int, default=16, help="closed: requests in flight")
    p.add_argument("--rate", type=float, default=100.0, help="open: requests per second")
    p.add_argument("--start-at", type=float, required=True, help="unix time the window opens")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds before --start-at")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, seconds")
    p.add_argument("--max-requests", type=int, default=0, help="0: no limit")
    p.add_argument("--run-id", default="x")
    p.add_argument("--worker", type=int, default=0)
    p.add_argument(
        "--replay-ids",
        type=int,
        default=0,
        help="cycle request ids over this many per worker: the rest are replays (0: all new)",
    )
    p.add_argument(
        "--trace", metavar="FILE", help="write each recorded request: start time, µs, code"
    )
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    result = asyncio.run(run(args))
    trace = result.pop("trace")
    if args.trace and trace is not None:
        with open(args.trace, "w") as out:
            out.writelines(f"{t:.6f} {us} {code}\n" for t, us, code in trace)
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
