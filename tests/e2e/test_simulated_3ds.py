"""3-D Secure end to end on the default (simulated) processor, against the real server
process and through the real CLI: pay with a card that asks for it, the payment waits
for the customer, the customer passes (or fails) the challenge on the server's
simulated 3-D Secure page (`payorch simulate-3ds`), and `payorch confirm` finishes it
as it would on Stripe (docs/classification.md, "3-D Secure on the simulated
processor")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.e2e.server import RunningServer

pytestmark = pytest.mark.e2e


def cli(server: RunningServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PAYORCH_HTTP_URL": f"http://{server.http_address}"},
        timeout=60,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def client(server: RunningServer, *args: str) -> dict:
    flags = ["--address", server.address, "--api-key", server.keys["m_1"]]
    return json.loads(cli(server, *args, *flags).stdout)


def paused_payment(server: RunningServer, *extra: str) -> tuple[str, str, str]:
    paid = client(
        server,
        "pay",
        "--amount",
        "42.00",
        "--currency",
        "eur",
        "--payment-method",
        "pm_card_threeDSecureRequired",
        "--request-id",
        f"e2e-3ds-{uuid.uuid4()}",
        *extra,
    )
    payment = paid["payment"]
    assert payment["result"]["status"] == "PAYMENT_STATUS_REQUIRES_ACTION"
    [step] = payment["result"]["stepResults"]
    assert step["nextAction"]["type"] == "use_stripe_sdk"
    return payment["paymentId"], step["processorPaymentId"], step["nextAction"]["clientSecret"]


def result(server: RunningServer, command: str, payment_id: str) -> dict:
    """The payment's result after `payorch confirm` or `payorch get`."""
    answer = client(server, command, payment_id)
    return dict(answer.get("payment", answer)["result"])


def test_a_customer_who_passes_3ds_lets_confirm_capture_the_payment(server):
    payment_id, intent, secret = paused_payment(server)
    assert result(server, "confirm", payment_id)["status"] == ("PAYMENT_STATUS_REQUIRES_ACTION")
    # GetPayment hands the secret out while the step waits for the customer.
    waiting = result(server, "get", payment_id)["stepResults"][0]["nextAction"]
    assert waiting["clientSecret"] == secret

    answered = json.loads(cli(server, "simulate-3ds", intent, "--client-secret", secret).stdout)

    assert answered == {"id": intent, "outcome": "complete", "status": "succeeded"}
    done = result(server, "confirm", payment_id)
    assert done["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert done["stepResults"][0]["status"] == "STEP_STATUS_CAPTURED"
    assert done["totalProcessed"] == {"amountMinor": "4200", "currency": "EUR"}
    # Resolved: the secret is kept no longer (docs/security.md), what was asked stays.
    assert done["stepResults"][0]["nextAction"] == {"type": "use_stripe_sdk"}
    # Answered once: a second answer is refused, and the payment stays as it is.
    again = cli(server, "simulate-3ds", intent, "--client-secret", secret, "--fail", check=False)
    assert again.returncode == 1
    assert json.loads(again.stderr)["error"]["reason"] == "not_waiting"
    assert result(server, "get", payment_id)["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert secret not in server.log()


def test_a_customer_who_fails_3ds_leaves_the_payment_failed_and_uncharged(server):
    payment_id, intent, secret = paused_payment(server, "--off-session")

    answered = json.loads(
        cli(server, "simulate-3ds", intent, "--client-secret", secret, "--fail").stdout
    )

    assert answered["status"] == "requires_payment_method"
    failed = result(server, "confirm", payment_id)
    assert failed["status"] == "PAYMENT_STATUS_FAILED"
    [step] = failed["stepResults"]
    assert step["status"] == "STEP_STATUS_FAILED"
    assert (step["outcome"], step["errorCode"], failed["finalError"]) == (
        "OUTCOME_HARD",
        "ERROR_CODE_AUTHENTICATION_FAILED",
        "ERROR_CODE_AUTHENTICATION_FAILED",
    )
    # No automatic retry: one authorize (the pause), then the intent looked up and closed.
    assert [a["operation"] for a in step["attempts"]] == ["authorize", "lookup", "void", "lookup"]
    assert "amountMinor" not in failed["totalProcessed"]
    # Asked again later, it reads the same: nothing retried meanwhile.
    later = result(server, "get", payment_id)
    assert later["finalError"] == "ERROR_CODE_AUTHENTICATION_FAILED"
    assert len(later["stepResults"][0]["attempts"]) == 4
    assert later["stepResults"][0]["nextAction"] == {"type": "use_stripe_sdk"}
    closed = cli(server, "simulate-3ds", intent, "--client-secret", secret, check=False)
    assert json.loads(closed.stderr)["error"]["reason"] == "not_waiting"


def test_a_wrong_secret_or_an_unknown_intent_is_refused(server):
    payment_id, intent, secret = paused_payment(server)
    _, _, other_secret = paused_payment(server)

    wrong = cli(server, "simulate-3ds", intent, "--client-secret", other_secret, check=False)
    unknown = cli(server, "simulate-3ds", "pi_sim_nope", "--client-secret", secret, check=False)

    assert (wrong.returncode, json.loads(wrong.stderr)["error"]["reason"]) == (1, "wrong_secret")
    assert json.loads(unknown.stderr)["error"]["reason"] == "unknown_intent"
    assert result(server, "confirm", payment_id)["status"] == ("PAYMENT_STATUS_REQUIRES_ACTION")


def test_without_a_server_the_command_says_where_it_looked():
    flags = ["--client-secret", "s", "--http", "http://127.0.0.1:9"]
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", "simulate-3ds", "pi_sim_x", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("payorch: cannot reach http://127.0.0.1:9:")
