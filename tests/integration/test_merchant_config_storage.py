"""Merchant config versions stored and read back, on SQLite and PostgreSQL: every version
is kept, and a paused payment is finished under the one it recorded."""

from __future__ import annotations

import pytest

from payorch.domain.merchant_config import InstallmentPolicy, MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.retry import RetryPolicy
from tests.integration.helpers import make_container

METHODS = tuple(
    MethodRule(m) for m in (MethodType.CARD, MethodType.APPLE_PAY, MethodType.GOOGLE_PAY)
)


@pytest.fixture
async def container(database_url, clock):
    c = await make_container(database_url, clock)
    yield c
    await c.close()


async def test_every_saved_version_reads_back_as_it_was_saved(container):
    first = MerchantConfig(
        "m_1",
        methods=(MethodRule(MethodType.CARD, 100, 5000, ("simulated",)),),
        allowed_currencies=frozenset({"USD", "EUR"}),
        retry_policy=RetryPolicy(2, 300, 900),
        fallback_on_failure=True,
        installment_policy=InstallmentPolicy(0, 4, 14, (2, 5)),
    )
    v1 = await container.configs.upsert(first)
    await container.configs.upsert(MerchantConfig("m_1", methods=METHODS), expected_version=1)

    assert await container.configs.get_version("m_1", 1) == v1
    assert (await container.configs.get_version("m_1", 2)).methods == METHODS
    assert await container.configs.get_version("m_1", 0) == container.configs.default("m_1")
    assert await container.configs.get_version("m_2", 1) == container.configs.default("m_2")


async def test_a_split_paused_for_3ds_is_confirmed_under_the_config_version_it_recorded(
    container,
):
    await container.configs.upsert(MerchantConfig("m_1", methods=METHODS, fallback_on_failure=True))
    request = parse_payment_request(
        RawPaymentRequest(
            merchant_id="m_1",
            request_id="r-paused",
            amount_minor=10000,
            currency="USD",
            methods=[
                RawMethodInput("card", "pm_card_authenticationRequired", 3000),
                RawMethodInput("apple_pay", "pm_card_chargeDeclined", None),
                RawMethodInput("google_pay", "pm_card_visa", None),
            ],
        )
    )
    paused = (await container.payments.create(request, deadline_s=None)).payment
    assert paused.status is PaymentStatus.REQUIRES_ACTION and paused.config_version == 1
    # Fallback off from version 2 on: the paused payment still follows version 1.
    await container.configs.upsert(MerchantConfig("m_1", methods=METHODS), expected_version=1)
    container.simulated["simulated"].complete_action(paused.steps[0].processor_payment_id)

    done = await container.payments.confirm(paused.id, "m_1")

    assert done.status is PaymentStatus.SUCCEEDED
    assert [s.status for s in done.steps] == [
        StepStatus.CAPTURED,
        StepStatus.FAILED,
        StepStatus.CAPTURED,
    ]
