"""What the gRPC transport of the real server process does with a caller that sends
too much: too many calls at once on one connection, compressed requests that inflate
past the message limit, refunds that would grow a payment past what an answer holds.

Uses the module-scoped `server` (tests/e2e/conftest.py: keys for m_1 and m_2).
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payorch.app.payments import MAX_REFUNDS_PER_PAYMENT
from payorch.domain.request import MAX_METADATA_KEYS
from payorch.entrypoints.grpc.server import MAX_STREAMS_PER_CONNECTION
from tests.e2e.server import RunningServer, create_key, start_server
from tests.rich_status import error_reasons

pytestmark = pytest.mark.e2e

LIST_PAYMENTS = "/payments.orchestrator.v1.PaymentOrchestrator/ListPayments"
MAX_MESSAGE = 1 << 20  # settings.max_message_bytes


def _own_connection(server: RunningServer) -> grpc.Channel:
    # Channels to one address with the same options share one connection (grpc's
    # global subchannel pool): a local pool gives this one a connection of its own.
    return grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])


def _outcomes(calls: list[grpc.Future]) -> dict[str, int]:
    seen: collections.Counter[str] = collections.Counter()
    for call in calls:
        try:
            call.result()
            seen["OK"] += 1
        except grpc.RpcError as exc:
            seen[f"{exc.code().name}: {exc.details()}"] += 1
    return dict(seen)


def test_a_flood_on_one_connection_neither_loses_calls_nor_starves_another(server):
    # Before each connection was held to MAX_STREAMS_PER_CONNECTION calls at once, the
    # server took every stream it was sent, and grpc cancelled calls it could not
    # queue for the handlers: a third of the flood, and most of another merchant's
    # calls, came back CANCELLED. Now the flood waits in its own client, and each
    # call is answered.
    flooder, other = _own_connection(server), _own_connection(server)
    try:
        # One call each first: a client learns the limit from the server's first
        # HTTP/2 SETTINGS, and streams over it sent before those arrive are refused
        # (UNAVAILABLE, never read by a handler: safe to retry).
        for channel, who in ((flooder, "m_1"), (other, "m_2")):
            channel.unary_unary(LIST_PAYMENTS)(b"", metadata=server.auth(who), timeout=30)
        flood = [
            flooder.unary_unary(LIST_PAYMENTS).future(b"", metadata=server.auth("m_1"), timeout=120)
            for _ in range(10 * MAX_STREAMS_PER_CONNECTION)
        ]
        others = [
            other.unary_unary(LIST_PAYMENTS).future(b"", metadata=server.auth("m_2"), timeout=120)
            for _ in range(200)
        ]
        assert _outcomes(others) == {"OK": 200}
        assert _outcomes(flood) == {"OK": len(flood)}
    finally:
        flooder.close()
        other.close()


def _with_unknown_field(size: int) -> bytes:
    """A valid ListPaymentsRequest: one unknown length-delimited field of `size` zeros,
    which gzip and deflate shrink about a thousand times."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        return bytes(out) + bytes([n])

    return varint((1000 << 3) | 2) + varint(size) + bytes(size)


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_a_compressed_request_is_held_to_the_limit_once_inflated(server, compression):
    # 64 MiB of zeros travel as about 64 KiB: the limit is on the inflated message, and
    # grpc stops inflating at it (a 400 MiB bomb raised the server's peak memory by
    # under 2 MB when this was written).
    call = grpc.insecure_channel(server.address).unary_unary(LIST_PAYMENTS)
    with pytest.raises(grpc.RpcError) as refused:
        call(_with_unknown_field(64 << 20), metadata=server.auth("m_1"), compression=compression)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A compressed request under the limit is read as any other.
    call(
        _with_unknown_field(MAX_MESSAGE - 1024),
        metadata=server.auth("m_1"),
        compression=compression,
    )
    assert server.process.poll() is None


def test_a_payment_stops_taking_refunds_while_it_still_fits_an_answer(server):
    # Each refund adds its attempts to the payment every read returns. Unbounded, some
    # 18,000 one-cent refunds made it larger than an answer may be: the refund that
    # crossed the line was made yet answered RESOURCE_EXHAUSTED, and from then on the
    # payment could not be read, listed (by its merchant or an operator) or refunded.
    stub = orch_grpc.PaymentOrchestratorStub(server.channel())
    created = stub.CreatePayment(
        orch.CreatePaymentRequest(
            request_id="many-refunds",
            amount_minor=10 * MAX_REFUNDS_PER_PAYMENT,
            currency="usd",
            payment_method="pm_card_visa",
        ),
        metadata=server.auth("m_1"),
        timeout=30,
    ).payment
    for n in range(MAX_REFUNDS_PER_PAYMENT):
        stub.RefundPayment(
            orch.RefundPaymentRequest(
                payment_id=created.payment_id, request_id=f"refund-{n}", amount_minor=1
            ),
            metadata=server.auth("m_1"),
            timeout=30,
        )

    with pytest.raises(grpc.RpcError) as refused:
        stub.RefundPayment(
            orch.RefundPaymentRequest(
                payment_id=created.payment_id, request_id="one-too-many", amount_minor=1
            ),
            metadata=server.auth("m_1"),
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reasons(refused.value) == ["TOO_MANY_REFUNDS"]
    read = stub.GetPayment(
        orch.GetPaymentRequest(payment_id=created.payment_id),
        metadata=server.auth("m_1"),
        timeout=30,
    ).payment
    assert sum(step.refunded_minor for step in read.result.step_results) == MAX_REFUNDS_PER_PAYMENT
    # Well under the 4 MiB an answer may be (about 230 bytes a refund).
    assert read.ByteSize() < MAX_MESSAGE // 4


def test_a_listing_page_is_cut_short_rather_than_outgrow_an_answer(tmp_path: Path):
    # An answer may be four times the request limit: 64 KiB here. Six payments of
    # some 15 KB each do not fit one page of ListPayments; before, asking for them
    # all was RESOURCE_EXHAUSTED, for the merchant and for an operator, on every try.
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    server = start_server(tmp_path, url, env={"PAYORCH_MAX_MESSAGE_BYTES": "16384"})
    try:
        server.keys = {"m_1": create_key(url, merchant="m_1"), "ops": create_key(url, scope="ops")}
        stub = orch_grpc.PaymentOrchestratorStub(server.channel())
        made = set()
        for n in range(6):
            request = orch.CreatePaymentRequest(
                request_id=f"large-{n}",
                amount_minor=100,
                currency="usd",
                payment_method="pm_card_visa",
                metadata={f"key_{k:02d}": "v" * 310 for k in range(MAX_METADATA_KEYS)},
            )
            made.add(
                stub.CreatePayment(
                    request, metadata=server.auth("m_1"), timeout=30
                ).payment.payment_id
            )
        for who in ("m_1", "ops"):
            listed, pages, token = [], 0, ""
            while True:
                page = stub.ListPayments(
                    orch.ListPaymentsRequest(page_size=100, page_token=token),
                    metadata=server.auth(who),
                    timeout=30,
                )
                assert page.ByteSize() <= 4 * 16384
                listed += [p.payment_id for p in page.payments]
                pages += 1
                token = page.next_page_token
                if not token:
                    break
            assert sorted(listed) == sorted(made), who
            assert pages > 1
    finally:
        server.stop()


def test_a_connection_left_idle_is_closed_by_the_server_and_the_client_reconnects(
    tmp_path: Path,
):
    # Before, an idle connection was held for good: some 20 KB and a file descriptor
    # each, so one caller leaving thousands open could use up the server's descriptors
    # and shut every other caller out.
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    server = start_server(tmp_path, url, env={"PAYORCH_MAX_CONNECTION_IDLE_S": "1"})
    channel = _own_connection(server)
    try:
        server.keys = {"m_1": create_key(url, merchant="m_1")}
        call = channel.unary_unary(LIST_PAYMENTS)
        call(b"", metadata=server.auth("m_1"), timeout=30)
        seen: list[grpc.ChannelConnectivity] = []
        closed = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            seen.append(state)
            if state is grpc.ChannelConnectivity.IDLE and grpc.ChannelConnectivity.READY in seen:
                closed.set()

        channel.subscribe(watch)
        assert closed.wait(30), f"the connection stayed open: {seen}"
        call(b"", metadata=server.auth("m_1"), timeout=30)  # a new connection, unnoticed
    finally:
        channel.close()
        server.stop()


def test_calls_over_the_server_wide_limit_are_refused_and_the_server_keeps_serving(
    tmp_path: Path,
):
    # Each connection holds at most 500 calls, but nothing held the server: many
    # connections could keep 500 each in flight, every one holding memory and a
    # processor call. Over PAYORCH_MAX_CONCURRENT_RPCS a call is now refused at once
    # (RESOURCE_EXHAUSTED, before any handler ran: safe to retry), whoever sends it.
    limit = 3
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    server = start_server(tmp_path, url, env={"PAYORCH_MAX_CONCURRENT_RPCS": str(limit)})
    channels = [_own_connection(server) for _ in range(limit + 1)]
    try:
        server.keys = {"m_1": create_key(url, merchant="m_1")}
        # Health watches stay open until cancelled: each holds one call, on a
        # connection of its own (the limit is the server's, not a connection's).
        watches = [
            health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            for channel in channels[:limit]
        ]
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        other = channels[limit].unary_unary(LIST_PAYMENTS)
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as refused:
                other(b"", metadata=server.auth("m_1"), timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server.process.poll() is None

        for watch in watches:
            watch.cancel()
        # The server frees a slot when it has seen the cancel: ask until it has.
        outcome: grpc.StatusCode | None = None
        for _ in range(300):
            try:
                other(b"", metadata=server.auth("m_1"), timeout=30)
                outcome = grpc.StatusCode.OK
                break
            except grpc.RpcError as exc:
                outcome = exc.code()
                assert outcome == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                time.sleep(0.05)
        assert outcome == grpc.StatusCode.OK, "the server never took calls again"
        calls = [
            channel.unary_unary(LIST_PAYMENTS).future(b"", metadata=server.auth("m_1"), timeout=30)
            for channel in channels[:limit]
        ]
        assert _outcomes(calls) == {"OK": limit}
    finally:
        for channel in channels:
            channel.close()
        server.stop()
