"""Builds the grpc.aio server: our services, health, reflection, limits, optional TLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from payments.contracts.v1 import monitor_pb2
from payments.installments.v1 import installments_pb2
from payments.orchestrator.v1 import analytics_pb2, orchestrator_pb2
from payments.orchestrator.v1 import health_pb2 as processor_health_pb2
from payorch.app.database_readiness import DatabaseReadiness
from payorch.app.health import HealthTracker
from payorch.bootstrap import Container, TlsFiles, check_tls_files
from payorch.entrypoints.grpc.analytics import PaymentAnalyticsServicer
from payorch.entrypoints.grpc.contract_monitor import ContractMonitorServicer
from payorch.entrypoints.grpc.handlers import build_handler
from payorch.entrypoints.grpc.health_rpc import (
    GrpcHealthReporter,
    ProcessorFaultInjectionServicer,
    ProcessorHealthServicer,
)
from payorch.entrypoints.grpc.installments import InstallmentServicer
from payorch.entrypoints.grpc.interceptors import ObservingInterceptor
from payorch.entrypoints.grpc.orchestrator import PaymentOrchestratorServicer
from payorch.entrypoints.runtime import (
    CannotListen,
    refuse_served_unix_socket,
    why_cannot_bind,
)
from payorch.settings import InvalidSettings, Settings

SERVICES = [
    orchestrator_pb2.DESCRIPTOR.services_by_name["PaymentOrchestrator"],
    processor_health_pb2.DESCRIPTOR.services_by_name["ProcessorHealth"],
    processor_health_pb2.DESCRIPTOR.services_by_name["ProcessorFaultInjection"],
    installments_pb2.DESCRIPTOR.services_by_name["InstallmentService"],
    analytics_pb2.DESCRIPTOR.services_by_name["PaymentAnalytics"],
    monitor_pb2.DESCRIPTOR.services_by_name["ContractMonitor"],
]
MAX_METADATA_BYTES = 16 * 1024
# Calls one connection may have open at once; more wait in the client. Past 1,000
# calls the handlers have not yet taken, grpc cancels new ones at random, on any
# connection (all past 3,000): unbounded, one busy connection got other callers'
# calls CANCELLED. 500 is what one connection of the benchmark keeps in flight.
MAX_STREAMS_PER_CONNECTION = 500
# Full names of the RPCs refused to a merchant key before the request is read.
OPS_ONLY = frozenset(
    f"{service}.{name}"
    for service, servicer in (
        ("payments.orchestrator.v1.ProcessorHealth", ProcessorHealthServicer),
        ("payments.orchestrator.v1.ProcessorFaultInjection", ProcessorFaultInjectionServicer),
        ("payments.contracts.v1.ContractMonitor", ContractMonitorServicer),
    )
    for name in servicer.OPS_ONLY
)


def server_credentials(tls: TlsFiles | None) -> grpc.ServerCredentials | None:
    """TLS with the files as checked, when a certificate is configured; mTLS when a
    client CA is too."""
    if tls is None:
        return None
    ca = tls.client_ca
    return grpc.ssl_server_credentials(
        [(tls.key, tls.certificate_chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def revoked_client_certificates(
    settings: Settings, client_ca: bytes | None = None
) -> Callable[[bytes], bool] | None:
    """Whether a client certificate (PEM) is on the client CRL; None without a CRL.
    `payorch serve` has checked the files before opening the database
    (`bootstrap.check_tls_files`); a CRL changed since is refused the same way.
    `client_ca`: the client CA file as checked (else read now)."""
    if not settings.tls_client_crl_file:
        return None
    if not settings.tls_client_ca_file:
        raise InvalidSettings(
            "PAYORCH_TLS_CLIENT_CRL_FILE needs PAYORCH_TLS_CLIENT_CA_FILE: without mutual"
            " TLS there is no client certificate to check"
        )
    # Loaded only with a CRL configured: `cryptography` parses it.
    from payorch.adapters.certificate_revocation import (
        RevokedClientCertificates,
        UnusableRevocationList,
    )

    try:
        revoked = RevokedClientCertificates(
            Path(settings.tls_client_crl_file),
            client_ca or Path(settings.tls_client_ca_file).read_bytes(),
        )
    except (OSError, UnusableRevocationList) as exc:
        raise InvalidSettings(f"PAYORCH_TLS_CLIENT_CRL_FILE: {exc}") from exc
    return revoked.is_revoked


def create_server(
    container: Container, address: str, closing: Callable[[], bool] = lambda: False
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server bound to `address` (port 0 picks a free one), not yet started.
    `closing()`: it is being stopped, and calls cancelled now are cut off by that."""
    settings = container.settings
    observed = container.observability
    max_answer_bytes = 4 * settings.max_message_bytes
    interceptor = ObservingInterceptor(
        observed.monitor,
        observed.observers,
        observed.tracer,
        container.clock,
        latency_slo_ms=observed.latency_slo_ms,
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        # Over it a call is answered RESOURCE_EXHAUSTED before any handler runs: many
        # connections of 500 calls each could otherwise hold memory without bound.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", max_answer_bytes),
            # max_metadata_size alone is a soft limit (calls up to 1.25x of it pass
            # at random); the absolute limit makes 16 KiB a hard cap.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            # grpc's "overload protection" also counts streams it has not yet freed,
            # so a client that kept to the limit had some calls refused (UNAVAILABLE);
            # off, the server counts open streams, as the client does.
            ("grpc.http.overload_protection", 0),
            # An idle connection is sent GOAWAY: its file descriptor is not held for good.
            ("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)),
        ],
    )
    # Checked by `payorch serve` before the database was opened; a container built
    # for another use (tests, benchmarks) has its files checked here.
    tls = container.tls or check_tls_files(settings)
    revoked = revoked_client_certificates(settings, tls.client_ca if tls else None)
    servicers = {
        "payments.orchestrator.v1.PaymentOrchestrator": PaymentOrchestratorServicer(
            container.payments, container.configs, closing, max_answer_bytes
        ),
        "payments.orchestrator.v1.ProcessorHealth": ProcessorHealthServicer(container.health),
        "payments.orchestrator.v1.ProcessorFaultInjection": ProcessorFaultInjectionServicer(
            container.set_simulated_faults
        ),
        "payments.installments.v1.InstallmentService": InstallmentServicer(
            container.installments.plans, container.installments.endpoints, max_answer_bytes
        ),
        "payments.orchestrator.v1.PaymentAnalytics": PaymentAnalyticsServicer(observed.analytics),
        "payments.contracts.v1.ContractMonitor": ContractMonitorServicer(
            observed.reports, max_answer_bytes
        ),
    }
    handlers = [
        build_handler(
            service,
            servicers[service.full_name],
            container.authenticator,
            container.storage_unreachable,
            revoked,
        )
        for service in SERVICES
    ]
    server.add_generic_rpc_handlers(handlers)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.full_name for s in SERVICES]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    credentials = server_credentials(tls)
    refuse_served_unix_socket(address)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
        raise CannotListen(
            f"cannot listen for gRPC on {address}: {why_cannot_bind(address)}"
        ) from exc
    return server, port, health_servicer


async def mark_serving(
    health_servicer: health.aio.HealthServicer,
    processor_health: HealthTracker | None = None,
    database: DatabaseReadiness | None = None,
) -> None:
    """All SERVING; then, with a tracker, the orchestrator follows the processors
    (NOT_SERVING while every breaker is open), and with a database readiness every
    service follows the database (NOT_SERVING while it does not answer)."""
    names = ["", *(s.full_name for s in SERVICES)]
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if processor_health is None and database is None:
        return
    reporter = GrpcHealthReporter(health_servicer, others=tuple(names))
    if processor_health is not None:
        processor_health.add_observer(reporter)
    if database is not None:
        database.add_observer(reporter.database_changed)
    await reporter.flush()
