"""A bare grpc.aio server: the CreatePayment path, answering a constant response.

It is the ceiling for payorch on this machine: same transport, same method path,
same load generator, but no auth, no parsing, no database and no processor.
The response is a realistic CreatePaymentResponse (a succeeded single-step card
payment with one attempt), serialized once at start.

    python bench/bare_server.py --listen 127.0.0.1:0 [--delay-ms 200]

The first stdout line is "bare serving gRPC on HOST:PORT".
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import UTC, datetime

import grpc

SERVICE = "payments.orchestrator.v1.PaymentOrchestrator"
METHOD = "CreatePayment"


def constant_response() -> bytes:
    """A CreatePaymentResponse shaped like payorch's answer for a single card payment."""
    from google.protobuf import timestamp_pb2

    from payments.orchestrator.v1 import orchestrator_pb2 as orch
    from payments.plan.v1 import plan_pb2
    from payments.result.v1 import result_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    money = plan_pb2.Money(amount_minor=10000, currency="USD")
    method = plan_pb2.PaymentMethod(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD, token="pm_card_visa")
    pid = "pay_" + "0" * 32
    response = orch.CreatePaymentResponse(
        payment=orch.Payment(
            payment_id=pid,
            merchant_id="m_bench",
            request_id="bench.bare.w0.0",
            amount=money,
            plan=plan_pb2.PaymentPlan(
                total=money,
                steps=[
                    plan_pb2.PaymentStep(
                        index=0, method=method, amount=money, processors=["simulated"]
                    )
                ],
                capture_mode=plan_pb2.CAPTURE_MODE_AUTOMATIC,
            ),
            result=result_pb2.CompositeResult(
                success=True,
                status=result_pb2.PAYMENT_STATUS_SUCCEEDED,
                total_processed=money,
                remaining=plan_pb2.Money(amount_minor=0, currency="USD"),
                step_results=[
                    result_pb2.StepResult(
                        step_index=0,
                        method=method,
                        amount=money,
                        status=result_pb2.STEP_STATUS_CAPTURED,
                        outcome=result_pb2.OUTCOME_SUCCESS,
                        processor="simulated",
                        processor_payment_id="pi_sim_" + "0" * 24,
                        attempts=[
                            result_pb2.Attempt(
                                number=1,
                                processor="simulated",
                                idempotency_key=f"payorch_{pid}_0_g0",
                                started_at=ts,
                                ended_at=ts,
                                outcome=result_pb2.OUTCOME_SUCCESS,
                                raw=result_pb2.RawProcessorError(request_id="req_sim_simulated_1"),
                                routing_reason="first configured processor for card",
                                processor_payment_id="pi_sim_" + "0" * 24,
                            )
                        ],
                        captured_minor=10000,
                    )
                ],
            ),
            created_at=ts,
            updated_at=ts,
        )
    )
    return response.SerializeToString()


async def serve(listen: str, delay_ms: float) -> None:
    body = constant_response()
    delay = delay_ms / 1000.0

    async def create_payment(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        if delay:
            await asyncio.sleep(delay)
        return body

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                create_payment, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port(listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    print(f"bare serving gRPC on {host}:{port} ({len(body)} byte response)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(2.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--delay-ms", type=float, default=0.0, help="sleep before answering")
    args = p.parse_args()
    asyncio.run(serve(args.listen, args.delay_ms))


if __name__ == "__main__":
    main()
