"""The `payorch` client commands, driven against a grpc_testing channel.

The CLI runs in a thread and blocks in its RPC; the test takes the invocation off
the channel (metadata and request as sent), answers it, and reads what was printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import grpc_testing
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from payments.installments.v1 import installments_pb2
from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.plan.v1 import plan_pb2
from payments.result.v1 import result_pb2
from payorch.bootstrap import check_listen, check_tls_files
from payorch.domain.card_data import contains_card_number
from payorch.entrypoints import cli
from payorch.settings import Settings
from tests import certificates

SERVICE = orch.DESCRIPTOR.services_by_name["PaymentOrchestrator"]
ADDRESS = ["--address", "127.0.0.1:1"]


@dataclass
class Sent:
    metadata: dict[str, str]
    request: object
    rpc: grpc_testing.UnaryUnaryChannelRpc


class CliRun:
    """`payorch ARGS` in a thread, answered from the test through the testing channel."""

    def __init__(self, channel: grpc_testing.Channel, argv: list[str]) -> None:
        self._channel = channel
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._main, args=(argv,), daemon=True)
        self._thread.start()

    def _main(self, argv: list[str]) -> None:
        self.exit_code = cli.main(argv)

    def take(self, method: str) -> Sent:
        metadata, request, rpc = self._channel.take_unary_unary(SERVICE.methods_by_name[method])
        return Sent(dict(metadata or ()), request, rpc)

    def finish(self) -> int:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the CLI did not return"
        assert self.exit_code is not None
        return self.exit_code


@pytest.fixture
def channel(monkeypatch, tmp_path) -> Iterator[grpc_testing.Channel]:
    """The CLI's channel factory returns a testing channel; no ambient API key anywhere."""
    testing = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    for name in ("PAYORCH_API_KEY", "PAYORCH_DEMO_KEY_FILE", "PAYORCH_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .payorch/demo-key here unless a test writes one
    yield testing


def created(payment_id: str = "pay_1", merchant: str = "m_1") -> orch.CreatePaymentResponse:
    return orch.CreatePaymentResponse(
        payment=orch.Payment(
            payment_id=payment_id,
            merchant_id=merchant,
            result=result_pb2.CompositeResult(
                success=True, status=result_pb2.PAYMENT_STATUS_SUCCEEDED
            ),
        )
    )


def pay(channel, *flags: str) -> tuple[CliRun, Sent]:
    run = CliRun(channel, ["pay", *ADDRESS, *flags])
    return run, run.take("CreatePayment")


def test_pay_sends_the_request_fields_and_the_api_key_as_a_bearer_token(channel, capsys):
    run, sent = pay(
        channel,
        "--api-key", "po_abc_secret",
        "--amount", "1999",
        "--currency", "usd",
        "--payment-method", "pm_card_visa",
        "--request-id", "order-17",
        "--customer", "cus_42",
        "--metadata", "order=17",
        "--metadata", "note=a=b",
        "--off-session",
    )  # fmt: skip
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0

    assert sent.metadata["authorization"] == "Bearer po_abc_secret"
    req = sent.request
    assert isinstance(req, orch.CreatePaymentRequest)
    assert req.WhichOneof("amount") == "amount_minor" and req.amount_minor == 1999
    assert req.currency == "usd"
    assert req.payment_method == "pm_card_visa"
    assert req.request_id == "order-17"
    assert req.customer_id == "cus_42"
    assert dict(req.metadata) == {"order": "17", "note": "a=b"}
    assert req.off_session
    assert req.merchant_id == "", "the merchant comes from the key unless --merchant is given"
    out = json.loads(capsys.readouterr().out)
    assert out["payment"]["paymentId"] == "pay_1"


def test_pay_makes_up_a_fresh_request_id_when_none_is_given(channel):
    ids = []
    for _ in range(2):
        run, sent = pay(channel, "--api-key", "po_k", "--amount", "5", "--currency", "eur")
        sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
        assert run.finish() == 0
        ids.append(sent.request.request_id)
    assert all(i.startswith("cli-") for i in ids) and ids[0] != ids[1]


def test_pay_names_the_request_id_it_made_up_when_the_answer_is_lost(channel, capsys):
    run, sent = pay(channel, "--api-key", "po_k", "--amount", "5", "--currency", "eur")
    sent.rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection lost")  # no answer
    assert run.finish() == 1

    failure = json.loads(capsys.readouterr().err)
    assert failure["code"] == "UNAVAILABLE"
    assert failure["request_id"] == sent.request.request_id  # to retry it, not pay again


def test_refund_names_the_request_id_it_made_up_when_the_answer_is_lost(channel, capsys):
    run = CliRun(channel, ["refund", *ADDRESS, "--api-key", "po_k", "pay_1", "--amount", "500"])
    sent = run.take("RefundPayment")
    sent.rpc.terminate(None, (), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    assert run.finish() == 1

    assert json.loads(capsys.readouterr().err)["request_id"] == sent.request.request_id


def test_a_made_up_request_id_never_looks_like_a_card_number(channel, monkeypatch):
    # Its digits read "4242 4242 4242 4242", but in a UUID's groups: an identifier.
    unlucky = uuid.UUID("42424242-4242-4242-4242-424242424242")
    monkeypatch.setattr(cli.uuid, "uuid4", lambda: unlucky)

    run, sent = pay(channel, "--api-key", "po_k", "--amount", "5", "--currency", "eur")
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.request.request_id == f"cli-{unlucky}"
    assert not contains_card_number(sent.request.request_id)


def test_a_decimal_amount_is_sent_as_amount_decimal(channel):
    run, sent = pay(channel, "--api-key", "po_k", "--amount", "19.99", "--currency", "usd")
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.request.WhichOneof("amount") == "amount_decimal"
    assert sent.request.amount_decimal == "19.99"


def test_a_split_builds_one_method_per_part_with_the_default_token(channel):
    run, sent = pay(
        channel, "--api-key", "po_k", "--amount", "10000", "--currency", "usd",
        "--split", "apple_pay:6000,card",
    )  # fmt: skip
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0

    req = sent.request
    assert req.payment_method == "" and req.method == ""
    assert [(m.method, m.token) for m in req.methods] == [
        ("apple_pay", "pm_card_visa"),
        ("card", "pm_card_visa"),
    ]
    first, rest = req.methods
    assert first.WhichOneof("amount") == "amount_minor" and first.amount_minor == 6000
    assert rest.WhichOneof("amount") is None, "the last part takes the rest"


def test_a_split_with_tokens_and_decimal_amounts(channel):
    run, sent = pay(
        channel, "--api-key", "po_k", "--amount", "100.00", "--currency", "usd",
        "--split", "apple_pay=pm_apple:60.00,card=pm_card_mastercard",
    )  # fmt: skip
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    first, rest = sent.request.methods
    assert (first.token, first.amount_decimal) == ("pm_apple", "60.00")
    assert rest.token == "pm_card_mastercard"


def test_an_error_status_is_printed_as_json_on_stderr_with_exit_code_1(channel, capsys):
    run, sent = pay(
        channel, "--api-key", "po_abc_secret", "--amount", "1999", "--currency", "usd",
        "--merchant", "m_2",
    )  # fmt: skip
    assert sent.request.merchant_id == "m_2"
    sent.rpc.terminate(
        None,
        (),
        grpc.StatusCode.PERMISSION_DENIED,
        "the request names another merchant than the credential's",
    )
    assert run.finish() == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err) == {
        "code": "PERMISSION_DENIED",
        "message": "the request names another merchant than the credential's",
        "request_id": sent.request.request_id,  # made up by the CLI: named for a retry
    }
    assert "po_abc_secret" not in captured.err


def test_the_key_comes_from_the_environment_when_no_flag_is_given(channel, monkeypatch):
    monkeypatch.setenv("PAYORCH_API_KEY", "po_from_env")
    run, sent = pay(channel, "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.metadata["authorization"] == "Bearer po_from_env"


def test_the_flag_wins_over_the_environment(channel, monkeypatch):
    monkeypatch.setenv("PAYORCH_API_KEY", "po_from_env")
    run, sent = pay(channel, "--api-key", "po_from_flag", "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.metadata["authorization"] == "Bearer po_from_flag"


def test_the_local_demo_key_in_the_working_directory_is_used_last(channel, tmp_path):
    demo = tmp_path / ".payorch" / "demo-key"
    demo.parent.mkdir()
    demo.write_text("po_demo_key\n")
    run, sent = pay(channel, "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(created(merchant="m_demo"), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.metadata["authorization"] == "Bearer po_demo_key"


def test_without_any_key_no_authorization_header_is_sent(channel):
    run, sent = pay(channel, "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(None, (), grpc.StatusCode.UNAUTHENTICATED, "missing credential")
    assert run.finish() == 1
    assert "authorization" not in sent.metadata


SERVER_SAYS = "missing credential: send 'authorization: Bearer <api key>'"


def test_refused_for_want_of_a_key_it_did_not_send_the_cli_says_how_to_give_one(channel, capsys):
    run, sent = pay(channel, "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(None, (), grpc.StatusCode.UNAUTHENTICATED, SERVER_SAYS)
    assert run.finish() == 1
    failure = json.loads(capsys.readouterr().err)
    assert failure["code"] == "UNAUTHENTICATED"
    assert "--api-key" in failure["message"] and "PAYORCH_API_KEY" in failure["message"]
    assert ".payorch/demo-key" in failure["message"] and "Bearer" not in failure["message"]


def test_a_key_the_server_refused_is_told_in_the_servers_words(channel, capsys):
    run, sent = pay(channel, "--api-key", "po_revoked", "--amount", "1", "--currency", "usd")
    sent.rpc.terminate(None, (), grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
    assert run.finish() == 1
    assert json.loads(capsys.readouterr().err)["message"] == "unknown or revoked API key"


def test_an_installments_command_without_a_key_says_how_to_give_one(channel, monkeypatch, capsys):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    run = CliRun(testing, ["webhooks", "list-endpoints", *ADDRESS])
    _, _, rpc = testing.take_unary_unary(INSTALLMENTS.methods_by_name["ListWebhookEndpoints"])
    rpc.terminate(None, (), grpc.StatusCode.UNAUTHENTICATED, SERVER_SAYS)
    assert run.finish() == 1
    message = json.loads(capsys.readouterr().err)["message"]
    assert "--api-key" in message and "PAYORCH_API_KEY" in message


def test_get_and_list_send_their_requests_with_the_key(channel, capsys):
    run = CliRun(channel, ["get", *ADDRESS, "--api-key", "po_k", "pay_123"])
    sent = run.take("GetPayment")
    sent.rpc.terminate(
        orch.GetPaymentResponse(payment=orch.Payment(payment_id="pay_123")),
        (),
        grpc.StatusCode.OK,
        "",
    )
    assert run.finish() == 0
    assert sent.request.payment_id == "pay_123"
    assert sent.metadata["authorization"] == "Bearer po_k"

    run = CliRun(channel, ["list", *ADDRESS, "--api-key", "po_k", "--page-size", "5"])
    sent = run.take("ListPayments")
    sent.rpc.terminate(orch.ListPaymentsResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.request.page_size == 5 and sent.request.page_token == ""
    assert sent.metadata["authorization"] == "Bearer po_k"


# -- input refused before any call: usage or one line on stderr, exit 2 -------------------
def exit_code_of(argv: list[str]) -> int:
    """`payorch ARGV` in-process; argparse refuses by SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


def test_a_refund_of_a_given_amount_sends_it_in_minor_units(channel):
    run = CliRun(channel, ["refund", *ADDRESS, "--api-key", "po_k", "pay_1", "--amount", "500"])
    sent = run.take("RefundPayment")
    sent.rpc.terminate(orch.RefundPaymentResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert sent.request.amount_minor == 500


@pytest.mark.parametrize("amount", ["0", "-5", "00"])
def test_a_refund_of_zero_or_less_is_refused_without_calling_the_server(
    amount, monkeypatch, capsys
):
    # 0 on the wire means "everything refundable": sent, it would refund it all.
    monkeypatch.setattr(cli, "channel", lambda _args: pytest.fail("the server was called"))
    assert exit_code_of(["refund", *ADDRESS, "pay_1", "--amount", amount]) == 2
    assert "omit --amount to refund everything" in capsys.readouterr().err


@pytest.mark.parametrize("amount", ["\u09ea00", "\uff15\uff10\uff10"], ids=["bengali", "fullwidth"])
def test_a_refund_amount_in_digits_other_than_ascii_is_refused_without_calling_the_server(
    amount, monkeypatch, capsys
):
    # The Bengali four reads as an 8: "800" would be refunded as 400.
    monkeypatch.setattr(cli, "channel", lambda _args: pytest.fail("the server was called"))
    assert exit_code_of(["refund", *ADDRESS, "pay_1", "--amount", amount]) == 2
    assert "not an amount in minor units" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "1e10", "86401", "30s"])
@pytest.mark.parametrize(
    "command",
    [[*ADDRESS, "--amount", "1999", "--currency", "usd"], ["installments", "list", *ADDRESS]],
    ids=["pay", "installments"],
)
def test_a_timeout_that_is_no_deadline_is_refused_without_calling_the_server(
    timeout, command, monkeypatch, capsys
):
    # Each failed the call DEADLINE_EXCEEDED before it was sent, and `pay` then printed
    # a request_id to retry it under, as after a lost answer.
    argv = ["pay", *command] if command[0] != "installments" else command
    monkeypatch.setattr(cli, "channel", lambda _args: pytest.fail("the server was called"))
    assert exit_code_of([*argv, "--timeout", timeout]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--timeout: not a deadline" in err, err


@pytest.mark.parametrize("item", ["order_id", "order_id:1001", ""])
def test_a_metadata_item_without_its_equals_sign_is_refused_without_calling_the_server(
    item, monkeypatch, capsys
):
    # It went as a key with an empty value: a payment taken with metadata nobody meant.
    monkeypatch.setattr(cli, "channel", lambda _args: pytest.fail("the server was called"))
    argv = [*ADDRESS, "--amount", "1999", "--currency", "usd", "--metadata", item]
    assert exit_code_of(["pay", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metadata: not KEY=VALUE" in err, err


def test_metadata_items_go_as_given_an_empty_value_and_equals_signs_in_it_included(channel):
    argv = [*ADDRESS, "--api-key", "po_k", "--amount", "1999", "--currency", "usd"]
    argv += ["--payment-method", "pm_card_visa", "--metadata", "note=a=b", "--metadata", "gift="]
    run = CliRun(channel, ["pay", *argv])
    sent = run.take("CreatePayment")
    sent.rpc.terminate(orch.CreatePaymentResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert dict(sent.request.metadata) == {"note": "a=b", "gift": ""}


@pytest.fixture
def bad_files(tmp_path) -> dict[str, str]:
    files = {
        "bad-enum": '{"methods": [{"type": "NOPE"}]}',
        "bad-json": "{not json",
        # What `payorch config get` prints: the config inside its answer.
        "get-answer": '{"config": {"merchantId": "m_demo", "allowPartial": true},'
        ' "isDefault": true}',
    }
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    return {name: str(tmp_path / f"{name}.json") for name in [*files, "missing"]}


PAY = ["pay", *ADDRESS, "--currency", "usd", "--payment-method", "pm_card_visa"]
PLAN = [
    *("installments", "create", *ADDRESS, "--order-id", "o1"),
    *("--payment-method", "pm_card_visa", "--customer", "cus_1"),
]


@pytest.mark.parametrize(
    "argv",
    [
        [*PAY, "--amount", "abc"],
        [*PAY, "--amount", "12,50"],
        [*PAY, "--amount", "1\u09ea00"],
        [*PAY, "--amount", "10000", "--split", "apple_pay:60%,card"],
        [*PLAN, "--amount", "abc", "--currency", "usd"],
        [*PLAN, "--amount", "100.00", "--currency", "zzz"],
        [*PLAN, "--amount", "1.001", "--currency", "usd"],
        ["config", "set", *ADDRESS, "{missing}"],
        ["config", "set", *ADDRESS, "{bad-json}"],
        ["config", "set", *ADDRESS, "{bad-enum}"],
        ["config", "set", *ADDRESS, "{get-answer}"],
        ["stats", *ADDRESS, "--since", "0001-01-01T00:00:00+01:00"],
        ["violations", *ADDRESS, "--until", "9999-12-31T23:59:59-01:00"],
        ["retrospective", *ADDRESS, "--until", "yesterday"],
        ["get", *ADDRESS, "pay_1", "--tls-ca", "{missing}"],
        ["keys", "--database-url", "foo://bar", "list"],
        ["keys", "--database-url", "garbage", "list"],
        ["scheduler", "--once", "--database-url", "garbage"],
        ["webhooks", "dispatch", "--once", "--database-url", "garbage"],
        ["refund", *ADDRESS, "pay_1", "--amount", "0"],
        ["scheduler", "--once", "--now", "bad", "--database-url", "sqlite:///{missing}"],
        [
            "scheduler",
            "--once",
            "--now",
            "2026-03-01T00:00",
            "--database-url",
            "sqlite:///{missing}",
        ],
        ["webhooks", "dispatch", "--once", "--now", "bad", "--database-url", "sqlite:///{missing}"],
        # Each overflowed the clock after the database was opened: a traceback.
        *(
            [*command, "--once", "--now", when, "--database-url", "sqlite:///{missing}"]
            for command in (["scheduler"], ["webhooks", "dispatch"])
            for when in ("9999-12-31T00:00:00Z", "9999-12-31T23:00:00-01:00")
        ),
        # Within a century of the end of datetime's range: a plan's dates overflow.
        [
            "scheduler",
            "--once",
            "--now",
            "9950-01-01T00:00:00Z",
            "--database-url",
            "sqlite:///{missing}",
        ],
        [
            "scheduler",
            "--once",
            "--now",
            "0001-01-01T01:00:00+01:00",
            "--database-url",
            "sqlite:///{missing}",
        ],
        ["scheduler", "--once", "--interval", "0", "--database-url", "sqlite:///{missing}"],
        ["scheduler", "--once", "--batch-size", "0", "--database-url", "sqlite:///{missing}"],
        ["pay", *ADDRESS, "--currency", "usd"],
        ["get", *ADDRESS, "pay_1", "--no-such-flag"],
        # A key of no merchant: printed without saying which command refused it, after
        # the database was made.
        ["keys", "--database-url", "sqlite:///{missing}", "create"],
        [
            "keys",
            "--database-url",
            "sqlite:///{missing}",
            "create",
            "--merchant",
            "m_1",
            "--scope",
            "ops",
        ],
    ],
    ids=[
        "pay amount abc",
        "pay amount 12,50",
        "pay amount in bengali digits",
        "pay split 60%",
        "plan amount abc",
        "plan currency zzz",
        "plan 1.001 usd",
        "config missing file",
        "config bad json",
        "config unknown enum",
        "config get's answer",
        "stats since year 0",
        "violations until year 10000",
        "retrospective until yesterday",
        "missing tls ca",
        "keys foo database",
        "keys unparsable database url",
        "scheduler unparsable database url",
        "dispatch unparsable database url",
        "refund of nothing",
        "scheduler now not a time",
        "scheduler now without a zone",
        "dispatch now not a time",
        "scheduler now past 9999",
        "scheduler now 9999 west of utc",
        "dispatch now past 9999",
        "dispatch now 9999 west of utc",
        "scheduler now within a century of 9999",
        "scheduler now year 0",
        "scheduler interval zero",
        "scheduler batch of none",
        "pay without an amount",
        "unknown flag",
        "keys create of no merchant",
        "keys create ops of a merchant",
    ],
)
def test_input_the_cli_cannot_use_is_one_line_of_error_with_exit_2_not_a_traceback(
    argv, bad_files, capsys
):
    """As the README says: one line (no usage), exit code 2; 1 is for the server's errors."""
    argv = [a.format(**bad_files) for a in argv]
    assert exit_code_of(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("payorch: ") or (
        lines[0].startswith("payorch ") and ": error: " in lines[0]
    )
    assert not os.path.exists(bad_files["missing"]), "refused before the database is opened"


UNSENDABLE_KEYS = ["po_cl\u00e9_secret", "po_key\u00a0x", "po_a\nb", "po_k\x7f"]


@pytest.mark.parametrize("key", UNSENDABLE_KEYS, ids=["accent", "nbsp", "newline", "del"])
@pytest.mark.parametrize("source", ["flag", "environment", "demo key file"])
@pytest.mark.parametrize(
    "command",
    [["get", "pay_1"], ["stats"], ["installments", "get", "plan_1"]],
    ids=["payments", "observability", "installments"],
)
def test_an_api_key_no_grpc_header_can_carry_is_one_line_with_exit_2_before_any_call(
    command, source, key, tmp_path, monkeypatch, capsys
):
    """gRPC sends printable ASCII only: such a key failed the call as INTERNAL "Invalid
    metadata" with exit 1, as if the server had broken. It is never repeated."""
    for name in ("PAYORCH_API_KEY", "PAYORCH_DEMO_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "channel", lambda _args: pytest.fail("the server was called"))
    argv = [*command, *ADDRESS]
    if source == "flag":
        argv = [*argv, "--api-key", key]
    elif source == "environment":
        monkeypatch.setenv("PAYORCH_API_KEY", key)
    else:
        (tmp_path / ".payorch").mkdir()
        (tmp_path / ".payorch" / "demo-key").write_text(key + "\n")
    assert exit_code_of(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and key.strip() not in err and "po_" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("payorch: ") or (last.startswith("payorch ") and ": error: " in last)
    assert "printable ASCII" in last


LIVE_KEY_TAIL = "51HxYzLiveKeyTail0123456789"


@pytest.mark.parametrize(
    ("env", "argv", "names"),
    [
        ({}, ["--simulate", "bogus=1"], "PAYORCH_SIMULATE"),
        ({}, ["--simulate", "api_error=2"], "PAYORCH_SIMULATE"),
        ({"PAYORCH_SIMULATE_SIM_B": "seed=x"}, ["--processors", "sim_a,sim_b"], "SIM_B"),
        # A drill's faults for a name not served applied to nothing, without a word.
        ({"PAYORCH_SIMULATE_SIM_C": "api_error=1"}, ["--processors", "sim_a,sim_b"], "SIM_C"),
        ({"PAYORCH_SIMULATE_STRIPE": "api_error=1"}, [], "PAYORCH_SIMULATE_STRIPE"),
        ({"PAYORCH_HEALTH_WINDOW_S": "0"}, [], "PAYORCH_HEALTH_"),
        # A breaker that opens would never let a probe through again.
        ({"PAYORCH_HEALTH_COOLDOWN_S": "nan"}, [], "cooldown_s"),
        ({"PAYORCH_STRIPE_API_KEY": "sk_live_" + LIVE_KEY_TAIL}, [], "PAYORCH_STRIPE_ALLOW_LIVE=1"),
        # No processor built: every payment failed no_processor_available.
        ({}, ["--processors", "stripe"], "PAYORCH_STRIPE_API_KEY"),
        ({}, ["--processors", "stripe,sim_a"], "PAYORCH_STRIPE_API_KEY"),
        ({"PAYORCH_PROCESSORS": ""}, [], "PAYORCH_PROCESSORS"),
        ({"PAYORCH_PROCESSORS": " , "}, [], "PAYORCH_PROCESSORS"),
        # Another replica's config change, or a revoked key, would never be seen.
        ({"PAYORCH_CONFIG_CACHE_S": "inf"}, [], "PAYORCH_CONFIG_CACHE_S"),
        ({"PAYORCH_CONFIG_CACHE_S": "nan"}, [], "PAYORCH_CONFIG_CACHE_S"),
        ({"PAYORCH_CONFIG_CACHE_S": "1e9"}, [], "PAYORCH_CONFIG_CACHE_S"),
        ({"PAYORCH_AUTH_CACHE_S": "inf"}, [], "PAYORCH_AUTH_CACHE_S"),
        # A stop that skips its drain and grace, or never ends without a second signal.
        ({"PAYORCH_SHUTDOWN_DRAIN_S": "nan"}, [], "PAYORCH_SHUTDOWN_DRAIN_S"),
        ({"PAYORCH_SHUTDOWN_DRAIN_S": "inf"}, [], "PAYORCH_SHUTDOWN_DRAIN_S"),
        ({"PAYORCH_GRACE_PERIOD_S": "-1"}, [], "PAYORCH_GRACE_PERIOD_S"),
        # 0 would close a connection between two calls; nan or inf, never.
        ({"PAYORCH_MAX_CONNECTION_IDLE_S": "0"}, [], "PAYORCH_MAX_CONNECTION_IDLE_S"),
        ({"PAYORCH_MAX_CONNECTION_IDLE_S": "nan"}, [], "PAYORCH_MAX_CONNECTION_IDLE_S"),
        # grpc refuses 0 or less with a traceback, after the database was opened.
        ({"PAYORCH_MAX_CONCURRENT_RPCS": "0"}, [], "PAYORCH_MAX_CONCURRENT_RPCS"),
        # Each was a traceback of int(), float() or logging naming no variable.
        ({"PAYORCH_HTTP_PORT": "http"}, [], "PAYORCH_HTTP_PORT"),
        ({"PAYORCH_CALL_TIMEOUT_S": "10s"}, [], "PAYORCH_CALL_TIMEOUT_S"),
        ({"PAYORCH_SCHEDULER_BATCH_SIZE": "1.5"}, [], "PAYORCH_SCHEDULER_BATCH_SIZE"),
        ({"PAYORCH_LOG_LEVEL": "LOUD"}, [], "PAYORCH_LOG_LEVEL"),
        # A typo switched a feature off without a word.
        ({"PAYORCH_STRIPE_ALLOW_LIVE": "ture"}, [], "PAYORCH_STRIPE_ALLOW_LIVE"),
        # 70000 served /metrics and /readyz on port 4464 (70000 - 65536).
        ({"PAYORCH_HTTP_PORT": "70000"}, [], "PAYORCH_HTTP_PORT"),
        # grpc reads -1 as no limit at all on a request's size, and 0 refuses every one.
        ({"PAYORCH_MAX_MESSAGE_BYTES": "-1"}, [], "PAYORCH_MAX_MESSAGE_BYTES"),
        ({"PAYORCH_MAX_MESSAGE_BYTES": "0"}, [], "PAYORCH_MAX_MESSAGE_BYTES"),
        # A processor call that times out at once, or never.
        ({"PAYORCH_CALL_TIMEOUT_S": "nan"}, [], "PAYORCH_CALL_TIMEOUT_S"),
        ({"PAYORCH_CALL_TIMEOUT_S": "0"}, [], "PAYORCH_CALL_TIMEOUT_S"),
        # Reconciliation passes back to back, holding the database.
        ({"PAYORCH_RECONCILE_INTERVAL_S": "0"}, [], "PAYORCH_RECONCILE_INTERVAL_S"),
        # A client CA or a key without a certificate served plaintext, asking no
        # client for a certificate; a certificate without a key said "Is a directory".
        ({"PAYORCH_TLS_CLIENT_CA_FILE": "ca.pem"}, [], "PAYORCH_TLS_CERT_FILE"),
        ({"PAYORCH_TLS_KEY_FILE": "server.key"}, [], "PAYORCH_TLS_CERT_FILE"),
        ({"PAYORCH_TLS_CERT_FILE": "server.pem"}, [], "PAYORCH_TLS_KEY_FILE"),
        ({"PAYORCH_TLS_CLIENT_CRL_FILE": "ca.crl"}, [], "PAYORCH_TLS_CLIENT_CA_FILE"),
        # An outage of an hour disabled a merchant's endpoint; nan, never one.
        ({"PAYORCH_WEBHOOK_DISABLE_AFTER_S": "3600"}, [], "PAYORCH_WEBHOOK_DISABLE_AFTER_S"),
        ({"PAYORCH_WEBHOOK_DISABLE_AFTER_S": "nan"}, [], "PAYORCH_WEBHOOK_DISABLE_AFTER_S"),
        # Each was a traceback (or exit 1), the exporter's after migrating the database.
        ({"PAYORCH_EVENT_LOOP": "trio"}, [], "PAYORCH_EVENT_LOOP"),
        ({"PAYORCH_CLOCK_OFFSET": "soon"}, [], "PAYORCH_CLOCK_OFFSET"),
        ({"PAYORCH_CLOCK_OFFSET": "inf"}, [], "PAYORCH_CLOCK_OFFSET"),
        # A traceback at the first reading of the clock past 9999-12-31 (or before
        # year 1), or at a date a plan or a lease counts from it.
        ({"PAYORCH_CLOCK_OFFSET": "3000000d"}, [], "PAYORCH_CLOCK_OFFSET"),
        ({"PAYORCH_CLOCK_OFFSET": "2900000d"}, [], "PAYORCH_CLOCK_OFFSET"),
        ({"PAYORCH_CLOCK_OFFSET": "-739000d"}, [], "PAYORCH_CLOCK_OFFSET"),
        ({"PAYORCH_OTEL_EXPORTER": "jaeger"}, [], "PAYORCH_OTEL_EXPORTER"),
        # Each was taken without a word. Passes back to back on the database, or never.
        ({"PAYORCH_SCHEDULER_INTERVAL_S": "0"}, [], "PAYORCH_SCHEDULER_INTERVAL_S"),
        ({"PAYORCH_SCHEDULER_INTERVAL_S": "nan"}, [], "PAYORCH_SCHEDULER_INTERVAL_S"),
        # A pass that claims nothing, however much is due.
        ({"PAYORCH_SCHEDULER_BATCH_SIZE": "0"}, [], "PAYORCH_SCHEDULER_BATCH_SIZE"),
        ({"PAYORCH_SCHEDULER_CONCURRENCY": "-1"}, [], "PAYORCH_SCHEDULER_CONCURRENCY"),
        # A claim that runs out while its charge is still in its processor call: another
        # worker takes it over and charges the same installment's attempt again.
        ({"PAYORCH_SCHEDULER_LEASE_S": "0"}, [], "PAYORCH_SCHEDULER_LEASE_S"),
        ({"PAYORCH_SCHEDULER_LEASE_S": "nan"}, [], "PAYORCH_SCHEDULER_LEASE_S"),
        ({"PAYORCH_SCHEDULER_LEASE_S": "inf"}, [], "PAYORCH_SCHEDULER_LEASE_S"),
        (
            {"PAYORCH_CALL_TIMEOUT_S": "40", "PAYORCH_SCHEDULER_LEASE_S": "30"},
            [],
            "PAYORCH_CALL_TIMEOUT_S",
        ),
        # Dispatcher passes back to back; a delivery that times out at once, or never.
        ({"PAYORCH_WEBHOOK_INTERVAL_S": "0"}, [], "PAYORCH_WEBHOOK_INTERVAL_S"),
        ({"PAYORCH_WEBHOOK_TIMEOUT_S": "0"}, [], "PAYORCH_WEBHOOK_TIMEOUT_S"),
        ({"PAYORCH_WEBHOOK_TIMEOUT_S": "inf"}, [], "PAYORCH_WEBHOOK_TIMEOUT_S"),
        ({"PAYORCH_WEBHOOK_TIMEOUT_S": "10s"}, [], "PAYORCH_WEBHOOK_TIMEOUT_S"),
        # Every call a violation, or none ever; every violation dropped.
        ({"PAYORCH_LATENCY_SLO_MS": "0"}, [], "PAYORCH_LATENCY_SLO_MS"),
        ({"PAYORCH_LATENCY_SLO_MS": "nan"}, [], "PAYORCH_LATENCY_SLO_MS"),
        ({"PAYORCH_VIOLATION_BUFFER": "0"}, [], "PAYORCH_VIOLATION_BUFFER"),
        # Taken as 0, Python's default, without a word.
        ({"PAYORCH_GC_THRESHOLD": "-1"}, [], "PAYORCH_GC_THRESHOLD"),
        # A probe back to back on the database; an outage noticed hours late.
        ({"PAYORCH_DATABASE_PROBE_INTERVAL_S": "0.01"}, [], "PAYORCH_DATABASE_PROBE_INTERVAL_S"),
        ({"PAYORCH_DATABASE_PROBE_INTERVAL_S": "nan"}, [], "PAYORCH_DATABASE_PROBE_INTERVAL_S"),
        ({"PAYORCH_DATABASE_PROBE_TIMEOUT_S": "0"}, [], "PAYORCH_DATABASE_PROBE_TIMEOUT_S"),
        # A token short enough to guess, or one no header can carry.
        ({"PAYORCH_METRICS_TOKEN": "hunter2hunter2"}, [], "PAYORCH_METRICS_TOKEN"),
        ({"PAYORCH_METRICS_TOKEN": "a token with spaces in it"}, [], "PAYORCH_METRICS_TOKEN"),
    ],
    ids=[
        "unknown fault",
        "rate above 1",
        "one processor's faults",
        "faults for a processor not served",
        "faults for a processor not simulated",
        "health window",
        "breaker cool-down nan",
        "live key",
        "stripe without its key",
        "stripe without its key beside a simulated one",
        "no processor",
        "no processor, only commas",
        "config cached forever",
        "config cache nan",
        "config cached for decades",
        "keys cached forever",
        "drain nan",
        "drain forever",
        "negative grace",
        "connections never idle",
        "connection idle nan",
        "no call at once",
        "port not a number",
        "timeout with a unit",
        "batch size not whole",
        "unknown log level",
        "boolean typo",
        "port over 65535",
        "message limit negative",
        "message limit zero",
        "call timeout nan",
        "call timeout zero",
        "reconcile back to back",
        "client ca without a certificate",
        "key without a certificate",
        "certificate without a key",
        "crl without a client ca",
        "endpoints disabled after an hour",
        "endpoint disabling nan",
        "unknown event loop",
        "clock offset not a time",
        "clock offset infinite",
        "clock offset past 9999",
        "clock offset within a century of 9999",
        "clock offset before year 1",
        "unknown trace exporter",
        "scheduler passes back to back",
        "scheduler interval nan",
        "scheduler batch of none",
        "scheduler concurrency negative",
        "lease zero",
        "lease nan",
        "lease forever",
        "lease shorter than a processor call",
        "dispatcher passes back to back",
        "webhook timeout zero",
        "webhook timeout infinite",
        "webhook timeout with a unit",
        "latency slo zero",
        "latency slo nan",
        "violation buffer of none",
        "gc threshold negative",
        "database probe back to back",
        "database probe nan",
        "database probe timeout zero",
        "metrics token short",
        "metrics token with spaces",
    ],
)
@pytest.mark.parametrize("command", [["serve", "--listen", "127.0.0.1:0"], ["scheduler", "--once"]])
def test_a_setting_the_server_cannot_start_with_is_one_line_naming_it_with_exit_2(
    command, env, argv, names, tmp_path, monkeypatch, capsys
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if command[0] == "scheduler" and "--processors" in argv:
        monkeypatch.setenv("PAYORCH_PROCESSORS", argv[-1])
        argv = []
    refused_before_the_database(command, argv, names, tmp_path, monkeypatch, capsys)


SERVE_TWO_SIMS = ["serve", "--listen", "127.0.0.1:0", "--processors", "sim_a,sim_b"]


def test_serve_refuses_simulate_for_a_processor_it_does_not_serve(tmp_path, monkeypatch, capsys):
    """A drill's faults for a mistyped name applied to nothing, without a word."""
    argv = ["--simulate-for", "sim_c=api_error=1.0"]
    last = refused_before_the_database(SERVE_TWO_SIMS, argv, "sim_c", tmp_path, monkeypatch, capsys)
    assert "--simulate-for sim_c" in last and "sim_a,sim_b" in last


def test_serve_refuses_simulate_for_without_its_spec(tmp_path, monkeypatch, capsys):
    """`--simulate-for sim_a` (the `=SPEC` forgotten) served sim_a with no faults."""
    never_open_the_database(monkeypatch)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    argv = [*SERVE_TWO_SIMS, "--database-url", url, "--simulate-for", "sim_a"]
    assert exit_code_of(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--simulate-for" in lines[0] and "NAME=SPEC" in lines[0]


@pytest.mark.parametrize("processors", ["stripe", ""])
def test_the_webhook_dispatcher_starts_with_processors_it_does_not_charge_with(
    processors, tmp_path, monkeypatch, capsys
):
    """A dispatcher sends webhooks and charges nothing: its host may go without the
    Stripe key the service's PAYORCH_PROCESSORS names (or with no processor listed)."""
    monkeypatch.delenv("PAYORCH_STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("PAYORCH_STRIPE_API_KEY_FILE", raising=False)
    monkeypatch.setenv("PAYORCH_PROCESSORS", processors)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert exit_code_of(["webhooks", "dispatch", "--once", "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["attempted"] == 0


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:70000",  # served on 4464 (70000 - 65536)
        "127.0.0.1:65536",  # served on a free port, as 0 does
        "127.0.0.1:-1",  # served on 65535
        "127.0.0.1",  # no port: served on 443
        "127.0.0.1:",
        ":50051",
        "::1:50051",  # an IPv6 host without its brackets
        "127.0.0.1:５００５１",
        "unix:",  # a unix socket without its path
    ],
)
@pytest.mark.parametrize("source", ["flag", "environment"])
def test_a_grpc_address_grpc_would_bind_elsewhere_is_refused_naming_payorch_listen(
    listen, source, tmp_path, monkeypatch, capsys
):
    argv = ["--listen", listen] if source == "flag" else []
    monkeypatch.setenv("PAYORCH_LISTEN", listen if source == "environment" else "127.0.0.1:0")
    refused_before_the_database(["serve"], argv, "PAYORCH_LISTEN", tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:0",
        "0.0.0.0:50051",
        "localhost:65535",
        "[::1]:50051",
        "[::]:0",
        # A unix socket, as grpc binds it (beside a proxy on the same host): served before.
        "unix:/run/payorch/grpc.sock",
        "unix:///run/payorch/grpc.sock",
        "unix-abstract:payorch",
    ],
)
def test_a_host_and_port_0_to_65535_is_a_grpc_address_serve_takes(listen):
    check_listen(Settings(listen=listen))


def never_open_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def opened(*args: object, **kwargs: object) -> None:
        # A setting that gets through would serve forever: fail here instead.
        raise AssertionError("the database was opened: the setting was not refused")

    monkeypatch.setattr("payorch.bootstrap.create_engine", opened)
    monkeypatch.setattr("payorch.adapters.persistence.engine.create_engine", opened)


def refused_before_the_database(
    command: list[str],
    argv: list[str],
    names: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    never_open_the_database(monkeypatch)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert exit_code_of([*command, "--database-url", url, *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and LIVE_KEY_TAIL not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("payorch: ") and names in last, err
    assert not (tmp_path / "p.db").exists()  # refused before the database is opened
    return last


TLS_CA = certificates.ca("payorch test CA")
TLS_KEY, TLS_CERT = certificates.leaf(TLS_CA, "localhost", server=True)
OTHER_KEY, _ = certificates.leaf(TLS_CA, "localhost", server=True)
GARBAGE = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
TLS_FILES = {
    "PAYORCH_TLS_CERT_FILE": TLS_CERT,
    "PAYORCH_TLS_KEY_FILE": TLS_KEY,
    "PAYORCH_TLS_CLIENT_CA_FILE": certificates.pem(TLS_CA[1]),
    "PAYORCH_TLS_CLIENT_CRL_FILE": certificates.crl(TLS_CA, []),
}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("PAYORCH_TLS_CERT_FILE", None),
        ("PAYORCH_TLS_CERT_FILE", GARBAGE),
        ("PAYORCH_TLS_CERT_FILE", TLS_KEY),
        ("PAYORCH_TLS_KEY_FILE", None),
        ("PAYORCH_TLS_KEY_FILE", b"not a key"),
        ("PAYORCH_TLS_KEY_FILE", OTHER_KEY),
        ("PAYORCH_TLS_CLIENT_CA_FILE", None),
        ("PAYORCH_TLS_CLIENT_CA_FILE", GARBAGE),
        ("PAYORCH_TLS_CLIENT_CRL_FILE", None),
        ("PAYORCH_TLS_CLIENT_CRL_FILE", b"garbage"),
        ("PAYORCH_TLS_CLIENT_CRL_FILE", GARBAGE.replace(b"CERTIFICATE", b"X509 CRL")),
        ("PAYORCH_TLS_CLIENT_CRL_FILE", certificates.crl(certificates.ca("payorch test CA"), [])),
    ],
    ids=[
        "certificate unreadable",
        "certificate garbage",
        "certificate file holds a key",
        "key unreadable",
        "key garbage",
        "key of another certificate",
        "client ca unreadable",
        "client ca garbage",
        "crl unreadable",
        "crl garbage",
        "crl unparsable",
        "crl of another ca",
    ],
)
def test_a_tls_file_the_server_cannot_use_is_one_line_naming_it_with_exit_2(
    name, content, tmp_path, monkeypatch, capsys
):
    # Each was found after the database was opened: a CRL's exit code 1, a file that
    # cannot be read a line naming no variable, a certificate or key grpc cannot use
    # "the address is in use".
    for var, pem in TLS_FILES.items():
        path = tmp_path / var.lower()
        if var != name:
            path.write_bytes(pem)
        elif content is None:
            path.mkdir()  # read as root too, unlike a file of mode 000
        else:
            path.write_bytes(content)
        monkeypatch.setenv(var, str(path))
    last = refused_before_the_database(
        ["serve", "--listen", "127.0.0.1:0"], [], name, tmp_path, monkeypatch, capsys
    )
    assert "-----BEGIN" not in last and "not base64" not in last, "no file is repeated"


def test_the_scheduler_does_not_read_the_servers_tls_files(tmp_path, monkeypatch):
    # It serves nothing: a host running it alone need not hold the server's key.
    monkeypatch.setenv("PAYORCH_TLS_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("PAYORCH_TLS_KEY_FILE", str(tmp_path / "missing.key"))
    never_open_the_database(monkeypatch)
    with pytest.raises(AssertionError, match="the database was opened"):
        exit_code_of(["scheduler", "--once", "--database-url", f"sqlite:///{tmp_path / 'p.db'}"])


def test_tls_files_the_server_can_use_are_taken(tmp_path):
    paths = {}
    for var, pem in TLS_FILES.items():
        paths[var] = tmp_path / var.lower()
        paths[var].write_bytes(pem)
    check_tls_files(
        Settings(
            tls_cert_file=str(paths["PAYORCH_TLS_CERT_FILE"]),
            tls_key_file=str(paths["PAYORCH_TLS_KEY_FILE"]),
            tls_client_ca_file=str(paths["PAYORCH_TLS_CLIENT_CA_FILE"]),
            tls_client_crl_file=str(paths["PAYORCH_TLS_CLIENT_CRL_FILE"]),
        )
    )
    check_tls_files(Settings())  # plaintext: nothing to read


def test_a_database_url_that_cannot_be_parsed_is_not_echoed_as_it_may_hold_a_password(capsys):
    assert exit_code_of(["keys", "--database-url", "postgresql://u:s3cret@[::1", "list"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "cannot parse the database URL" in err


@pytest.mark.parametrize(
    "merchant", ["4242424242424242", "m 1 bad", "m" * 65], ids=["card number", "space", "65"]
)
def test_keys_create_refuses_a_merchant_id_no_rpc_would_accept_and_stores_nothing(
    merchant, tmp_path, capsys
):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert exit_code_of(["keys", "--database-url", url, "create", "--merchant", merchant]) == 2
    err = capsys.readouterr().err
    assert "argument --merchant: " in err
    assert "4242424242424242" not in err, "a card number is never repeated"
    assert not (tmp_path / "keys.db").exists(), "refused before the database is touched"


@pytest.mark.parametrize(
    "label",
    ["till 4242 4242 4242 4242", "x" * 129],
    ids=["card number", "longer than the column"],
)
def test_keys_create_refuses_a_label_it_could_not_keep_and_stores_nothing(label, tmp_path, capsys):
    # The label is kept beside the key's hash and printed by `keys list`.
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    argv = ["keys", "--database-url", url, "create", "--merchant", "m_1", "--label", label]
    assert exit_code_of(argv) == 2
    err = capsys.readouterr().err
    assert "argument --label: " in err
    assert "4242" not in err, "a card number is never repeated"
    assert not (tmp_path / "keys.db").exists(), "refused before the database is touched"


def test_keys_create_takes_a_well_formed_merchant_id(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert exit_code_of(["keys", "--database-url", url, "create", "--merchant", "m_1.a-b"]) == 0
    assert json.loads(capsys.readouterr().out)["api_key"]
    assert exit_code_of(["keys", "--database-url", url, "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["merchant_id"] for row in listed] == ["m_1.a-b"]


def keys(url: str, *argv: str) -> int:
    return exit_code_of(["keys", "--database-url", url, *argv])


def test_keys_create_with_both_a_merchant_and_ops_says_to_give_one_not_both(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert keys(url, "create", "--merchant", "m_1", "--scope", "ops") == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "k.db").exists()


@pytest.mark.parametrize(
    "pasted", ["{key}", " {key} ", "Bearer {key}"], ids=["key", "spaces", "bearer"]
)
def test_keys_revoke_never_repeats_an_api_key_pasted_for_its_id(pasted, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert keys(url, "create", "--merchant", "m_1") == 0
    created = json.loads(capsys.readouterr().out)
    secret = created["api_key"].split("_", 2)[2]

    assert keys(url, "revoke", pasted.format(key=created["api_key"])) == 2

    err = capsys.readouterr().err
    assert secret not in err, "the key stays out of the terminal's scrollback"
    assert "API key, not a key id" in err and created["id"] in err  # what to give instead
    assert keys(url, "list") == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["revoked_at"] is None


def test_keys_revoke_repeats_only_an_unknown_id_shaped_like_one(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert keys(url, "revoke", "0123456789ab") == 1
    assert "no active key '0123456789ab'" in capsys.readouterr().err
    secret_like = "Zx9-tQ2vLr8_bN4wPe7s"  # a key's secret part, pasted alone
    assert keys(url, "revoke", secret_like) == 1
    err = capsys.readouterr().err
    assert secret_like not in err and "no active key with that id" in err


def test_keys_create_names_the_id_as_keys_list_and_revoke_take_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert keys(url, "create", "--scope", "ops") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["id"] == created["key_id"]  # key_id: as scripts already read it
    assert keys(url, "list") == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [
        created["id"]
    ]
    assert keys(url, "revoke", created["id"]) == 0
    assert json.loads(capsys.readouterr().out) == {"revoked": created["id"]}


def test_keys_list_prints_its_times_in_iso_8601_as_the_other_commands_do(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert keys(url, "create", "--merchant", "m_1") == 0
    created = json.loads(capsys.readouterr().out)
    assert keys(url, "revoke", created["id"]) == 0
    capsys.readouterr()
    assert keys(url, "list") == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for name in ("created_at", "revoked_at"):
        when = datetime.fromisoformat(row[name])
        assert row[name] == when.isoformat() and "T" in row[name], row[name]
        assert when.utcoffset() == timedelta(0)


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("payorch",)
) -> Iterator[tuple[str, str | None]]:
    """(command, its help) of every subcommand, at every depth."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield " ".join((*path, name)), helps.get(name)
                yield from _subcommands(sub, (*path, name))


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("payorch",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_and_argument_says_what_it_takes_in_the_help():
    """`--page-size PAGE_SIZE` alone left a newcomer to guess its limit and default,
    `--scope` what an ops key is, `--port` where `webhooks listen` listens."""
    unexplained = [
        f"{command} {action.option_strings[0] if action.option_strings else action.dest}"
        for command, parser in _parsers(cli.parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert unexplained == []


def _cli_in_a_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own: grpc's C core aborts the interpreter on some
    credentials, and a test run in-process would die with it."""
    code = "import sys; from payorch.entrypoints.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["--tls-ca", "ca", "--tls-cert", "cert"], "--tls-key"),
        (["--tls-ca", "ca", "--tls-key", "key"], "--tls-cert"),
        # Plaintext then, to a server that speaks TLS: "Socket closed".
        (["--tls-cert", "cert", "--tls-key", "key"], "--tls-ca"),
        (["--tls-ca", "missing"], "--tls-ca"),
    ],
    ids=["certificate without its key", "key without its certificate", "no ca", "ca unreadable"],
)
def test_client_tls_files_given_wrongly_are_one_line_with_exit_2_before_any_call(
    given, named, tmp_path
):
    """A client certificate without its key (or the key alone) aborted the process in
    grpc's C core (exit 134, a stack trace); one without --tls-ca went in plaintext."""
    files = {"ca": TLS_CERT, "cert": TLS_CERT, "key": TLS_KEY}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    argv = [str(tmp_path / a) if a in (*files, "missing") else a for a in given]
    done = _cli_in_a_process("get", "pay_1", *ADDRESS, "--api-key", "po_k", *argv)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("payorch get: error: "), done.stderr
    assert named in lines[0]


def test_every_subcommand_says_what_it_does_in_the_help():
    commands = dict(_subcommands(cli.parser()))
    assert {"payorch webhooks list-endpoints", "payorch keys list"} <= set(commands)
    assert sorted(c for c, text in commands.items() if not text) == []


def test_config_set_given_what_config_get_printed_says_where_the_config_is(bad_files, capsys):
    """`config get > c.json; config set c.json` is the first thing one tries: protobuf's
    two lines named a field "config" MerchantConfig lacks, not what to send instead."""
    assert exit_code_of(["config", "set", *ADDRESS, bad_files["get-answer"]]) == 2
    err = capsys.readouterr().err
    assert "payorch config get" in err and '"config"' in err and "Available Fields" not in err


@pytest.mark.parametrize(
    ("flags", "expected_version", "expect_default"),
    [
        ([], 0, False),
        (["--expected-version", "0"], 0, True),
        (["--expected-version", "4"], 4, False),
    ],
    ids=["unchecked", "only if none is stored", "only at version 4"],
)
def test_config_set_sends_the_version_it_expects(
    channel, tmp_path, flags, expected_version, expect_default
):
    (tmp_path / "c.json").write_text('{"allowPartial": true}')
    run = CliRun(channel, ["config", "set", *ADDRESS, "--api-key", "po_k", *flags, "c.json"])
    sent = run.take("UpsertMerchantConfig")
    sent.rpc.terminate(orch.UpsertMerchantConfigResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    req = sent.request
    assert isinstance(req, orch.UpsertMerchantConfigRequest) and req.config.allow_partial
    assert (req.expected_version, req.expect_default) == (expected_version, expect_default)


INSTALLMENTS = installments_pb2.DESCRIPTOR.services_by_name["InstallmentService"]


@pytest.mark.parametrize("given", [[], ["--request-id", "ep-17"]], ids=["made up", "given"])
def test_create_endpoint_sends_a_request_id_to_make_it_again_after_a_lost_answer(
    channel, monkeypatch, capsys, given
):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    argv = ["webhooks", "create-endpoint", *ADDRESS, "--api-key", "po_k", "--url", "https://h/x"]
    run = CliRun(testing, [*argv, *given])
    _, request, rpc = testing.take_unary_unary(
        INSTALLMENTS.methods_by_name["CreateWebhookEndpoint"]
    )
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection lost")  # no answer
    assert run.finish() == 1

    failure = json.loads(capsys.readouterr().err)
    if given:
        assert request.request_id == "ep-17" and "request_id" not in failure
    else:  # named, to make the same call again with --request-id
        assert request.request_id.startswith("endpoint-")
        assert failure["request_id"] == request.request_id


@pytest.mark.parametrize(
    ("given", "has_overlap", "hours"),
    [([], False, 0), (["--overlap-hours", "0"], True, 0), (["--overlap-hours", "168"], True, 168)],
    ids=["default", "none", "a week"],
)
def test_rotate_secret_sends_the_overlap_only_when_given_and_prints_the_new_secret(
    channel, monkeypatch, capsys, given, has_overlap, hours
):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    argv = ["webhooks", "rotate-secret", *ADDRESS, "--api-key", "po_k", "we_1", *given]
    run = CliRun(testing, argv)
    _, request, rpc = testing.take_unary_unary(INSTALLMENTS.methods_by_name["RotateWebhookSecret"])
    answer = installments_pb2.RotateWebhookSecretResponse(secret="whsec_bmV3")
    rpc.terminate(answer, (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert request.endpoint_id == "we_1"
    assert (request.HasField("overlap_hours"), request.overlap_hours) == (has_overlap, hours)
    assert json.loads(capsys.readouterr().out)["secret"] == "whsec_bmV3"


@pytest.mark.parametrize("hours", ["169", "-1", "1.5", "day"])
def test_rotate_secret_refuses_an_overlap_out_of_bounds_before_any_call(hours, capsys):
    argv = ["webhooks", "rotate-secret", *ADDRESS, "--api-key", "po_k", "we_1"]
    assert exit_code_of([*argv, "--overlap-hours", hours]) == 2
    assert "give whole hours from 0 to 168" in capsys.readouterr().err


@pytest.mark.parametrize("given", [[], ["--request-id", "rt-17"]], ids=["made up", "given"])
def test_retry_installment_sends_a_request_id_to_make_it_again_after_a_lost_answer(
    channel, monkeypatch, capsys, given
):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    argv = ["installments", "retry", *ADDRESS, "--api-key", "po_k", "ip_x_2"]
    run = CliRun(testing, [*argv, *given])
    _, request, rpc = testing.take_unary_unary(INSTALLMENTS.methods_by_name["RetryInstallment"])
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection lost")  # no answer
    assert run.finish() == 1

    failure = json.loads(capsys.readouterr().err)
    assert request.installment_id == "ip_x_2"
    if given:
        assert request.request_id == "rt-17" and "request_id" not in failure
    else:  # named, to make the same call again with --request-id
        assert request.request_id.startswith("retry-")
        assert failure["request_id"] == request.request_id


def test_installments_list_sends_its_order_and_customer_filters(channel, monkeypatch, capsys):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    argv = ["installments", "list", *ADDRESS, "--api-key", "po_k", "--order-id", "order-1001"]
    run = CliRun(testing, [*argv, "--customer", "cus_42", "--status", "breach"])
    _, request, rpc = testing.take_unary_unary(INSTALLMENTS.methods_by_name["ListInstallmentPlans"])
    rpc.terminate(installments_pb2.ListInstallmentPlansResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0

    assert (request.order_id, request.customer_id, request.status) == (
        "order-1001",
        "cus_42",
        installments_pb2.PLAN_STATUS_BREACH,
    )


def _export_plan(plan_id: str, order_id: str, *statuses: int) -> installments_pb2.InstallmentPlan:
    return installments_pb2.InstallmentPlan(
        plan_id=plan_id,
        merchant_id="m_1",
        order_id=order_id,
        total=plan_pb2.Money(amount_minor=10_000, currency="EUR"),
        status=installments_pb2.PLAN_STATUS_BREACH,
        payment_method=plan_pb2.PaymentMethod(token="pm_card_visa", customer_id="cus_42"),
        installments=[
            installments_pb2.Installment(
                installment_id=f"{plan_id}_{n}",
                sequence=n,
                amount=plan_pb2.Money(amount_minor=3333 + (n == 3), currency="EUR"),
                due_at=Timestamp(seconds=1_798_761_600 + n * 86_400),
                status=status,
                attempts=1,
                last_error_code="insufficient_funds" if n == 2 else "",
                last_error="=HYPERLINK(1)" if n == 2 else "",
            )
            for n, status in enumerate(statuses, start=1)
        ],
    )


def test_installments_export_writes_every_page_one_csv_row_per_installment(
    channel, monkeypatch, capsys
):
    """The plans a filter selects, for a spreadsheet or a collections run, in one
    command: before, only `installments list`, one page of JSON at a time."""
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    argv = ["installments", "export", *ADDRESS, "--api-key", "po_k", "--status", "breach"]
    run = CliRun(testing, argv)
    method = INSTALLMENTS.methods_by_name["ListInstallmentPlans"]
    paid, final = (
        installments_pb2.INSTALLMENT_STATUS_PAID,
        installments_pb2.INSTALLMENT_STATUS_FAILED_FINAL,
    )
    pages = [
        (_export_plan("ip_b", "-order-2", paid, final), "page-2"),
        (_export_plan("ip_a", "order-1", paid), ""),
    ]
    asked = []
    for plan, token in pages:
        _, request, rpc = testing.take_unary_unary(method)
        asked.append((request.page_token, request.status, request.page_size))
        page = installments_pb2.ListInstallmentPlansResponse(plans=[plan], next_page_token=token)
        rpc.terminate(page, (), grpc.StatusCode.OK, "")
    assert run.finish() == 0

    breach = installments_pb2.PLAN_STATUS_BREACH
    assert asked == [("", breach, 100), ("page-2", breach, 100)]
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["plan_id"], r["sequence"], r["status"]) for r in rows] == [
        ("ip_b", "1", "paid"),
        ("ip_b", "2", "failed_final"),
        ("ip_a", "1", "paid"),
    ]
    second = rows[1]
    assert (second["amount"], second["currency"], second["customer_id"]) == (
        "33.33",
        "EUR",
        "cus_42",
    )
    assert second["due_at"] == "2027-01-03T00:00:00Z"
    assert second["last_error_code"] == "insufficient_funds"
    # Text a spreadsheet would run as a formula stays text.
    assert (second["order_id"], second["last_error"]) == ("'-order-2", "'=HYPERLINK(1)")


def test_installments_export_that_fails_part_way_exits_1(channel, monkeypatch, capsys):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    run = CliRun(testing, ["installments", "export", *ADDRESS, "--api-key", "po_k"])
    method = INSTALLMENTS.methods_by_name["ListInstallmentPlans"]
    _, _, rpc = testing.take_unary_unary(method)
    paid = installments_pb2.INSTALLMENT_STATUS_PAID
    page = installments_pb2.ListInstallmentPlansResponse(
        plans=[_export_plan("ip_a", "order-1", paid)], next_page_token="page-2"
    )
    rpc.terminate(page, (), grpc.StatusCode.OK, "")
    _, _, rpc = testing.take_unary_unary(method)
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "connection lost")

    assert run.finish() == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 2, "the header and the first page's row"
    assert json.loads(captured.err)["code"] == "UNAVAILABLE"


@pytest.mark.parametrize("command", [["migrate"], ["keys", "list"]])
def test_a_sqlite_directory_the_user_cannot_write_is_one_line_naming_it_with_exit_2(
    command, tmp_path, monkeypatch, capsys
):
    # A container's volume not writable by its user (uid 10001): SQLite's "unable to
    # open database file" came as a traceback naming neither the file nor the user.
    # The tests run as root, who may write anywhere: the check's answer is made up.
    real_access = os.access

    def access(path, mode, **kwargs):
        return str(path) != str(tmp_path) and real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    argv = [command[0], "--database-url", url, *command[1:]]
    assert exit_code_of(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("payorch: ") and str(tmp_path) in last and "writable" in last
    assert not (tmp_path / "p.db").exists()


def test_redeliver_with_a_delivery_id_still_sends_one_redeliver_webhook(channel, monkeypatch):
    testing = grpc_testing.channel([INSTALLMENTS], grpc_testing.strict_real_time())
    monkeypatch.setattr(cli, "channel", lambda _args: testing)
    run = CliRun(testing, ["webhooks", "redeliver", *ADDRESS, "--api-key", "po_k", "whd_1"])
    _, request, rpc = testing.take_unary_unary(INSTALLMENTS.methods_by_name["RedeliverWebhook"])
    rpc.terminate(installments_pb2.RedeliverWebhookResponse(), (), grpc.StatusCode.OK, "")
    assert run.finish() == 0
    assert request.delivery_id == "whd_1"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "give a delivery id, or --endpoint"),
        (["whd_1", "--endpoint", "we_1", "--dead"], "not both"),
        (["whd_1", "--dead"], "go with --endpoint"),
        (["--endpoint", "we_1"], "give --since and --until, or --dead"),
        (["--endpoint", "we_1", "--dead", "--since", "2027-01-01T00:00:00Z"], "or --dead"),
        (["--endpoint", "we_1", "--since", "2027-01-01T00:00:00Z"], "both --since and --until"),
        (
            [
                "--endpoint",
                "we_1",
                "--since",
                "2027-01-01T00:00:00Z",
                "--until",
                "2027-03-01T00:00Z",
            ],
            "the window is over 31 days",
        ),
        (
            [
                "--endpoint",
                "we_1",
                "--since",
                "2027-01-02T00:00:00Z",
                "--until",
                "2027-01-01T00:00Z",
            ],
            "since must be before until",
        ),
        (["--endpoint", "we_1", "--since", "2027-01-01T00:00:00"], "give a time zone"),
        (["--endpoint", "we_1", "--dead", "--type", "installment.paied"], "unknown event type"),
    ],
)
def test_a_bulk_redeliver_asked_wrongly_is_one_line_with_exit_2_before_the_database(
    argv, says, tmp_path, monkeypatch, capsys
):
    never_open_the_database(monkeypatch)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert exit_code_of(["webhooks", "redeliver", "--database-url", url, *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize("secret", ["", "whsec_", "not base64!"])
def test_listen_refuses_a_secret_no_webhook_can_be_verified_with_in_one_line(
    secret, monkeypatch, capsys
):
    def served(*args: object, **kwargs: object) -> None:
        raise AssertionError("the receiver started")

    monkeypatch.setattr("aiohttp.web.run_app", served)
    assert exit_code_of(["webhooks", "listen", "--port", "0", "--secret", secret]) == 2
    err = capsys.readouterr().err
    assert err.startswith("payorch webhooks listen: error: argument --secret: the secret")
    assert err.count("\n") == 1


async def test_listen_given_two_secrets_takes_a_webhook_signed_under_either_and_no_other(
    monkeypatch, capsys
):
    # A receiver during a rotation's overlap holds the old secret and the new one; after
    # it the sender signs with the new alone, which the receiver must still take.
    from aiohttp.test_utils import TestClient, TestServer

    from payorch.webhooks import generate_secret, headers_for

    old, new, stranger = generate_secret(), generate_secret(), generate_secret()
    taken: list[object] = []
    monkeypatch.setattr("aiohttp.web.run_app", lambda app, **kwargs: taken.append(app))
    argv = ["webhooks", "listen", "--port", "0", "--secret", old, "--secret", new]
    assert exit_code_of(argv) == 0
    (app,) = taken
    body = '{"type":"installment.paid","data":{}}'
    now = int(time.time())
    async with TestClient(TestServer(app)) as client:
        for n, signers in enumerate([[new], [old], [new, old], [stranger]]):
            headers = headers_for(signers, f"evt_{n}", now, body)
            answer = await client.post("/hooks", data=body, headers=headers)
            assert answer.status == (400 if signers == [stranger] else 204), n
    out, err = capsys.readouterr()
    assert [json.loads(line)["webhook_id"] for line in out.splitlines()[1:]] == [
        "evt_0",
        "evt_1",
        "evt_2",
    ]
    assert "no matching signature" in err
    for secret in (old, new, stranger):
        assert secret.removeprefix("whsec_") not in out + err

    from payorch.entrypoints.installments_cli import receiver

    assert receiver([old])  # one secret, as before
