"""CPU per CreatePayment on the request path, without the database.

Builds the app through the real bootstrap (metrics, JSON log line, contract monitor,
health tracker, simulated processor) but gives the PaymentService an in-memory unit of
work that costs next to nothing, then calls the CreatePayment handler the way grpc.aio
does: the ObservingInterceptor's `intercept_service` per call, the wrapped handler with
the raw request bytes and a minimal ServicerContext, then the response serializer.
What is left is everything payorch does for a payment except storing it: decoding,
auth (cache hit), the card-number scan, parsing, config (cache hit), the plan, the
aggregate, routing, the processor, health, metrics, the log line, the proto response.

    python bench/request_path.py [--body single|split|both] [-n 2000] [--rounds 7]
    python bench/request_path.py --body single --profile   # cProfile top lists
    python bench/request_path.py --body single --storage   # with bootstrap's SQLite writes

Reports CPU (time.process_time) per payment: the fastest round and the median. The sqlite
database bootstrap creates is used once, for the API key and the merchant config,
which then stay in their caches. With --storage the PaymentService is bootstrap's own
and each payment is written to that SQLite file as `payorch serve` writes it, so the
figures are the whole of CreatePayment, storage included; --concurrency K runs K at a
time, as a loaded server does, so their writes share commits.
A benchmark aid, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import PATH, Requests

from payorch.app.ports import ConcurrentUpdate, DuplicateRequest, StoredEvent
from payorch.domain.payment import Payment


class MemoryPaymentRepository:
    """Just enough of the repository for CreatePayment: the (merchant, request_id)
    gate, the version check, and what a save does to the aggregate. Keeps no payment
    objects (a database would not hold them in the process either)."""

    def __init__(self, versions: dict[str, int], requests: set[tuple[str, str]]) -> None:
        self._versions = versions
        self._requests = requests
        self.events = 0

    async def add(self, payment: Payment) -> None:
        key = (payment.merchant_id, payment.request_id)
        if key in self._requests:
            raise DuplicateRequest(payment.request_id)
        self._requests.add(key)
        self._versions[payment.id] = payment.version
        self._written(payment)

    async def save(self, payment: Payment) -> None:
        if self._versions.get(payment.id) != payment.version:
            raise ConcurrentUpdate(payment.id)
        payment.version += 1
        self._versions[payment.id] = payment.version
        self._written(payment)

    def _written(self, payment: Payment) -> None:
        self.events += len(payment.pending_events)
        for s in payment.steps:
            s.stored_attempts = len(s.attempts)
        payment.mark_stored()  # as the real writes do: the settled bookkeeping runs
        payment.pending_events.clear()

    async def get_by_request(self, merchant_id: str, request_id: str) -> Payment | None:
        raise NotImplementedError("the benchmark sends fresh request ids only")

    async def events_of(self, payment_id: str) -> list[StoredEvent]:
        raise NotImplementedError


class MemoryUnitOfWork:
    def __init__(self, repo: MemoryPaymentRepository) -> None:
        self.payments = repo

    async def __aenter__(self) -> MemoryUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def commit(self) -> None:
        pass


class MemoryUnitOfWorkFactory:
    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.requests: set[tuple[str, str]] = set()
        self._repo = MemoryPaymentRepository(self.versions, self.requests)

    def __call__(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self._repo)

    # The one-shot writes of the hot path (add or save, then commit).
    async def insert_payment(self, payment: Payment, *, only_if: object = None) -> None:
        assert only_if is None, "an installment's claimed charge is not measured here"
        await self._repo.add(payment)

    async def update_payment(self, payment: Payment) -> None:
        await self._repo.save(payment)

    def clear(self) -> None:
        self.versions.clear()
        self.requests.clear()


class CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class FakeContext:
    """What the handler and the interceptor ask of a grpc.aio ServicerContext."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return 10.0  # the load generator sends a deadline

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def code(self) -> None:
        return None

    def details(self) -> str:
        return ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise RuntimeError(f"aborted: {code.name}: {details}")

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"aborted: {status}")


class Harness:
    def __init__(self, storage: bool = False) -> None:
        self.storage = storage
        self.container: Any = None
        self.uow = MemoryUnitOfWorkFactory()
        self.interceptor: Any = None
        self.generic: Any = None
        self.metadata: tuple[tuple[str, str], ...] = ()
        self._tmp = tempfile.TemporaryDirectory(prefix="payorch-bench-")

    async def start(self, log_file: TextIO) -> None:
        from payorch.app.auth import Scope
        from payorch.app.payments import PaymentService
        from payorch.app.settlement import Settlement
        from payorch.bootstrap import MAX_CACHE_S, bootstrap
        from payorch.entrypoints.grpc.handlers import build_handler
        from payorch.entrypoints.grpc.interceptors import ObservingInterceptor
        from payorch.entrypoints.grpc.orchestrator import PaymentOrchestratorServicer
        from payorch.entrypoints.grpc.server import SERVICES
        from payorch.entrypoints.logs import configure
        from payorch.settings import Settings

        # As `payorch serve` configures logging, to /dev/null rather than a terminal.
        configure("INFO", log_file)

        settings = Settings(
            database_url=f"sqlite:///{self._tmp.name}/bench.db",
            # The caches never expire during the run (well under an hour): no lookups in
            # the figures.
            auth_cache_s=MAX_CACHE_S,
            config_cache_s=MAX_CACHE_S,
        )
        c = await bootstrap(settings)
        if not self.storage:
            # bootstrap's PaymentService, with the in-memory unit of work instead.
            c.payments = PaymentService(
                self.uow,  # type: ignore[arg-type]  # only what CreatePayment asks of it
                c.router,
                c.clock,
                c.configs,
                Settlement(c.router.processors, c.clock),
                observation=c.observability.payment_observation,
            )
        self.container = c
        key = await c.api_keys.create(
            merchant_id="m_bench", scope=Scope.MERCHANT, label="bench", now=c.clock.now()
        )
        self.metadata = (
            ("authorization", f"Bearer {key.plaintext}"),
            ("user-agent", "grpc-python-asyncio/1.0"),
        )
        # As create_server builds them.
        observed = c.observability
        self.interceptor = ObservingInterceptor(
            observed.monitor,
            observed.observers,
            observed.tracer,
            c.clock,
            latency_slo_ms=observed.latency_slo_ms,
        )
        service = SERVICES[0]
        assert service.full_name == "payments.orchestrator.v1.PaymentOrchestrator"
        self.generic = build_handler(
            service, PaymentOrchestratorServicer(c.payments, c.configs), c.authenticator
        )

    async def _continuation(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self.generic.service(details)

    async def call(self, raw: bytes) -> bytes:
        """One CreatePayment as grpc.aio runs it: interceptor, handler, serializer."""
        details = CallDetails(PATH, self.metadata)
        handler = await self.interceptor.intercept_service(self._continuation, details)
        response = await handler.unary_unary(raw, FakeContext(self.metadata))
        out: bytes = handler.response_serializer(response)
        return out

    def reset(self) -> None:
        """Between rounds: forget stored payments and the simulator's intents, so every
        round starts from the same heap."""
        self.uow.clear()
        for sim in self.container.simulated.values():
            sim.ledger.clear()

    async def close(self) -> None:
        await self.container.close()
        self._tmp.cleanup()


async def _run(
    call: Callable[[bytes], Awaitable[bytes]], bodies: list[bytes], concurrency: int = 1
) -> float:
    t0 = time.process_time()
    if concurrency == 1:
        for raw in bodies:
            await call(raw)
    else:
        limit = asyncio.Semaphore(concurrency)

        async def one(raw: bytes) -> None:
            async with limit:
                await call(raw)

        await asyncio.gather(*(one(raw) for raw in bodies))
    return time.process_time() - t0


async def measure(
    h: Harness, body: str, n: int, rounds: int, warmup: int, profile: bool, concurrency: int = 1
) -> list[float]:
    from payments.orchestrator.v1 import orchestrator_pb2 as orch
    from payments.result.v1 import result_pb2

    run_id = f"{body}{time.time_ns() % 10**9}"
    requests = Requests(body, run_id, 0)
    # The response must be a real payment, or the figures measure an error path.
    first = orch.CreatePaymentResponse.FromString(await h.call(requests.next()))
    expected = "PAYMENT_STATUS_SUCCEEDED"
    status = result_pb2.PaymentStatus.Name(first.payment.result.status)
    if status != expected:
        raise SystemExit(f"{body}: the payment ended {status}, not {expected}")
    for _ in range(warmup):
        await h.call(requests.next())
    per_payment_us: list[float] = []
    for r in range(rounds):
        h.reset()
        bodies = [requests.next() for _ in range(n)]
        gc.collect()
        if profile and r == rounds - 1:
            prof = cProfile.Profile()
            prof.enable()
            cpu = await _run(h.call, bodies, concurrency)
            prof.disable()
            _print_profile(prof, body, n)
        else:
            cpu = await _run(h.call, bodies, concurrency)
        per_payment_us.append(cpu / n * 1e6)
    return per_payment_us


def _print_profile(prof: cProfile.Profile, body: str, n: int) -> None:
    print(f"\n== cProfile, {body}, {n} payments (times are totals; profiling inflates them)")
    for key in ("tottime", "cumtime"):
        print(f"\n-- top 35 by {key}")
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.strip_dirs().sort_stats(key).print_stats(35)


async def run(args: argparse.Namespace, log_file: TextIO) -> dict[str, list[float]]:
    h = Harness(storage=args.storage)
    await h.start(log_file)
    try:
        bodies = ["single", "split"] if args.body == "both" else [args.body]
        return {
            body: await measure(
                h, body, args.n, args.rounds, args.warmup, args.profile, args.concurrency
            )
            for body in bodies
        }
    finally:
        await h.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body", choices=["single", "split", "both"], default="both")
    p.add_argument("-n", type=int, default=1000, help="payments per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--profile", action="store_true", help="cProfile the last round")
    p.add_argument(
        "--storage",
        action="store_true",
        help="write each payment to bootstrap's SQLite database, as the server does",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="payments under way at once (with --storage, concurrent writes share commits)",
    )
    args = p.parse_args()
    with open(os.devnull, "w") as log_file:
        results = asyncio.run(run(args, log_file))
    # Other load on a shared machine only ever adds CPU time (cache misses, a slower
    # clock): the fastest round is the figure to compare; the median says how noisy.
    print(f"\nCPU per payment, {args.rounds} rounds of {args.n}:")
    for body, us in results.items():
        print(
            f"  {body:6s} min {min(us):6.1f} us  median {statistics.median(us):6.1f} us"
            f"  ({' '.join(f'{u:.0f}' for u in us)})"
        )


if __name__ == "__main__":
    main()
