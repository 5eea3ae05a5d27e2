"""Merchant config versions stored and read back, on SQLite and PostgreSQL: every version
is kept, and a paused payment is finished under the one it recorded."""

from __future__ import annotations

import asyncio

import pytest

from payorch.app.merchant_configs import VersionConflict
from payorch.domain.merchant_config import InstallmentPolicy, MerchantConfig, MethodRule
from payorch.domain.payment import MethodType, PaymentStatus, StepStatus
from payorch.domain.request import RawMethodInput, RawPaymentRequest, parse_payment_request
from payorch.domain.results import ErrorCode
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


async def test_writers_racing_from_one_version_on_two_replicas_leave_one_winner(
    database_url, clock
):
    replicas = [await make_container(database_url, clock) for _ in range(2)]
    try:
        first = replicas[0].configs
        read, _ = await first.get("m_1")  # the defaults, version 0

        async def write(i: int) -> MerchantConfig | VersionConflict:
            configs = replicas[i % 2].configs
            changed = MerchantConfig("m_1", methods=METHODS[: 1 + i % 3], allow_partial=i > 2)
            try:
                return await configs.upsert(changed, expected_version=read.version)
            except VersionConflict as lost:
                return lost

        results = await asyncio.gather(*(write(i) for i in range(6)))

        won = [r for r in results if isinstance(r, MerchantConfig)]
        assert len(won) == 1 and won[0].version == 1
        assert all(isinstance(r, VersionConflict) for r in results if r is not won[0])
        assert await first.get_version("m_1", 1) == won[0]
        assert await replicas[1].configs.get_version("m_1", 2) == won[0]  # no version 2
    finally:
        for replica in replicas:
            await replica.close()


async def test_writers_racing_without_an_expected_version_never_lose_a_write_silently(
    database_url, clock
):
    replicas = [await make_container(database_url, clock) for _ in range(2)]
    try:

        async def write(i: int) -> MerchantConfig | VersionConflict:
            changed = MerchantConfig("m_1", methods=METHODS[: 1 + i % 3], allow_partial=i > 2)
            try:
                return await replicas[i % 2].configs.upsert(changed)
            except VersionConflict as lost:
                return lost

        results = await asyncio.gather(*(write(i) for i in range(6)))

        won = [r for r in results if isinstance(r, MerchantConfig)]
        assert won and sorted(w.version for w in won) == list(range(1, len(won) + 1))
        for saved in won:  # each answered success is stored as answered
            assert await replicas[0].configs.get_version("m_1", saved.version) == saved
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_method_whose_processors_left_the_settings_fails_without_a_charge(
    database_url, clock
):
    before = await make_container(database_url, clock, processors="sim_a,sim_b")
    await before.configs.upsert(
        MerchantConfig(
            "m_1",
            methods=(
                MethodRule(MethodType.CARD, processors=("sim_b",)),
                MethodRule(MethodType.APPLE_PAY),
            ),
            fallback_on_failure=True,
        )
    )
    await before.close()
    after = await make_container(database_url, clock, processors="sim_a")  # sim_b removed
    try:
        stored, _ = await after.configs.get("m_1")
        assert stored.rule(MethodType.CARD).processors == ("sim_b",)

        def request(request_id: str, *methods: RawMethodInput):
            return parse_payment_request(
                RawPaymentRequest(
                    merchant_id="m_1",
                    request_id=request_id,
                    amount_minor=5000,
                    currency="USD",
                    methods=list(methods),
                )
            )

        alone = (
            await after.payments.create(
                request("r-card", RawMethodInput("card", "pm_card_visa", None)), deadline_s=None
            )
        ).payment
        assert alone.status is PaymentStatus.FAILED
        assert alone.final_error is ErrorCode.NO_PROCESSOR_AVAILABLE
        assert alone.steps[0].attempts == []
        assert after.simulated["sim_a"].calls == 0  # nothing charged: no one was called

        # The amount moves to a method the remaining processors can take.
        moved = (
            await after.payments.create(
                request(
                    "r-fallback",
                    RawMethodInput("card", "pm_card_visa", None),
                    RawMethodInput("apple_pay", "pm_card_visa", None),
                ),
                deadline_s=None,
            )
        ).payment
        assert moved.status is PaymentStatus.SUCCEEDED
        assert [(s.method, s.status, s.processor) for s in moved.steps] == [
            (MethodType.CARD, StepStatus.FAILED, ""),
            (MethodType.APPLE_PAY, StepStatus.CAPTURED, "sim_a"),
        ]
    finally:
        await after.close()
