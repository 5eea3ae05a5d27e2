"""Security properties of the real server process: who may call, what they may see,
and what must never be stored, logged or exported.

Most tests use the module-scoped `server` (tests/e2e/conftest.py: keys for m_1, m_2
and ops; SQLite and PostgreSQL). TLS, the demo key and the error-heavy runs start
servers of their own.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from google.protobuf import message as pb_message
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import analytics_pb2
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from payorch.domain.card_data import contains_card_number, luhn_valid
from payorch.entrypoints.grpc.server import OPS_ONLY, SERVICES
from tests import certificates
from tests.conftest import POSTGRES_URL, cipher_for_tests, require_postgres
from tests.e2e.server import RunningServer, create_key, start_server
from tests.e2e.threaded_stripe import ThreadedFakeStripe
from tests.fakes.fake_stripe import FakeStripe, Fault
from tests.rich_status import field_violations

pytestmark = pytest.mark.e2e

METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
METHOD_IDS = [m.full_name.rsplit(".", 2)[-2] + "." + m.name for m in METHODS]
ORCHESTRATOR = "payments.orchestrator.v1.PaymentOrchestrator"
_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


def rid(prefix: str = "sec") -> str:
    """A unique request id without digits: a UUID's digits look like a card number
    about once in 500, and the server rightly refuses those."""
    return f"{prefix}-{uuid.uuid4().hex.translate(_NO_DIGITS)}"


# -- calling any RPC from its descriptor -----------------------------------------------
def rpc_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def request_class(method: MethodDescriptor) -> type[pb_message.Message]:
    return GetMessageClass(method.input_type)


def invoke(
    channel: grpc.Channel,
    method: MethodDescriptor,
    request: pb_message.Message,
    metadata: list[tuple[str, str]] | tuple[()] = (),
    timeout: float = 20,
) -> Any:
    call = channel.unary_unary(
        rpc_path(method),
        request_serializer=request_class(method).SerializeToString,
        response_deserializer=GetMessageClass(method.output_type).FromString,
    )
    return call(request, metadata=metadata, timeout=timeout)


def failure(fn: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value


def rich_status_bytes(exc: grpc.RpcError) -> bytes:
    status = rpc_status.from_call(exc)
    return b"" if status is None else status.SerializeToString()


@pytest.fixture
def stub(server: RunningServer) -> Iterator[orch_grpc.PaymentOrchestratorStub]:
    with server.channel() as ch:
        yield orch_grpc.PaymentOrchestratorStub(ch)


def pay(stub, server, *, who="m_1", request_id=None, metadata=None, **fields):
    body: dict[str, Any] = {"request_id": request_id or rid("sec"), "currency": "usd"}
    body.setdefault("amount_minor", 1999)
    body.update(fields)
    if "payment_method" not in body and "methods" not in body:
        body["payment_method"] = "pm_card_visa"
    md = server.auth(who) if isinstance(who, str) else who
    return stub.CreatePayment(
        orch.CreatePaymentRequest(**body, metadata=metadata or {}), metadata=md, timeout=20
    ).payment


def all_payments(stub, server, who: str = "ops") -> list[orch.Payment]:
    seen, token = [], ""
    while True:
        page = stub.ListPayments(
            orch.ListPaymentsRequest(page_size=100, page_token=token),
            metadata=server.auth(who),
            timeout=20,
        )
        seen += list(page.payments)
        token = page.next_page_token
        if not token:
            return seen


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    """The real `payorch` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        timeout=60,
    )


# -- reading everything the service stored or exported ----------------------------------
def _run_async(coro: Any) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def database_cells(url: str) -> list[str]:
    """Every non-null value of every row of every table, as text, one cell at a time.

    Cell by cell, not a dump: SQLite's pages put values side by side (two timestamps
    in a row make a long digit run), which would read as card numbers by accident.
    """
    cells: list[str] = []
    if url.startswith("sqlite"):
        path = make_url(url).database
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for row in con.execute(f'SELECT * FROM "{table}"'):
                    for v in row:
                        if isinstance(v, bytes):
                            cells.append(v.decode("latin-1"))
                        elif v is not None:
                            cells.append(str(v))
        finally:
            con.close()
        return cells

    async def read() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            for t in tables:
                for row in await conn.fetch(f'SELECT * FROM "{t["table_name"]}"'):
                    cells.extend(str(v) for v in row.values() if v is not None)
        finally:
            await conn.close()

    _run_async(read())
    return cells


def database_file_bytes(url: str) -> bytes:
    """SQLite only: the raw database file and its WAL (deleted rows linger there)."""
    if not url.startswith("sqlite"):
        return b""
    path = Path(make_url(url).database or "")
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def metrics_page(server: RunningServer) -> str:
    with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


# Random identifiers (UUIDs, hex ids, SHA-256 digests) are digit-heavy: a long enough
# run of their digits is Luhn-valid one time in ten. They are masked before the scan.
_RANDOM_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{12,}"
)
_HEX_LETTER = re.compile(r"[a-fA-F-]")
# Likewise the fraction digits of a float ("latency_seconds_sum 0.3224781769981746").
_DECIMAL = re.compile(r"\d*\.\d+(?:[eE][-+]?\d+)?")


def card_like(text: str) -> bool:
    """contains_card_number, with random identifiers and decimal fractions masked first."""
    masked = _RANDOM_ID.sub(
        lambda m: "<id>" if _HEX_LETTER.search(m.group(0)) else m.group(0), text
    )
    return contains_card_number(_DECIMAL.sub("<num>", masked))


SECRET_MARKERS = ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_")
# Stripe's test card numbers, in the shapes the tests send them.
CARDS = (
    "4242 4242 4242 4242",
    "4242-4242-4242-4242",
    "4242424242424242",
    "4000056655665556",
    "5555 5555 5555 4444",
    "378282246310005",
)


def forbidden_in(text: str, secrets: tuple[str, ...], *, generic_card_scan: bool = True):
    """What `text` holds that it must not: secrets, secret-looking prefixes, card numbers."""
    found = [s for s in secrets if s and s in text]
    found += [m for m in SECRET_MARKERS if m in text]
    found += [c for c in CARDS if c in text or c.replace(" ", "").replace("-", "") in text]
    if generic_card_scan:
        found += [line[:200] for line in text.splitlines() if card_like(line)]
    return found


# == authentication ===================================================================
BAD_CREDENTIALS: dict[str, Callable[[RunningServer], list[tuple[str, str]]]] = {
    "no metadata": lambda s: [],
    "empty bearer": lambda s: [("authorization", "Bearer ")],
    "no scheme": lambda s: [("authorization", s.keys["m_1"])],
    "basic scheme with a valid key": lambda s: [("authorization", f"Basic {s.keys['m_1']}")],
    "unknown key": lambda s: [("authorization", "Bearer po_000000000000_" + "A" * 43)],
    "valid key with a changed character": lambda s: [
        (
            "authorization",
            "Bearer " + s.keys["m_1"][:-1] + ("A" if s.keys["m_1"][-1] != "A" else "B"),
        )
    ],
    "valid key with a suffix": lambda s: [("authorization", f"Bearer {s.keys['m_1']}x")],
    "oversized key": lambda s: [("authorization", "Bearer po_" + "a" * 8000)],
    "key in another header": lambda s: [("x-api-key", s.keys["m_1"])],
    "stripe-looking key": lambda s: [("authorization", "Bearer sk_test_abcdefghijklmnop")],
    "two merchants' keys": lambda s: [
        ("authorization", f"Bearer {s.keys['m_1']}"),
        ("authorization", f"Bearer {s.keys['m_2']}"),
    ],
}


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_every_rpc_refuses_a_caller_without_a_valid_key(server, method, credential):
    metadata = BAD_CREDENTIALS[credential](server)
    with server.channel() as ch:
        err = failure(lambda: invoke(ch, method, request_class(method)(), metadata))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    presented = " ".join(v for _, v in metadata)
    for token in presented.split():
        if len(token) > 12:
            assert token not in (err.details() or ""), "the credential is echoed back"


def test_health_and_reflection_answer_without_a_key_even_with_a_bad_one(server):
    for metadata in ([], [("authorization", "Bearer po_not_a_key")]):
        with server.channel() as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=ORCHESTRATOR), metadata=metadata, timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            replies = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                metadata=metadata,
                timeout=5,
            )
            names = {s.name for r in replies for s in r.list_services_response.service}
        assert ORCHESTRATOR in names


def test_a_revoked_key_is_refused_on_every_rpc(server, stub):
    made = cli("keys", "--database-url", server.database_url, "create", "--merchant", "m_rev")
    assert made.returncode == 0, made.stderr
    issued = json.loads(made.stdout.splitlines()[0])
    key, key_id = issued["api_key"], issued["key_id"]
    auth = [("authorization", f"Bearer {key}")]

    payment = pay(stub, server, who=auth)
    assert payment.merchant_id == "m_rev"

    revoked = cli("keys", "--database-url", server.database_url, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout) == {"revoked": key_id}

    with server.channel() as ch:  # the e2e server caches keys for 0 s
        for method in METHODS:
            request = request_class(method)()
            err = failure(lambda m=method, r=request: invoke(ch, m, r, auth))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, method.name

    again = cli("keys", "--database-url", server.database_url, "revoke", key_id)
    assert again.returncode == 1, "a key is revoked once"


def test_keys_are_stored_and_listed_only_as_hashes(server):
    made = cli("keys", "--database-url", server.database_url, "create", "--merchant", "m_h")
    assert made.returncode == 0, made.stderr
    assert "shown once" in made.stderr
    fresh = json.loads(made.stdout.splitlines()[0])["api_key"]
    keys = [fresh, *server.keys.values()]

    cells = database_cells(server.database_url)
    raw = database_file_bytes(server.database_url)
    for key in keys:
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert digest in cells, "the scan must see the api_keys table"
        assert not [c for c in cells if key in c], "a plaintext key is stored"
        assert key.encode() not in raw, "a plaintext key is in the database file"
        secret_part = key.split("_", 2)[2]  # po_<key id>_<secret>
        assert len(secret_part) >= 40
        assert not [c for c in cells if secret_part in c]

    listed = cli("keys", "--database-url", server.database_url, "list")
    assert listed.returncode == 0, listed.stderr
    assert '"m_h"' in listed.stdout
    for key in keys:
        assert key not in listed.stdout
        assert hashlib.sha256(key.encode()).hexdigest() not in listed.stdout


# == merchant isolation ================================================================
@pytest.mark.parametrize("named", ["m_2", " m_2 ", "M_1", "m_1\u200b"])
def test_a_merchant_key_naming_another_merchant_is_denied_and_nothing_is_stored(
    server, stub, named
):
    request_id = rid("sec-other")
    err = failure(lambda: pay(stub, server, who="m_1", merchant_id=named, request_id=request_id))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert request_id not in [p.request_id for p in all_payments(stub, server)]


def test_naming_the_own_merchant_or_acting_as_ops_for_one_is_allowed(server, stub):
    assert pay(stub, server, who="m_1", merchant_id="m_1").merchant_id == "m_1"
    assert pay(stub, server, who="ops", merchant_id="m_2").merchant_id == "m_2"


# Fields ending in _id that do not name a stored object of the caller: the caller's own
# references (idempotency key, order, processor customer) and the global contract catalogue.
NOT_OBJECT_IDS = {"merchant_id", "request_id", "customer_id", "order_id", "contract_id"}


def object_id_fields(method: MethodDescriptor) -> list[str]:
    return [
        f.name
        for f in method.input_type.fields
        if f.name.endswith("_id")
        and f.name not in NOT_OBJECT_IDS
        and f.type == FieldDescriptor.TYPE_STRING
        and not f.is_repeated
    ]


def _letters(n: int) -> str:
    return uuid.uuid4().hex.translate(_NO_DIGITS)[:n]


def _make_payment(server: RunningServer, owner: str) -> str:
    with server.channel() as ch:
        return str(pay(orch_grpc.PaymentOrchestratorStub(ch), server, who=owner).payment_id)


def _make_plan(server: RunningServer, owner: str) -> Any:
    from payments.installments.v1 import installments_pb2, installments_pb2_grpc
    from payments.plan.v1 import plan_pb2

    with server.channel() as ch:
        return (
            installments_pb2_grpc.InstallmentServiceStub(ch)
            .CreateInstallmentPlan(
                installments_pb2.CreateInstallmentPlanRequest(
                    request_id=rid("sec-plan"),
                    order_id=rid("order"),
                    total=plan_pb2.Money(amount_minor=30000, currency="USD"),
                    payment_method="pm_card_visa",
                    customer_id=f"cus_{owner}",
                ),
                metadata=server.auth(owner),
                timeout=20,
            )
            .plan
        )


def _make_plan_id(server: RunningServer, owner: str) -> str:
    return str(_make_plan(server, owner).plan_id)


def _make_installment_id(server: RunningServer, owner: str) -> str:
    return str(_make_plan(server, owner).installments[-1].installment_id)


def _fan_out(server: RunningServer) -> None:
    """The webhook dispatcher's first step (events -> deliveries), run here in-process:
    nothing is sent anywhere, and the e2e server runs no dispatcher of its own."""
    from payorch.adapters.persistence.engine import create_engine
    from payorch.adapters.persistence.webhooks import SqlAlchemyWebhookRepository

    async def run() -> None:
        engine = create_engine(server.database_url)
        try:
            async with engine.begin() as conn:
                repo = SqlAlchemyWebhookRepository(conn, cipher_for_tests())
                await repo.fan_out(now=dt.datetime.now(dt.UTC), limit=10_000)
        finally:
            await engine.dispose()

    _run_async(run())


def _make_endpoint_id(server: RunningServer, owner: str) -> str:
    """A webhook endpoint of `owner` with at least one delivery."""
    from payments.installments.v1 import installments_pb2, installments_pb2_grpc

    with server.channel() as ch:
        endpoint = (
            installments_pb2_grpc.InstallmentServiceStub(ch)
            .CreateWebhookEndpoint(
                installments_pb2.CreateWebhookEndpointRequest(url="https://93.184.216.34/hook"),
                metadata=server.auth(owner),
                timeout=20,
            )
            .endpoint.endpoint_id
        )
    _make_payment(server, owner)
    _fan_out(server)
    return str(endpoint)


def _make_delivery_id(server: RunningServer, owner: str) -> str:
    from payments.installments.v1 import installments_pb2, installments_pb2_grpc

    endpoint = _make_endpoint_id(server, owner)
    with server.channel() as ch:
        found = installments_pb2_grpc.InstallmentServiceStub(ch).ListWebhookDeliveries(
            installments_pb2.ListWebhookDeliveriesRequest(endpoint_id=endpoint),
            metadata=server.auth(owner),
            timeout=20,
        )
    assert found.deliveries, "fan-out made no delivery"
    return str(found.deliveries[0].delivery_id)


# How to make an object a merchant owns, and an id of the same shape that names nothing.
# A new kind of object id in a request fails the matrix below until it is added here.
OBJECT_FACTORIES: dict[str, tuple[Callable[[RunningServer, str], str], Callable[[], str]]] = {
    "payment_id": (_make_payment, lambda: f"pay_{uuid.uuid4().hex}"),
    "plan_id": (_make_plan_id, lambda: f"ip_{_letters(24)}"),
    "installment_id": (_make_installment_id, lambda: f"ip_{_letters(24)}_3"),
    "endpoint_id": (_make_endpoint_id, lambda: f"we_{uuid.uuid4().hex}"),
    "delivery_id": (_make_delivery_id, lambda: f"whd_{uuid.uuid4().hex}"),
}

OBJECT_CASES = [(m, f) for m in METHODS for f in object_id_fields(m)]


def test_the_isolation_matrix_covers_every_rpc_that_takes_an_object_id():
    assert OBJECT_CASES, "no RPC takes an object id: the matrix would prove nothing"
    assert "GetPayment" in {m.name for m, _ in OBJECT_CASES}


def _outcome(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, details, rich status) of an error; (OK, "", response bytes) of an answer."""
    try:
        reply = fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", rich_status_bytes(exc)
    return grpc.StatusCode.OK, "", reply.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("method", "id_field"),
    OBJECT_CASES,
    ids=[f"{m.name}.{f}" for m, f in OBJECT_CASES],
)
def test_another_merchants_object_is_not_found_exactly_like_a_missing_one(
    server, stub, method, id_field
):
    if id_field not in OBJECT_FACTORIES:
        pytest.fail(f"{method.name}.{id_field}: add a factory to OBJECT_FACTORIES")
    make, missing = OBJECT_FACTORIES[id_field]
    owned = make(server, "m_1")

    def request(object_id: str) -> pb_message.Message:
        req = request_class(method)()
        setattr(req, id_field, object_id)
        if "request_id" in method.input_type.fields_by_name:
            req.request_id = rid("sec-iso")
        return req

    with server.channel() as ch:
        foreign = _outcome(lambda: invoke(ch, method, request(owned), server.auth("m_2")))
        absent = _outcome(lambda: invoke(ch, method, request(missing()), server.auth("m_2")))
        own = _outcome(lambda: invoke(ch, method, request(owned), server.auth("m_1")))

    assert foreign == absent, "a foreign id must be indistinguishable from a missing one"
    if method.name.startswith("List"):
        # There the id filters a listing: an empty page, exactly as for a missing id, is
        # as good as NOT_FOUND. Either way nothing of the owner's comes back.
        assert foreign[0] in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), foreign
        assert owned.encode() not in foreign[2]
    else:
        assert foreign[0] == grpc.StatusCode.NOT_FOUND, foreign
    assert own[0] != grpc.StatusCode.NOT_FOUND, "the owner must find its own object"
    assert own != foreign, "the owner must see something a stranger does not"


def merchant_id_paths(desc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every singular string `merchant_id` in a request, in nested messages too."""
    paths: list[tuple[str, ...]] = []
    for f in desc.fields:
        if f.is_repeated:
            continue
        if f.name == "merchant_id" and f.type == FieldDescriptor.TYPE_STRING:
            paths.append((*prefix, f.name))
        elif f.message_type is not None and not f.message_type.full_name.startswith("google."):
            paths += merchant_id_paths(f.message_type, (*prefix, f.name))
    return paths


def _complaint() -> pb_message.Message:
    from payments.contracts.v1 import monitor_pb2

    return monitor_pb2.ReportMerchantComplaintRequest(
        category="unexplained_error", text="an answer we did not understand"
    )


def _plan_request() -> pb_message.Message:
    from payments.installments.v1 import installments_pb2
    from payments.plan.v1 import plan_pb2

    return installments_pb2.CreateInstallmentPlanRequest(
        request_id=rid("sec-named"),
        order_id=rid("order"),
        total=plan_pb2.Money(amount_minor=30000, currency="USD"),
        payment_method="pm_card_visa",
        customer_id=f"cus_{_letters(12)}",
    )


def _endpoint_request() -> pb_message.Message:
    from payments.installments.v1 import installments_pb2

    return installments_pb2.CreateWebhookEndpointRequest(
        url="https://93.184.216.34/hook", request_id=rid("sec-named")
    )


def _config_request() -> pb_message.Message:
    from payments.config.v1 import config_pb2
    from payments.plan.v1 import plan_pb2

    card = config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD)
    return orch.UpsertMerchantConfigRequest(
        config=config_pb2.MerchantConfig(methods=[card], allowed_currencies=["usd"]),
        expect_default=True,
    )


# A request each RPC that names a merchant takes from its caller as it is, with the
# merchant left empty (the caller's own). A new RPC naming one fails the table below
# until it is added here.
NAMING_BASES: dict[str, Callable[[], pb_message.Message]] = {
    "CreatePayment": lambda: orch.CreatePaymentRequest(
        request_id=rid("sec-named"),
        amount_minor=1999,
        currency="usd",
        payment_method="pm_card_visa",
    ),
    "GetMerchantConfig": orch.GetMerchantConfigRequest,
    "UpsertMerchantConfig": _config_request,
    "CreateInstallmentPlan": _plan_request,
    "CreateWebhookEndpoint": _endpoint_request,
    "GetPaymentStats": analytics_pb2.GetPaymentStatsRequest,
    "ReportMerchantComplaint": _complaint,
}
NAMING_CASES = [
    (m, path)
    for m in METHODS
    for path in merchant_id_paths(m.input_type)
    if f"{m.containing_service.full_name}.{m.name}" not in OPS_ONLY
]


def _set_path(msg: pb_message.Message, path: tuple[str, ...], value: str) -> None:
    for name in path[:-1]:
        msg = getattr(msg, name)
    setattr(msg, path[-1], value)


def test_every_rpc_that_names_a_merchant_is_in_the_naming_table():
    assert {m.name for m, _ in NAMING_CASES} == set(NAMING_BASES)


@pytest.mark.parametrize(
    ("method", "path"), NAMING_CASES, ids=[f"{m.name}.{'.'.join(p)}" for m, p in NAMING_CASES]
)
def test_a_merchant_key_naming_another_merchant_is_denied_on_every_rpc(server, method, path):
    # A merchant of its own: the config written here must not change m_1's.
    me = f"m_named_{_letters(10)}"
    auth = [("authorization", f"Bearer {create_key(server.database_url, merchant=me)}")]

    def call(named: str) -> tuple[grpc.StatusCode, str, bytes]:
        request = NAMING_BASES[method.name]()
        _set_path(request, path, named)
        with server.channel() as ch:
            return _outcome(lambda: invoke(ch, method, request, auth))

    # Another merchant, existing or not, is PERMISSION_DENIED alike, and nothing is
    # stored: the answer tells nothing of who else uses the service.
    before = len(database_cells(server.database_url))
    other, nobody = call("m_2"), call("m_nobody")
    assert len(database_cells(server.database_url)) == before, "a refusal stored something"
    assert other[0] == grpc.StatusCode.PERMISSION_DENIED, other
    assert other[1].replace("m_2", "X") == nobody[1].replace("m_nobody", "X")
    # The caller's own merchant, named, is taken: the request was valid all along.
    assert call(me)[0] == grpc.StatusCode.OK, call(me)


def test_listing_never_shows_another_merchants_payments(server, stub):
    mine = pay(stub, server, who="m_1")
    filters = [
        orch.ListPaymentsRequest(page_size=100),
        orch.ListPaymentsRequest(page_size=100, status=result_pb2.PAYMENT_STATUS_SUCCEEDED),
        orch.ListPaymentsRequest(page_size=100, created_after=mine.created_at),
    ]
    for request in filters:
        token = ""
        while True:
            request.page_token = token
            page = stub.ListPayments(request, metadata=server.auth("m_2"), timeout=20)
            assert {p.merchant_id for p in page.payments} <= {"m_2"}
            assert mine.payment_id not in [p.payment_id for p in page.payments]
            token = page.next_page_token
            if not token:
                break


def test_an_ops_key_reads_any_merchants_payment(server, stub):
    mine = pay(stub, server, who="m_1")
    got = stub.GetPayment(
        orch.GetPaymentRequest(payment_id=mine.payment_id), metadata=server.auth("ops")
    ).payment
    assert got.payment_id == mine.payment_id and got.merchant_id == "m_1"
    assert mine.payment_id in [p.payment_id for p in all_payments(stub, server, "ops")]


def test_idempotency_keys_are_scoped_per_merchant(server, stub):
    request_id = rid("sec-shared")
    first = pay(stub, server, who="m_1", request_id=request_id)
    second = pay(stub, server, who="m_2", request_id=request_id)
    assert first.payment_id != second.payment_id
    assert (first.merchant_id, second.merchant_id) == ("m_1", "m_2")
    assert not first.replayed and not second.replayed
    # Each merchant still replays its own.
    assert pay(stub, server, who="m_2", request_id=request_id).payment_id == second.payment_id
    assert pay(stub, server, who="m_1", request_id=request_id).payment_id == first.payment_id


def test_a_processor_customer_belongs_to_the_merchant_that_used_it_first(server, stub):
    """One processor account serves every merchant: m_2 naming m_1's customer would charge
    its saved card. Refused on both RPCs alike, saying no more than for a customer the
    caller has none of, and nothing is stored or charged."""
    from payments.installments.v1 import installments_pb2, installments_pb2_grpc
    from payments.plan.v1 import plan_pb2

    customer = f"cus_{uuid.uuid4().hex}"
    mine = pay(stub, server, who="m_1", customer_id=customer, off_session=True)
    assert mine.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
    before = {p.payment_id for p in all_payments(stub, server)}
    refused = "unknown customer for this merchant"

    split = [
        orch.PaymentMethodInput(method="card", token="pm_card_visa", amount_minor=999),
        orch.PaymentMethodInput(method="card", token="pm_card_visa", customer_id=customer),
    ]
    for fields, field_ in (
        ({"customer_id": customer, "off_session": True}, "customer_id"),
        ({"methods": split}, "methods[1].customer_id"),
    ):
        err = failure(lambda f=fields: pay(stub, server, who="m_2", **f))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err) == {field_: refused}
        assert "m_1" not in (err.details() or "")

    with server.channel() as ch:
        plans = installments_pb2_grpc.InstallmentServiceStub(ch)

        def plan_ids() -> list[str]:
            listed = plans.ListInstallmentPlans(
                installments_pb2.ListInstallmentPlansRequest(page_size=100),
                metadata=server.auth("m_2"),
                timeout=20,
            )
            return [p.plan_id for p in listed.plans]

        plans_before = plan_ids()
        err = failure(
            lambda: plans.CreateInstallmentPlan(
                installments_pb2.CreateInstallmentPlanRequest(
                    request_id=rid("sec-plan"),
                    order_id=rid("order"),
                    total=plan_pb2.Money(amount_minor=30000, currency="USD"),
                    payment_method="pm_card_visa",
                    customer_id=customer,
                ),
                metadata=server.auth("m_2"),
                timeout=20,
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err) == {"customer_id": refused}
        assert plan_ids() == plans_before
    assert {p.payment_id for p in all_payments(stub, server)} == before
    # The owner goes on using it.
    again = pay(stub, server, who="m_1", customer_id=customer, off_session=True)
    assert again.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED


# == hostile identifiers that reach the database ========================================
def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# Values that reach a database query: for every object id field and every page token.
HOSTILE_IDS = {
    "NUL": "pay_\x00abc",
    "RTL override, oversized": "\u202e" * 5000,
    "SQL": "x' OR '1'='1",
}
HOSTILE_TOKENS = {
    "NUL in the id": _token("2020-01-01T00:00:00+00:00|p\x00"),
    "year 1": _token("0001-01-01T00:00:00+01:00|pay_x"),
    "year 9999": _token("9999-12-31T23:59:59-01:00|pay_x"),
}
# Page tokens as a merchant and as ops: some listings are for operators only, and a
# merchant's call is refused before its token reaches the database.
HOSTILE = [
    *(("m_1", m, f, name, value) for m, f in OBJECT_CASES for name, value in HOSTILE_IDS.items()),
    *(
        (who, m, "page_token", name, value)
        for who in ("m_1", "ops")
        for m in METHODS
        if "page_token" in m.input_type.fields_by_name
        for name, value in HOSTILE_TOKENS.items()
    ),
]


@pytest.mark.parametrize(
    ("who", "method", "field_", "name", "value"),
    HOSTILE,
    ids=[f"{w}-{m.name}.{f}-{n}" for w, m, f, n, _ in HOSTILE],
)
def test_hostile_identifiers_never_cause_an_internal_error(
    server, who, method, field_, name, value
):
    req = request_class(method)()
    setattr(req, field_, value)
    with server.channel() as ch:
        code, details, _ = _outcome(lambda: invoke(ch, method, req, server.auth(who)))
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details
    if field_ == "page_token":
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


def _string_fields(method: MethodDescriptor) -> list[Any]:
    return [
        f
        for f in method.input_type.fields
        if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated
    ]


# The RPCs whose request has a top-level string (the others have nothing to put a NUL in).
STRING_METHODS = [m for m in METHODS if _string_fields(m)]


@pytest.mark.parametrize(
    "method",
    STRING_METHODS,
    ids=[i for m, i in zip(METHODS, METHOD_IDS, strict=True) if _string_fields(m)],
)
def test_a_nul_character_in_any_string_is_invalid_argument(server, method):
    # No database text type stores NUL: every RPC refuses it at the door, by field, to
    # whoever may call it (a merchant is refused an ops-only RPC before that).
    strings = _string_fields(method)
    req = request_class(method)()
    setattr(req, strings[-1].name, "a\x00b")
    who = "ops" if method.full_name in OPS_ONLY else "m_1"
    with server.channel() as ch:
        err = failure(lambda: invoke(ch, method, req, server.auth(who)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert strings[-1].name in field_violations(err)


# == card numbers ======================================================================
def _with_method_token(token: str) -> dict[str, Any]:
    return {"methods": [orch.PaymentMethodInput(method="card", token=token)]}


CARD_FIELDS: list[Any] = [
    pytest.param("m_1", {"payment_method": "4242 4242 4242 4242"}, "payment_method", id="payment_method"),
    pytest.param("m_1", {"metadata": {"note": "card 4242 4242 4242 4242"}}, "metadata", id="metadata-value"),
    pytest.param("m_1", {"metadata": {"4242424242424242": "x"}}, "metadata", id="metadata-key"),
    pytest.param("m_1", {"request_id": "order-4242-4242-4242-4242"}, "request_id", id="request_id"),
    pytest.param("m_1", _with_method_token("4000056655665556"), "methods[0].token", id="methods-token"),
    pytest.param("m_1", {"customer_id": "cus_378282246310005"}, "customer_id", id="customer_id"),
    pytest.param("m_1", {"currency": "5555 5555 5555 4444"}, "currency", id="currency"),
    pytest.param("ops", {"merchant_id": "4242424242424242"}, "merchant_id", id="merchant_id-by-ops"),
    pytest.param(
        "m_1", {"metadata": {"note": "４０００ ０５６６ ５５６６ ５５５６"}}, "metadata",
        id="metadata-fullwidth-digits",
    ),
    pytest.param(
        "m_1", {"metadata": {"note": "card 4242 4242 4242 4242exp 12/25"}}, "metadata",
        id="metadata-card-stuck-to-a-word",
    ),
    pytest.param(
        "m_1", {"metadata": {"note": "Visa4242-4242-4242-4242"}}, "metadata",
        id="metadata-word-stuck-to-a-card",
    ),
    pytest.param(
        "m_1", {"payment_method": "pm_x4000056655665556x"}, "payment_method",
        id="payment_method-card-inside-a-token",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("who", "fields", "bad_field"), CARD_FIELDS)
def test_a_card_number_in_any_field_is_refused_and_never_echoed(
    server, stub, who, fields, bad_field
):
    fields = {"request_id": rid("sec-card"), **fields}
    err = failure(lambda: pay(stub, server, who=who, **fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert bad_field in field_violations(err)
    assert "card number" in field_violations(err)[bad_field]
    assert not contains_card_number(err.details() or "")
    rich = rich_status_bytes(err).decode("latin-1")
    assert not contains_card_number(rich) and not forbidden_in(rich, ())
    assert fields["request_id"] not in [p.request_id for p in all_payments(stub, server)]


def test_a_request_of_800_kb_of_digit_groups_never_holds_the_server(server, stub):
    # The card scan on "1 1 1 ..." used to hold the event loop ~21 s for this request.
    outcome: dict[str, Any] = {}

    def attack() -> None:
        err = failure(lambda: pay(stub, server, request_id="1 " * 400_000))
        outcome["code"], outcome["fields"] = err.code(), field_violations(err)

    thread = threading.Thread(target=attack)
    thread.start()
    thread.join(0.5)  # sent and being read: the health check comes while it is handled
    started = dt.datetime.now()
    with server.channel() as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=20)
    waited = (dt.datetime.now() - started).total_seconds()
    thread.join(30)
    assert outcome["code"] == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in outcome["fields"]
    assert waited < 1.0


@pytest.mark.parametrize(
    ("request_id", "says"),
    [
        ("4000056655665556", "card number"),
        ("refund-4242-4242-4242-4242", "card number"),
        ("é" * 255, "printable ASCII"),
        ("refund 1", "printable ASCII"),
        ("x" * 256, "printable ASCII"),
    ],
)
def test_a_refund_request_id_is_held_to_the_rules_of_a_payment_request_id(
    server, stub, request_id, says
):
    # It is stored with the refund, in the refund's events and in the processor's
    # idempotency key: a card number there would be kept.
    payment = pay(stub, server)
    err = failure(
        lambda: stub.RefundPayment(
            orch.RefundPaymentRequest(payment_id=payment.payment_id, request_id=request_id),
            metadata=server.auth("m_1"),
            timeout=20,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in field_violations(err)["request_id"]
    assert not contains_card_number(rich_status_bytes(err).decode("latin-1"))
    assert not [c for c in database_cells(server.database_url) if request_id in c]


def test_after_card_attempts_no_card_number_is_stored_or_logged(server, stub):
    # Runs after the card tests of this module (file order), on the same server.
    pay(stub, server, metadata={"order": "1234", "amount": "1999"})  # ordinary digits stay
    cells = database_cells(server.database_url)
    assert any("pm_card_visa" in c for c in cells), "the scan must see the payments"
    assert not [c for c in cells if forbidden_in(c, tuple(server.keys.values()))]
    raw = database_file_bytes(server.database_url).decode("latin-1")
    assert not forbidden_in(raw, tuple(server.keys.values()), generic_card_scan=False)
    log = server.log()
    assert log, "the scan must see the log"
    assert not forbidden_in(log, tuple(server.keys.values()))


def _config_for(merchant_id: str) -> dict[str, Any]:
    from payments.config.v1 import config_pb2
    from payments.plan.v1 import plan_pb2

    card = config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD)
    return {"config": config_pb2.MerchantConfig(merchant_id=merchant_id, methods=[card])}


def _plan_for(merchant_id: str) -> dict[str, Any]:
    from payments.plan.v1 import plan_pb2

    return {
        "merchant_id": merchant_id,
        "request_id": rid("sec-plan"),
        "order_id": rid("order"),
        "total": plan_pb2.Money(amount_minor=30000, currency="USD"),
        "payment_method": "pm_card_visa",
        "customer_id": "cus_sec_plan",
    }


# Every RPC where an operator names the merchant it acts for: (rpc, field, request).
OPS_NAMED_MERCHANT: list[Any] = [
    pytest.param("UpsertMerchantConfig", "config.merchant_id", _config_for, id="UpsertMerchantConfig"),
    pytest.param("GetMerchantConfig", "merchant_id", lambda m: {"merchant_id": m}, id="GetMerchantConfig"),
    pytest.param(
        "ReportMerchantComplaint", "merchant_id",
        lambda m: {"merchant_id": m, "category": "slow_or_timed_out", "text": "slow"},
        id="ReportMerchantComplaint",
    ),
    pytest.param("CreateInstallmentPlan", "merchant_id", _plan_for, id="CreateInstallmentPlan"),
    pytest.param(
        "CreateWebhookEndpoint", "merchant_id",
        lambda m: {"merchant_id": m, "url": "https://93.184.216.34/h"},
        id="CreateWebhookEndpoint",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rpc", "field_", "fields"), OPS_NAMED_MERCHANT)
@pytest.mark.parametrize(
    ("merchant_id", "says"),
    [("4000056655665556", "card number"), ("m 1", "letters, digits"), ("m" * 65, "1-64")],
)
def test_a_merchant_id_an_operator_names_is_held_to_the_payment_rules(
    server, rpc, field_, fields, merchant_id, says
):
    method = next(m for m in METHODS if m.name == rpc)
    with server.channel() as ch:
        err = failure(
            lambda: invoke(
                ch, method, request_class(method)(**fields(merchant_id)), server.auth("ops")
            )
        )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in field_violations(err)[field_]
    assert not contains_card_number(rich_status_bytes(err).decode("latin-1"))
    assert not [c for c in database_cells(server.database_url) if merchant_id in c]


@pytest.mark.parametrize(
    "processor", ["\x01" * 200_000, "4000056655665556"], ids=["200 KB", "card number"]
)
def test_an_unknown_processor_name_is_refused_without_being_repeated(server, processor):
    from payments.config.v1 import config_pb2
    from payments.plan.v1 import plan_pb2

    card = config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD, processors=[processor])
    method = next(m for m in METHODS if m.name == "UpsertMerchantConfig")
    req = request_class(method)(config=config_pb2.MerchantConfig(methods=[card]))
    with server.channel() as ch:
        err = failure(lambda: invoke(ch, method, req, server.auth("m_1")))
    # 200 KB of it made an 800 KB trailer, answered RESOURCE_EXHAUSTED.
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown processors" in field_violations(err)["config.methods[0].processors"]
    rich = rich_status_bytes(err)
    assert len(rich) < 2000 and not contains_card_number(rich.decode("latin-1"))


def _authorized_payment(server: RunningServer) -> str:
    with server.channel() as ch:
        return str(
            pay(orch_grpc.PaymentOrchestratorStub(ch), server, authorize_only=True).payment_id
        )


# Free text the newer RPCs keep (events, plans, endpoints, complaints): a card number in
# it is refused, or at least never stored or logged. (rpc, field, request fields)
FREE_TEXT: list[Any] = [
    pytest.param(
        "CancelPayment", "reason", lambda s: {"payment_id": _authorized_payment(s)},
        id="CancelPayment.reason",
    ),
    pytest.param(
        "RefundPayment", "reason",
        lambda s: {"payment_id": _make_payment(s, "m_1"), "request_id": rid("sec-refund")},
        id="RefundPayment.reason",
    ),
    pytest.param(
        "CancelInstallmentPlan", "reason", lambda s: {"plan_id": _make_plan_id(s, "m_1")},
        id="CancelInstallmentPlan.reason",
    ),
    pytest.param(
        "CreateWebhookEndpoint", "description", lambda s: {"url": "https://93.184.216.34/h"},
        id="CreateWebhookEndpoint.description",
    ),
    pytest.param(
        "ReportMerchantComplaint", "text", lambda s: {"category": "slow_or_timed_out"},
        id="ReportMerchantComplaint.text",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rpc", "field_", "base"), FREE_TEXT)
def test_a_card_number_in_free_text_is_refused_or_never_kept(server, rpc, field_, base):
    method = next(m for m in METHODS if m.name == rpc)
    card = "4000 0566 5566 5556"
    req = request_class(method)(**base(server), **{field_: f"customer said {card}"})
    cells_before, log_before = set(database_cells(server.database_url)), len(server.log())
    with server.channel() as ch:
        code, details, _ = _outcome(lambda: invoke(ch, method, req, server.auth("m_1")))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details
    assert card not in details
    digits = card.replace(" ", "")
    new_cells = set(database_cells(server.database_url)) - cells_before
    assert not [c for c in new_cells if card in c or digits in c]
    new_log = server.log()[log_before:]
    assert card not in new_log and digits not in new_log


def _not_luhn(body: str) -> str:
    """body and one more digit, so that the whole fails Luhn."""
    return body + next(d for d in "0123456789" if not luhn_valid(body + d))


CUT_REASONS: list[Any] = [
    pytest.param(
        "CancelPayment", 200, lambda s: {"payment_id": _authorized_payment(s)},
        id="CancelPayment.reason",
    ),
    pytest.param(
        "CancelInstallmentPlan", 500, lambda s: {"plan_id": _make_plan_id(s, "m_1")},
        id="CancelInstallmentPlan.reason",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("rpc", "kept", "base"), CUT_REASONS)
def test_a_reason_cut_to_its_length_never_becomes_a_card_number(server, rpc, kept, base):
    # 17 digits that fail Luhn at the cut; their first 16 are a Visa test card.
    method = next(m for m in METHODS if m.name == rpc)
    reason = "x" * (kept - 16) + _not_luhn("4000056655665556")
    req = request_class(method)(**base(server), reason=reason)
    with server.channel() as ch:
        code, details, _ = _outcome(lambda: invoke(ch, method, req, server.auth("m_1")))
    assert code == grpc.StatusCode.OK, details
    assert not [c for c in database_cells(server.database_url) if "4000056655665556" in c]


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"url": "https://93.184.216.34/" + "1 " * 100_000}, "url"),
        ({"description": "1 " * 100_000}, "description"),
        ({"event_types": ["installment.failed", "x" * 24 + _not_luhn("4000056655665556")]},
         "event_types"),
    ],
    ids=["url", "description", "event_types"],
)  # fmt: skip
def test_a_webhook_endpoint_field_over_its_limit_is_refused_and_never_quoted(
    server, fields, bad_field
):
    method = next(m for m in METHODS if m.name == "CreateWebhookEndpoint")
    base = {"url": "https://93.184.216.34/h", **fields}
    with server.channel() as ch:
        err = failure(lambda: invoke(ch, method, request_class(method)(**base), server.auth("m_1")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f in field_violations(err) if f.startswith(bad_field)]
    assert not contains_card_number(rich_status_bytes(err).decode("latin-1"))


# == an error-heavy run: nothing secret anywhere =======================================
STRIPE_SECRET = "sk_test_should_never_leak_123"
INBOUND_WEBHOOK_SECRET = "whsec_inbound_should_never_leak_456"
SIMULATE = "api_error=0.3,rate_limit=0.2,lost_response=0.1,seed=3"
DECLINES = (
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_chargeDeclinedLostCard",
    "pm_card_chargeDeclinedExpiredCard",
)


def _stripe_faults(fake: FakeStripe) -> None:
    """Stripe's bad answers, one per request, then normal service."""
    confirm = [
        Fault.api_error(),
        Fault.rate_limit(retry_after_s=None),
        Fault.drop_after_processing(),
        Fault.auth_error(),
        Fault.api_error(charged=True),
        Fault.drop_before_processing(),
        Fault.invalid_request(),
        Fault.drop_mid_answer(),
    ]
    fake.inject(*confirm, *confirm)
    fake.inject(Fault.auth_error(), Fault.rate_limit(retry_after_s=None), endpoint="create")


@dataclass
class NoisyRun:
    server: RunningServer
    responses: list[str] = field(default_factory=list)
    payments: list[orch.Payment] = field(default_factory=list)
    refused: int = 0


def _noisy_requests() -> list[tuple[str, dict[str, Any], bool]]:
    """~40 requests: successes, declines, splits and card-number attempts (refused)."""
    out: list[tuple[str, dict[str, Any], bool]] = []
    for i in range(22):
        out.append(("ok", {"payment_method": "pm_card_visa", "metadata": {"order": str(i)}}, True))
    for i in range(8):
        out.append(("decline", {"payment_method": DECLINES[i % len(DECLINES)]}, True))
    for i in range(3):
        split = [
            orch.PaymentMethodInput(method="apple_pay", token="pm_card_visa", amount_minor=999),
            orch.PaymentMethodInput(method="card", token="pm_card_visa"),
        ]
        out.append(("split", {"methods": split, "metadata": {"i": str(i)}}, True))
    cards: list[dict[str, Any]] = [
        {"payment_method": "4242 4242 4242 4242"},
        {"payment_method": "pm_card_visa", "metadata": {"pan": "4242-4242-4242-4242"}},
        {"payment_method": "pm_card_visa", "metadata": {"4000056655665556": "k"}},
        {"payment_method": "pm_card_visa", "request_id": "r-5555 5555 5555 4444"},
        {"payment_method": "pm_card_visa", "customer_id": "cus_378282246310005"},
        {"methods": [orch.PaymentMethodInput(method="card", token="4242424242424242")]},
    ]
    out += [("card", c, False) for c in cards]
    return out


@pytest.fixture
def own_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped after."""
    import asyncpg

    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    name = f"payorch_sec_{uuid.uuid4().hex[:10]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_async(execute(f'CREATE DATABASE "{name}"'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    _run_async(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(
    params=[
        "sqlite-simulated",
        "sqlite-stripe",
        pytest.param("postgres-simulated", marks=pytest.mark.postgres),
        pytest.param("postgres-stripe", marks=pytest.mark.postgres),
    ]
)
def noisy(
    request, tmp_path
) -> Iterator[tuple[NoisyRun, tuple[str, ...], ThreadedFakeStripe | None]]:
    """A server under faults. `stripe`: the Stripe adapter on a faulty fake Stripe,
    authenticated with STRIPE_SECRET (when Stripe is configured every payment goes to
    it first, so the simulated processor's faults need a run of their own)."""
    db, processors = request.param.split("-")
    if db == "sqlite":
        url = f"sqlite:///{tmp_path / 'noisy.db'}"
    else:
        require_postgres()
        # A database of its own: the scan must see this run's rows only.
        url = request.getfixturevalue("own_postgres_database")
    env = {"PAYORCH_LOG_LEVEL": "DEBUG"}
    fake = None
    if processors == "stripe":
        fake = ThreadedFakeStripe(STRIPE_SECRET)
        fake.call(_stripe_faults)
        env |= {**fake.server_env(), "PAYORCH_STRIPE_WEBHOOK_SECRET": INBOUND_WEBHOOK_SECRET}
    args = ("--simulate", SIMULATE, "--processors", "simulated")
    running = start_server(tmp_path, url, args=args, env=env)
    running.keys = {"m_1": create_key(url, merchant="m_1"), "ops": create_key(url, scope="ops")}
    try:
        secrets = (STRIPE_SECRET, INBOUND_WEBHOOK_SECRET, *running.keys.values())
        yield NoisyRun(running), secrets, fake
    finally:
        running.stop()
        if fake is not None:
            fake.close()


def _server_errors(server: RunningServer) -> str:
    """The server's error log lines (with tracebacks), to say why a call failed."""
    lines = [line for line in server.log().splitlines() if '"level": "error"' in line]
    return "\n".join(lines[-5:])


def _drive(run: NoisyRun) -> None:
    server = run.server
    requests = _noisy_requests()

    def one(item: tuple[str, dict[str, Any], bool]) -> tuple[bool, str, Any]:
        _, fields, _ = item
        with server.channel() as ch:
            stub = orch_grpc.PaymentOrchestratorStub(ch)
            try:
                return True, "", pay(stub, server, amount_minor=2999, **fields)
            except grpc.RpcError as exc:
                text = f"{exc.code().name} {exc.details()} " + rich_status_bytes(exc).decode(
                    "latin-1"
                )
                return False, text, exc.code()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, requests))
    for (kind, _, accepted), (ok, text, value) in zip(requests, results, strict=True):
        if accepted:
            assert ok, f"{kind}: {text}\n{_server_errors(server)}"
            run.payments.append(value)
            run.responses.append(str(value))
        else:
            assert not ok and value == grpc.StatusCode.INVALID_ARGUMENT, f"{kind}: {text}"
            run.refused += 1
            run.responses.append(text)


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _send_inbound_webhooks(server: RunningServer, payment_id: str) -> list[int]:
    """A signed Stripe event carrying a card number, a forged one, and garbage."""
    event = {
        "id": f"evt_{_letters(20)}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": f"pi_{_letters(20)}",
                "object": "payment_intent",
                "description": "customer wrote 4242 4242 4242 4242",
                "metadata": {"payorch_payment_id": payment_id, "payorch_step": "0"},
            }
        },
    }
    body = json.dumps(event).encode()
    url = f"http://{server.http_address}/webhooks/stripe"

    def signed(secret: str) -> dict[str, str]:
        t = str(int(dt.datetime.now(dt.UTC).timestamp()))
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}

    return [
        _post(url, body, signed(INBOUND_WEBHOOK_SECRET)),
        _post(url, body, signed("whsec_forged")),
        _post(url, b"\x00not json 4242424242424242", {"Stripe-Signature": "t=1,v1=00"}),
    ]


def _create_webhook_endpoint(server: RunningServer) -> str:
    """An outbound endpoint of m_1 (never contacted: no dispatcher runs); its secret."""
    from payments.installments.v1 import installments_pb2, installments_pb2_grpc

    with server.channel() as ch:
        made = installments_pb2_grpc.InstallmentServiceStub(ch).CreateWebhookEndpoint(
            installments_pb2.CreateWebhookEndpointRequest(url="https://93.184.216.34/hook"),
            metadata=server.auth("m_1"),
            timeout=20,
        )
    assert made.secret.startswith("whsec_")
    return str(made.secret)


def test_an_error_heavy_run_leaves_no_secret_or_card_number_anywhere(noisy):
    run, secrets, fake = noisy
    server = run.server
    # Outbound webhooks: an endpoint whose signing secret is shown once, and the events
    # of the run fanned out to stored deliveries (payloads in the database).
    endpoint_secret = _create_webhook_endpoint(server)
    _drive(run)
    _fan_out(server)
    if fake is not None:
        # Inbound webhooks: only a correctly signed event is taken.
        assert _send_inbound_webhooks(server, run.payments[0].payment_id) == [200, 400, 400]
    # The endpoint's signing key is stored sealed (docs/security.md, Secrets at rest):
    # neither it nor its whsec_ form may appear anywhere, the database included.
    secrets = (*secrets, endpoint_secret, endpoint_secret.removeprefix("whsec_"))
    stored_secrets = secrets

    # It was error-heavy: processors failed, answers got lost, cards were declined.
    attempts = [a for p in run.payments for s in p.result.step_results for a in s.attempts]
    infrastructure = {
        result_pb2.ERROR_CODE_PROCESSOR_ERROR,
        result_pb2.ERROR_CODE_RATE_LIMITED,
        result_pb2.ERROR_CODE_NETWORK_ERROR,
        result_pb2.ERROR_CODE_TIMEOUT,
        result_pb2.ERROR_CODE_UNKNOWN_OUTCOME,
        result_pb2.ERROR_CODE_PROCESSOR_AUTHENTICATION,
        result_pb2.ERROR_CODE_INVALID_REQUEST,
    }
    failed = [a for a in attempts if a.error_code in infrastructure]
    assert len(failed) >= 3, "the faults did not act"
    assert any(a.raw.message for a in failed), "no processor error text to scan"
    assert run.refused == 6
    if fake is not None:
        seen = fake.recorded()
        # The fake accepts STRIPE_SECRET only: a 200 proves the secret was in use, and
        # its 401s quote the key masked ("sk_test_****_123"), which must not get through.
        assert any(r.status == 200 for r in seen), "the Stripe adapter was not used"
        assert any(r.fault == "auth_error" for r in seen)
        assert not [r for r in seen if forbidden_in(json.dumps(r.params, default=str), ())]

    sources = {
        "responses": "\n".join(run.responses),
        "log": server.log(),
        "metrics": metrics_page(server),
    }
    assert sources["log"] and "# TYPE" in sources["metrics"]
    for name, text in sources.items():
        assert not forbidden_in(text, secrets), (name, forbidden_in(text, secrets)[:5])

    cells = database_cells(server.database_url)
    assert {p.payment_id for p in run.payments} <= set(cells), "the scan must see the payments"
    assert any(c.startswith("enc1:") for c in cells), "the scan must see the sealed key"
    leaking = [
        (c[:200], forbidden_in(c, stored_secrets)) for c in cells if forbidden_in(c, stored_secrets)
    ]
    assert not leaking
    raw = database_file_bytes(server.database_url).decode("latin-1")
    assert not forbidden_in(raw, stored_secrets, generic_card_scan=False)

    # After shutdown the WAL is checkpointed into the file: scan that too.
    assert server.stop() == 0
    raw = database_file_bytes(server.database_url).decode("latin-1")
    assert not forbidden_in(raw, stored_secrets, generic_card_scan=False)
    assert not forbidden_in(server.log(), secrets)


# == TLS and mutual TLS ================================================================
@dataclass
class Pki:
    ca: bytes
    other_ca: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    clients: dict[str, tuple[bytes, bytes]]  # name -> (key PEM, cert PEM)
    issuer: certificates.Ca  # of `ca`, to sign CRLs


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A CA with a server and client certificates, and an unrelated CA with a client."""
    d = tmp_path_factory.mktemp("pki")
    ca, other = certificates.ca("payorch test CA"), certificates.ca("some other CA")
    server_key, server_cert = certificates.leaf(ca, "localhost", server=True)
    (d / "server.key").write_bytes(server_key)
    (d / "server.pem").write_bytes(server_cert)
    (d / "ca.pem").write_bytes(certificates.pem(ca[1]))
    return Pki(
        ca=certificates.pem(ca[1]),
        other_ca=certificates.pem(other[1]),
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        ca_file=d / "ca.pem",
        clients={
            "m_tls": certificates.leaf(ca, "merchant:m_tls", server=False),
            "ops": certificates.leaf(ca, "ops", server=False),
            "no identity": certificates.leaf(ca, "just-a-name", server=False),
            "bad merchant id": certificates.leaf(ca, "merchant:m 1!", server=False),
            "card merchant id": certificates.leaf(ca, "merchant:4242424242424242", server=False),
            "other CA": certificates.leaf(other, "merchant:m_tls", server=False),
            "self-signed ops": certificates.self_signed("ops"),
            "revoked m_tls": certificates.leaf(ca, "merchant:m_tls", server=False),
        },
        issuer=ca,
    )


def _tls_env(pki: Pki, *, client_ca: bool) -> dict[str, str]:
    env = {
        "PAYORCH_TLS_CERT_FILE": str(pki.server_cert),
        "PAYORCH_TLS_KEY_FILE": str(pki.server_key),
    }
    if client_ca:
        env["PAYORCH_TLS_CLIENT_CA_FILE"] = str(pki.ca_file)
    return env


def _tls_server(pki: Pki, tmp_path_factory, *, client_ca: bool) -> Iterator[RunningServer]:
    """A server on TLS, asking clients for a certificate of the test CA (`client_ca`)
    or not, with an API key for m_1."""
    workdir = tmp_path_factory.mktemp("mtls" if client_ca else "tls")
    url = f"sqlite:///{workdir / 'payorch.db'}"
    running = start_server(workdir, url, env=_tls_env(pki, client_ca=client_ca))
    running.keys = {"m_1": create_key(url, merchant="m_1")}
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(pki, tmp_path_factory) -> Iterator[RunningServer]:
    yield from _tls_server(pki, tmp_path_factory, client_ca=True)


@pytest.fixture(scope="module")
def tls_server(pki, tmp_path_factory) -> Iterator[RunningServer]:
    yield from _tls_server(pki, tmp_path_factory, client_ca=False)


def tls_stub(
    server: RunningServer, pki: Pki, client: str | None = None
) -> orch_grpc.PaymentOrchestratorStub:
    key, cert = pki.clients[client] if client else (None, None)
    creds = grpc.ssl_channel_credentials(pki.ca, private_key=key, certificate_chain=cert)
    return orch_grpc.PaymentOrchestratorStub(grpc.secure_channel(server.address, creds))


def create(stub, metadata=(), **fields) -> orch.Payment:
    return stub.CreatePayment(
        orch.CreatePaymentRequest(
            request_id=rid("tls"),
            amount_minor=1999,
            currency="usd",
            payment_method="pm_card_visa",
            **fields,
        ),
        metadata=metadata,
        timeout=10,
    ).payment


def test_a_merchant_client_certificate_takes_payments_without_an_api_key(mtls_server, pki):
    stub = tls_stub(mtls_server, pki, "m_tls")
    payment = create(stub)
    assert payment.merchant_id == "m_tls"
    got = stub.GetPayment(orch.GetPaymentRequest(payment_id=payment.payment_id), timeout=10)
    assert got.payment.merchant_id == "m_tls"


def test_a_certificate_identity_cannot_act_for_another_merchant(mtls_server, pki):
    stub = tls_stub(mtls_server, pki, "m_tls")
    err = failure(lambda: create(stub, merchant_id="m_1"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_ops_client_certificate_reads_a_merchants_payment(mtls_server, pki):
    payment = create(tls_stub(mtls_server, pki, "m_tls"))
    ops = tls_stub(mtls_server, pki, "ops")
    got = ops.GetPayment(orch.GetPaymentRequest(payment_id=payment.payment_id), timeout=10)
    assert got.payment.merchant_id == "m_tls"


def test_a_certificate_without_a_payorch_identity_is_unauthenticated(mtls_server, pki):
    stub = tls_stub(mtls_server, pki, "no identity")
    err = failure(lambda: stub.ListPayments(orch.ListPaymentsRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def _sha256_fingerprint(cert_pem: bytes) -> str:
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


@pytest.mark.parametrize(
    ("client", "merchant"), [("bad merchant id", "m 1!"), ("card merchant id", "4242424242424242")]
)
def test_a_certificate_naming_a_merchant_id_against_the_rules_is_refused_and_logged(
    mtls_server, pki, client, merchant
):
    stub = tls_stub(mtls_server, pki, client)
    err = failure(lambda: stub.ListPayments(orch.ListPaymentsRequest(), timeout=10))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate" in err.details()
    assert "1-64 letters, digits, '_', '-' or '.'" in err.details()
    assert merchant not in err.details()
    refusals = [
        line for line in mtls_server.log().splitlines() if "client certificate refused" in line
    ]
    assert any(_sha256_fingerprint(pki.clients[client][1]) in line for line in refusals)
    assert not any(merchant in line for line in refusals)
    # An API key over the same connection is unaffected: it takes precedence.
    assert create(stub, metadata=mtls_server.auth("m_1")).merchant_id == "m_1"


@pytest.fixture(scope="module")
def crl_file(pki, tmp_path_factory) -> Path:
    """A client CRL that lists the "revoked m_tls" certificate."""
    path = tmp_path_factory.mktemp("crl") / "clients.crl.pem"
    path.write_bytes(certificates.crl(pki.issuer, [pki.clients["revoked m_tls"][1]]))
    return path


@pytest.fixture(scope="module")
def crl_server(pki, crl_file, tmp_path_factory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("crl_server")
    url = f"sqlite:///{workdir / 'payorch.db'}"
    env = {**_tls_env(pki, client_ca=True), "PAYORCH_TLS_CLIENT_CRL_FILE": str(crl_file)}
    running = start_server(workdir, url, env=env)
    running.keys = {"m_1": create_key(url, merchant="m_1")}
    yield running
    running.stop()


def test_a_revoked_client_certificate_is_refused_even_with_an_api_key(crl_server, pki):
    stub = tls_stub(crl_server, pki, "revoked m_tls")
    for metadata in ((), crl_server.auth("m_1")):
        err = failure(
            lambda metadata=metadata: stub.ListPayments(
                orch.ListPaymentsRequest(), metadata=metadata, timeout=10
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details() == "the client certificate is revoked"
    fingerprint = _sha256_fingerprint(pki.clients["revoked m_tls"][1])
    assert any("revoked" in line and fingerprint in line for line in crl_server.log().splitlines())


def test_certificates_the_crl_does_not_list_keep_working(crl_server, pki):
    payment = create(tls_stub(crl_server, pki, "m_tls"))
    assert payment.merchant_id == "m_tls"
    ops = tls_stub(crl_server, pki, "ops")
    got = ops.GetPayment(orch.GetPaymentRequest(payment_id=payment.payment_id), timeout=10)
    assert got.payment.merchant_id == "m_tls"


def test_a_crl_file_replaced_while_serving_is_taken_without_a_restart(crl_server, crl_file, pki):
    original = crl_file.read_bytes()
    ops = tls_stub(crl_server, pki, "ops")
    assert ops.ListPayments(orch.ListPaymentsRequest(), timeout=10) is not None
    try:
        revoked = [pki.clients["revoked m_tls"][1], pki.clients["ops"][1]]
        crl_file.write_bytes(certificates.crl(pki.issuer, revoked))
        err = failure(lambda: ops.ListPayments(orch.ListPaymentsRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        # A file that cannot be used leaves the last good CRL in force.
        crl_file.write_bytes(b"not a CRL")
        err = failure(lambda: ops.ListPayments(orch.ListPaymentsRequest(), timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "cannot be used" in crl_server.log()
    finally:
        crl_file.write_bytes(original)
    assert ops.ListPayments(orch.ListPaymentsRequest(), timeout=10) is not None


def test_an_api_key_still_works_over_mutual_tls(mtls_server, pki):
    stub = tls_stub(mtls_server, pki, "no identity")
    assert create(stub, metadata=mtls_server.auth("m_1")).merchant_id == "m_1"


@pytest.mark.parametrize("client", [None, "other CA", "self-signed ops"])
def test_mutual_tls_refuses_a_handshake_without_a_certificate_of_its_ca(mtls_server, pki, client):
    stub = tls_stub(mtls_server, pki, client)
    err = failure(
        lambda: stub.ListPayments(
            orch.ListPaymentsRequest(), metadata=mtls_server.auth("m_1"), timeout=5
        )
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_refused_handshakes_leave_the_log_one_json_object_a_line(pki, tmp_path):
    """grpc's C core logged each failed handshake as a plain INFO line on stderr,
    among the JSON log, for any client that could open a connection."""
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    # GRPC_VERBOSITY empty: as unset, so the server's own default decides.
    env = {**_tls_env(pki, client_ca=True), "GRPC_VERBOSITY": ""}
    running = start_server(tmp_path, url, env=env)
    try:
        for client in (None, "other CA", "self-signed ops"):
            stub = tls_stub(running, pki, client)
            err = failure(lambda: stub.ListPayments(orch.ListPaymentsRequest(), timeout=5))  # noqa: B023
            assert err.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert running.stop() == 0
    lines = running.log().splitlines()
    assert lines
    assert [line for line in lines if not line.startswith("{")] == []
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_a_plaintext_channel_to_a_tls_server_fails(tls_server):
    with tls_server.channel() as ch:
        stub = orch_grpc.PaymentOrchestratorStub(ch)
        err = failure(
            lambda: stub.ListPayments(
                orch.ListPaymentsRequest(), metadata=tls_server.auth("m_1"), timeout=5
            )
        )
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_without_a_client_ca_takes_an_api_key(tls_server, pki):
    stub = tls_stub(tls_server, pki)
    assert create(stub, metadata=tls_server.auth("m_1")).merchant_id == "m_1"
    err = failure(lambda: stub.ListPayments(orch.ListPaymentsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tls_without_a_client_ca_ignores_a_self_signed_ops_certificate(tls_server, pki):
    stub = tls_stub(tls_server, pki, "self-signed ops")
    err = failure(lambda: stub.ListPayments(orch.ListPaymentsRequest(), timeout=5))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


# == the local demo key ================================================================
def test_the_demo_key_is_created_once_and_the_cli_in_that_directory_uses_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    args = ("--demo-key-file", ".payorch/demo-key")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PAYORCH_API_KEY", "PAYORCH_DEMO_KEY_FILE", "PAYORCH_ADDRESS")
    }

    def pay_with_cli(address: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return cli(
            "pay", "--address", address, "--amount", "1999", "--currency", "usd",
            "--payment-method", "pm_card_visa", cwd=cwd, env=env,
        )  # fmt: skip

    key_file = tmp_path / ".payorch" / "demo-key"
    first = start_server(tmp_path, url, args=args)
    try:
        assert key_file.exists()
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert key.startswith("po_")
        done = pay_with_cli(first.address, tmp_path)
        assert done.returncode == 0, done.stderr
        payment = json.loads(done.stdout)["payment"]
        assert payment["merchantId"] == "m_demo"

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        refused = pay_with_cli(first.address, elsewhere)
        assert refused.returncode == 1
        assert json.loads(refused.stderr)["code"] == "UNAUTHENTICATED"
    finally:
        first.stop()
    assert key not in first.log(), "the demo key must not be logged"

    second = start_server(tmp_path, url, args=args)
    try:
        assert key_file.read_text().strip() == key, "a restart reuses the demo key"
        done = pay_with_cli(second.address, tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["payment"]["merchantId"] == "m_demo"
    finally:
        second.stop()
