"""Wiring of installments and outbound webhooks, called from bootstrap."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

from payorch.adapters.clock import OffsetClock, SystemClock, parse_offset
from payorch.adapters.metrics import default_metrics
from payorch.adapters.pass_metrics import PrometheusPassCounter
from payorch.adapters.persistence.availability import storage_unreachable
from payorch.adapters.persistence.installment_uow import SqlAlchemyInstallmentUnitOfWorkFactory
from payorch.adapters.persistence.unit_of_work import SqlAlchemyUnitOfWorkFactory
from payorch.adapters.secret_cipher import SecretCipher
from payorch.adapters.webhooks.sender import AiohttpWebhookSender
from payorch.adapters.webhooks.url_guard import Resolve, UrlGuard, system_resolve
from payorch.app.installment_ports import InstallmentPolicies, WebhookSender
from payorch.app.installment_scheduler import InstallmentScheduler
from payorch.app.installments import (
    DefaultInstallmentPolicies,
    InstallmentCharger,
    InstallmentService,
)
from payorch.app.payments import PaymentService
from payorch.app.ports import Clock
from payorch.app.webhook_delivery import WebhookDispatcher, WebhookEndpoints
from payorch.domain.webhook_delivery import FailingEndpoints
from payorch.settings import InvalidSettings, Settings
from payorch.webhooks import generate_secret


@dataclass
class InstallmentsApp:
    uow: SqlAlchemyInstallmentUnitOfWorkFactory
    plans: InstallmentService
    charger: InstallmentCharger
    scheduler: InstallmentScheduler
    endpoints: WebhookEndpoints
    dispatcher: WebhookDispatcher
    guard: UrlGuard
    worker_id: str


def new_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def clock_from_settings(settings: Settings) -> Clock:
    """The system clock, or shifted by PAYORCH_CLOCK_OFFSET for demos."""
    if settings.clock_offset:
        try:
            return OffsetClock(parse_offset(settings.clock_offset))
        except ValueError as exc:
            raise InvalidSettings(f"PAYORCH_CLOCK_OFFSET: {exc}") from None
    return SystemClock()


def build_installments(
    settings: Settings,
    clock: Clock,
    payments_uow: SqlAlchemyUnitOfWorkFactory,
    payments: PaymentService,
    *,
    cipher: SecretCipher,
    wall_clock: Clock | None = None,
    policies: InstallmentPolicies | None = None,
    resolve: Resolve = system_resolve,
    sender: WebhookSender | None = None,
) -> InstallmentsApp:
    uow = SqlAlchemyInstallmentUnitOfWorkFactory(payments_uow, cipher)
    worker = new_worker_id()
    guard = UrlGuard(allow_http_loopback=settings.webhooks_allow_http_loopback, resolve=resolve)
    sender = sender or AiohttpWebhookSender(guard)
    charger = InstallmentCharger(uow, payments, clock, lease_s=settings.scheduler_lease_s)
    # Webhook timestamps are checked against receivers' clocks: real time unless a test
    # hands in its own clock (a shifted demo clock is not real time).
    if wall_clock is None:
        wall_clock = SystemClock() if isinstance(clock, OffsetClock) else clock
    passes = PrometheusPassCounter(default_metrics())
    return InstallmentsApp(
        uow=uow,
        plans=InstallmentService(
            uow,
            payments,
            policies or DefaultInstallmentPolicies(),
            charger,
            clock,
            worker_id=worker,
            lease_s=settings.scheduler_lease_s,
        ),
        charger=charger,
        scheduler=InstallmentScheduler(
            uow,
            charger,
            clock,
            worker_id=worker,
            batch_size=settings.scheduler_batch_size,
            lease_s=settings.scheduler_lease_s,
            concurrency=settings.scheduler_concurrency,
            on_pass=passes.scheduler_pass,
            storage_unreachable=storage_unreachable,
        ),
        endpoints=WebhookEndpoints(uow, sender, clock, new_secret=generate_secret),
        dispatcher=WebhookDispatcher(
            uow,
            sender,
            clock,
            wall_clock=wall_clock,
            worker_id=worker,
            timeout_s=settings.webhook_timeout_s,
            failing=FailingEndpoints(after=timedelta(seconds=settings.webhook_disable_after_s)),
            on_pass=passes.webhook_pass,
            storage_unreachable=storage_unreachable,
        ),
        guard=guard,
        worker_id=worker,
    )
