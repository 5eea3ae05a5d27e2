"""Two server processes sharing PostgreSQL: identical concurrent requests execute once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from tests.conftest import POSTGRES_URL, require_postgres
from tests.e2e.server import create_key, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    require_postgres()
    workdir = tmp_path_factory.mktemp("two")
    name = f"payorch_race_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    # Simulated latency keeps the first request in flight while the others arrive.
    first = start_server(workdir, url, args=("--simulate", "latency_ms=300"))
    second = start_server(workdir, url, args=("--simulate", "latency_ms=300"))
    key = create_key(url, merchant="m_race")
    yield first, second, key, url
    first.stop()
    second.stop()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(sql: str) -> None:
    import asyncio

    import asyncpg

    from tests.conftest import _postgres_admin

    async def run() -> None:
        conn = await asyncpg.connect(_postgres_admin(POSTGRES_URL))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _count(url: str, sql: str, *args: object) -> int:
    import asyncio

    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_identical_requests_on_two_processes_charge_once(two_servers):
    first, second, key, url = two_servers
    request = orch.CreatePaymentRequest(
        request_id=f"race-{uuid.uuid4()}",
        amount_minor=4200,
        currency="usd",
        payment_method="pm_card_visa",
    )
    metadata = [("authorization", f"Bearer {key}")]

    def call(address: str):
        with grpc.insecure_channel(address) as ch:
            stub = orch_grpc.PaymentOrchestratorStub(ch)
            try:
                return stub.CreatePayment(request, metadata=metadata, timeout=20).payment
            except grpc.RpcError as exc:
                return exc.code()

    addresses = [first.address, second.address] * 4
    with ThreadPoolExecutor(len(addresses)) as pool:
        results = list(pool.map(call, addresses))

    payments = [r for r in results if not isinstance(r, grpc.StatusCode)]
    refused = [r for r in results if isinstance(r, grpc.StatusCode)]
    assert payments, results
    assert all(code == grpc.StatusCode.ABORTED for code in refused), refused
    assert len({p.payment_id for p in payments}) == 1
    assert sum(not p.replayed for p in payments) == 1
    assert (
        _count(url, "SELECT count(*) FROM payments WHERE request_id = $1", request.request_id) == 1
    )
    authorizations = _count(
        url,
        "SELECT count(*) FROM attempts a JOIN payments p ON p.id = a.payment_id "
        "WHERE p.request_id = $1 AND a.operation = 'authorize'",
        request.request_id,
    )
    assert authorizations == 1
