"""A merchant config read from proto: what cannot be read is a problem named on its
field, and a request cannot make the reading itself costly."""

from __future__ import annotations

import pytest

from payments.config.v1 import config_pb2
from payments.plan.v1 import plan_pb2
from payorch.domain.merchant_config import InvalidMerchantConfig
from payorch.domain.payment import MethodType
from payorch.entrypoints.grpc import mappers

CARD = config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_CARD)


def _problems(read: mappers.ReadConfig) -> list[tuple[str, str]]:
    with pytest.raises(InvalidMerchantConfig) as refused:
        read.config.validate(
            frozenset({"simulated"}), found=read.problems, method_positions=read.method_positions
        )
    return refused.value.problems


def test_more_methods_than_there_are_types_are_refused_without_reading_each_one() -> None:
    # 4 bytes a method: a 1 MB request held 250 000 of them, each read, checked and
    # answered with its own problem, while every other call on the replica waited.
    sent = config_pb2.MerchantConfig(methods=[CARD] * 10_000)

    read = mappers.config_from_pb(sent, "m_1")

    assert len(read.config.methods) == len(MethodType)
    problems = _problems(read)
    assert problems[0] == (
        "methods",
        f"at most {len(MethodType)} methods, each type once; 10000 sent",
    )
    assert [f for f, _ in problems[1:]] == ["methods[1].type", "methods[2].type"]


def test_each_method_type_once_is_read_in_full() -> None:
    sent = config_pb2.MerchantConfig(
        methods=[
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_GOOGLE_PAY),
            CARD,
            config_pb2.MethodConfig(type=plan_pb2.PAYMENT_METHOD_TYPE_APPLE_PAY),
        ]
    )
    read = mappers.config_from_pb(sent, "m_1")
    assert [r.method for r in read.config.methods] == [
        MethodType.GOOGLE_PAY,
        MethodType.CARD,
        MethodType.APPLE_PAY,
    ]
    assert read.problems == []
