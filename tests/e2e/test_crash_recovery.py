"""The server process SIGKILLed at each point of a payment's life, then started again on
the same database: the client retries under the same request_id and the reconciler
(`payorch reconcile`, its clock moved on with PAYORCH_CLOCK_OFFSET) has its turn. The
fake Stripe outlives every server, so its ledger is the truth of what was charged: at
most one charge per step, every charge reported (never failed or lost), the amounts
payorch reports the ones Stripe holds (docs/recovery.md, "A server killed
mid-payment").

Each kill happens while the fake holds a request at a known point (a `Hold`: the
test waits for the request to get there, never for a schedule). One database and one
fake Stripe serve the module's scenarios; the server restarted after one kill is the
next scenario's victim.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2 as res
from tests.conftest import scratch_postgres
from tests.e2e.server import RunningServer, create_key, payorch, start_server
from tests.e2e.threaded_stripe import ThreadedFakeStripe
from tests.fakes.fake_stripe import Endpoint, FakeStripe, Fault, Hold
from tests.rich_status import error_reasons

pytestmark = pytest.mark.e2e

API_KEY = "sk_test_payorch_crash_4242"
MERCHANT = "m_crash"
OK = "pm_card_visa"
# A PROCESSING payment counts as interrupted once it is 5 minutes old
# (payorch.app.payments.STALE_PROCESSING): the reconciler runs that much later.
LATER = "6m"
LATER_STILL = "12m"


@dataclass
class Crashes:
    """The database and the fake Stripe every server of the module shares, and the
    server running now (each kill starts the next)."""

    workdir: Path
    url: str
    stripe: ThreadedFakeStripe
    server: RunningServer | None = None
    key: str = ""
    holds: list[Hold] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**self.stripe.server_env(), "PAYORCH_PROCESSORS": "stripe"}

    def start(self) -> RunningServer:
        self.server = start_server(self.workdir, self.url, env=self.env())
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def tidy(self) -> None:
        """After a scenario, passed or not: no hold or fault is left for the next one,
        and a server runs."""
        for hold in self.holds:
            self.stripe.release(hold)
        self.holds.clear()
        self.stripe.call(lambda fake: fake.clear_faults())
        if self.server is None or self.server.process.poll() is not None:
            self.start()

    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.key}")]

    @contextlib.contextmanager
    def stub(self) -> Iterator[orch_grpc.PaymentOrchestratorStub]:
        assert self.server is not None
        with self.server.channel() as channel:
            yield orch_grpc.PaymentOrchestratorStub(channel)

    def reconcile(self, later: str) -> None:
        """One pass of the reconciler, as cron runs it, on a clock `later` ahead."""
        env = {**self.env(), "PAYORCH_CLOCK_OFFSET": later}
        out = payorch("reconcile", "--database-url", self.url, env=env)
        assert "reconciled" in json.loads(out.splitlines()[-1]), out


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def crashes(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Crashes]:
    workdir = tmp_path_factory.mktemp("crash")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{workdir / 'payorch.db'}"
        else:
            url = stack.enter_context(scratch_postgres())
        stripe = ThreadedFakeStripe(API_KEY)
        stack.callback(stripe.close)
        crashes = Crashes(workdir, url, stripe)
        crashes.start()  # migrates the database
        stack.callback(crashes.stop)
        crashes.key = create_key(url, merchant=MERCHANT)
        yield crashes


@pytest.fixture(autouse=True)
def _tidy(crashes: Crashes) -> Iterator[None]:
    yield
    crashes.tidy()


# -- one payment, killed where a Hold keeps it ----------------------------------------
def single(amount_minor: int = 2500) -> orch.CreatePaymentRequest:
    return orch.CreatePaymentRequest(
        request_id=f"crash-{uuid.uuid4()}",
        amount_minor=amount_minor,
        currency="usd",
        payment_method=OK,
    )


def split() -> orch.CreatePaymentRequest:
    """docs/split-payments.md: 60.00 Apple Pay + 40.00 card, authorized then captured."""
    return orch.CreatePaymentRequest(
        request_id=f"crash-split-{uuid.uuid4()}",
        amount_minor=10000,
        currency="usd",
        methods=[
            orch.PaymentMethodInput(method="apple_pay", token=OK, amount_minor=6000),
            orch.PaymentMethodInput(method="card", token=OK),
        ],
    )


# What the fake does with the request it holds, once it is let go.
def dropped(hold: Hold) -> Fault:
    """Never processed: held on arrival, then the connection is closed."""
    return Fault.slow(process=False, until=hold)


def in_flight(hold: Hold) -> Fault:
    """Held unprocessed, its key in flight and its PaymentIntent locked; then processed."""
    return Fault.stall(until=hold)


def answer_held(hold: Hold) -> Fault:
    """Processed at once (and stored under its key); its answer held, then lost."""
    return Fault.slow(until=hold)


def hold_at(
    crashes: Crashes, endpoint: Endpoint, make: Callable[[Hold], Fault], *, after: int = 0
) -> Hold:
    """A hold for the `after`+1-th next request to `endpoint`, by `make(hold)`."""
    hold = crashes.stripe.hold()
    crashes.holds.append(hold)
    faults = [Fault.none()] * after + [make(hold)]
    crashes.stripe.call(lambda fake: fake.inject(*faults, endpoint=endpoint))
    return hold


def kill_at(crashes: Crashes, hold: Hold, request: orch.CreatePaymentRequest) -> None:
    """CreatePayment on the server, SIGKILLed once the fake holds its request at
    `hold`; then a new server on the same database."""
    victim = crashes.server
    assert victim is not None
    with crashes.stub() as stub:
        call = stub.CreatePayment.future(request, metadata=crashes.auth(), timeout=30)
        try:
            crashes.stripe.wait_reached(hold)
        except TimeoutError:
            answer = call.result() if call.done() else "(no answer)"
            raise AssertionError(
                f"the payment never reached the hold: {answer}\n{victim.log()[-3000:]}"
            ) from None
        victim.kill()
        with pytest.raises(grpc.RpcError) as lost:
            call.result()
    assert lost.value.code() is grpc.StatusCode.UNAVAILABLE, lost.value
    crashes.start()


def retry(crashes: Crashes, request: orch.CreatePaymentRequest) -> orch.Payment:
    with crashes.stub() as stub:
        reply = stub.CreatePayment(request, metadata=crashes.auth(), timeout=20)
    assert reply.payment.replayed
    return reply.payment


def retry_in_progress(crashes: Crashes, request: orch.CreatePaymentRequest) -> None:
    """The retry before the reconciler has run: the payment is stored PROCESSING, so
    nothing is charged again and the caller is told to come back (ABORTED). The server
    waits for it about half the deadline, the rest left for its answer to arrive."""
    with crashes.stub() as stub, pytest.raises(grpc.RpcError) as refused:
        stub.CreatePayment(request, metadata=crashes.auth(), timeout=1.5)
    assert refused.value.code() is grpc.StatusCode.ABORTED, refused.value
    assert error_reasons(refused.value) == ["REQUEST_IN_PROGRESS"]


def get(crashes: Crashes, payment_id: str) -> orch.Payment:
    with crashes.stub() as stub:
        reply = stub.GetPayment(
            orch.GetPaymentRequest(payment_id=payment_id), metadata=crashes.auth()
        )
    return reply.payment


def events(crashes: Crashes, payment_id: str) -> list[str]:
    with crashes.stub() as stub:
        reply = stub.ListPaymentEvents(
            orch.ListPaymentEventsRequest(payment_id=payment_id), metadata=crashes.auth()
        )
    return [e.WhichOneof("event") for e in reply.events]


def only_payment(crashes: Crashes, request: orch.CreatePaymentRequest) -> str:
    """The id of the one payment stored under the request."""
    with crashes.stub() as stub:
        listed = stub.ListPayments(orch.ListPaymentsRequest(page_size=100), metadata=crashes.auth())
    mine = [p.payment_id for p in listed.payments if p.request_id == request.request_id]
    assert len(mine) == 1, mine
    return mine[0]


# -- Stripe's ledger ----------------------------------------------------------------------
def intents(crashes: Crashes, payment_id: str | None) -> list[dict[str, Any]]:
    def read(fake: FakeStripe) -> list[dict[str, Any]]:
        return [
            {**pi, "charges": fake.charges_for(pi["id"])}
            for pi in fake.payment_intents.values()
            if payment_id is None or pi["metadata"].get("payorch_payment_id") == payment_id
        ]

    return crashes.stripe.call(read)


def assert_agrees_with_stripe(crashes: Crashes, payment: orch.Payment) -> None:
    """At most one charge per step, and what payorch says of each step is what Stripe
    holds for it: captured, held (authorized) or nothing."""
    ledger = intents(crashes, payment.payment_id)
    for step in payment.result.step_results:
        mine = [pi for pi in ledger if pi["metadata"]["payorch_step"] == str(step.step_index)]
        assert sum(pi["charges"] for pi in mine) <= 1, mine
        received = sum(pi["amount_received"] for pi in mine)
        capturable = sum(pi["amount_capturable"] for pi in mine)
        if step.status == res.STEP_STATUS_CAPTURED:
            assert (received, capturable) == (step.amount.amount_minor, 0), mine
            assert step.captured_minor == received
            (charged,) = [pi for pi in mine if pi["charges"]]
            assert step.processor_payment_id == charged["id"]
        elif step.status == res.STEP_STATUS_AUTHORIZED:
            assert (received, capturable) == (0, step.amount.amount_minor), mine
        else:
            # Failed, voided or skipped: Stripe holds nothing for it.
            assert (received, capturable) == (0, 0), (res.StepStatus.Name(step.status), mine)
            closed = step.status == res.STEP_STATUS_VOIDED or any(
                d.startswith("reconciled: never charged") for d in lookups(step)
            )
            if closed:  # no confirm still on its way can charge a canceled intent
                assert all(pi["status"] == "canceled" for pi in mine), mine
    taken = sum(pi["amount_received"] for pi in ledger)
    assert payment.result.total_processed.amount_minor == taken


def lookups(step: res.StepResult) -> list[str]:
    return [a.retry_decision for a in step.attempts if a.operation == "lookup"]


def recovered(
    crashes: Crashes,
    request: orch.CreatePaymentRequest,
    endpoint: Endpoint,
    make: Callable[[Hold], Fault],
    *,
    after: int = 0,
) -> orch.Payment:
    """Killed at the hold, the held request let go (processed or dropped, as its fault
    says), the client's retry told to come back, one reconciler pass: the payment as the
    client's next retry replays it (and GetPayment shows it), checked against Stripe's
    ledger."""
    hold = hold_at(crashes, endpoint, make, after=after)
    kill_at(crashes, hold, request)
    crashes.stripe.release(hold)
    retry_in_progress(crashes, request)
    crashes.reconcile(LATER)
    payment = retry(crashes, request)
    assert get(crashes, payment.payment_id).result == payment.result  # as stored
    assert_agrees_with_stripe(crashes, payment)
    return payment


def assert_split_captured(payment: orch.Payment) -> None:
    assert payment.result.status == res.PAYMENT_STATUS_SUCCEEDED
    steps = [(s.status, s.captured_minor) for s in payment.result.step_results]
    assert steps == [(res.STEP_STATUS_CAPTURED, 6000), (res.STEP_STATUS_CAPTURED, 4000)]
    assert payment.result.total_processed.amount_minor == 10000


# -- the scenarios ---------------------------------------------------------------------
def test_killed_after_storing_the_payment_before_any_call_fails_it_uncharged(crashes):
    """(1) The payment is stored PROCESSING, its first request to Stripe (the
    PaymentIntent's create) never processed. The reconciler finds no charge: it replays
    the create under its key, cancels the intent that makes, and fails the step."""
    request = single()
    payment = recovered(crashes, request, "create", dropped)
    assert payment.result.status == res.PAYMENT_STATUS_FAILED
    (step,) = payment.result.step_results
    assert step.status == res.STEP_STATUS_FAILED
    assert "reconciled: never charged" in lookups(step)
    # Known not charged: no longer read as an unknown outcome.
    assert payment.result.final_error == res.ERROR_CODE_INTERRUPTED
    assert payment.result.final_error_message == "step 0 failed: interrupted"
    assert [a.operation for a in step.attempts] == ["lookup", "void", "lookup"]
    assert sum(pi["charges"] for pi in intents(crashes, payment.payment_id)) == 0
    assert events(crashes, payment.payment_id) == [
        "payment_processing",
        "step_failed",
        "payment_reconciled",
        "payment_failed",
    ]


def test_killed_while_stripe_still_runs_the_confirm_waits_for_it_and_records_the_charge(
    crashes,
):
    """(2) Stripe has the confirm and has not answered: killed then. While the confirm
    still runs at Stripe the reconciler learns nothing (the intent reads unconfirmed,
    and Stripe refuses the cancel with lock_timeout), so it fails nothing; once the
    confirm has charged, the next pass records the charge."""
    request = single(3100)
    hold = hold_at(crashes, "confirm", in_flight)
    kill_at(crashes, hold, request)
    retry_in_progress(crashes, request)

    crashes.reconcile(LATER)  # Stripe still holds the confirm
    payment_id = only_payment(crashes, request)
    waiting = get(crashes, payment_id)
    assert waiting.result.status == res.PAYMENT_STATUS_PROCESSING
    (step,) = waiting.result.step_results
    assert step.status == res.STEP_STATUS_PENDING
    assert "not closed" in step.attempts[-1].retry_decision
    retry_in_progress(crashes, request)

    crashes.stripe.release(hold)  # the confirm charges; its answer goes nowhere
    crashes.reconcile(LATER_STILL)
    payment = retry(crashes, request)
    assert payment.payment_id == payment_id
    assert payment.result.status == res.PAYMENT_STATUS_SUCCEEDED
    (step,) = payment.result.step_results
    assert step.status == res.STEP_STATUS_CAPTURED
    assert lookups(step)[-1] == "reconciled: charged"
    assert_agrees_with_stripe(crashes, payment)
    assert payment.result.total_processed.amount_minor == 3100
    assert events(crashes, payment_id) == [
        "payment_processing",
        "step_succeeded",
        "payment_reconciled",
        "payment_completed",
    ]


def test_killed_after_stripe_charged_before_payorch_recorded_it_reports_the_charge(crashes):
    """(3) Stripe processed the confirm (charged, the answer stored under its key) and
    the server died before it recorded the answer."""
    request = single(4200)
    payment = recovered(crashes, request, "confirm", answer_held)
    assert payment.result.status == res.PAYMENT_STATUS_SUCCEEDED
    (step,) = payment.result.step_results
    assert step.status == res.STEP_STATUS_CAPTURED
    assert lookups(step) == ["reconciled: charged"]
    assert payment.result.total_processed.amount_minor == 4200
    assert "payment_reconciled" in events(crashes, payment.payment_id)


def test_a_split_killed_between_its_steps_releases_the_first(crashes):
    """(4) A two-step split killed after its first step was authorized at Stripe, its
    second step's create never processed: all-or-nothing, so the reconciler finds the
    first step held, the second never charged, and voids the first."""
    payment = recovered(crashes, split(), "create", dropped, after=1)
    assert payment.result.status == res.PAYMENT_STATUS_FAILED
    first, second = payment.result.step_results
    assert (first.status, second.status) == (res.STEP_STATUS_VOIDED, res.STEP_STATUS_FAILED)
    assert lookups(first) == ["reconciled: charged"]
    assert "reconciled: never charged" in lookups(second)
    ledger = intents(crashes, payment.payment_id)
    assert sorted((pi["metadata"]["payorch_step"], pi["charges"]) for pi in ledger) == [
        ("0", 1),
        ("1", 0),
    ]


def test_a_split_killed_while_its_second_step_charges_captures_both(crashes):
    """(4) A two-step split killed while Stripe runs its second step's confirm, the
    first already authorized: the confirm goes through after the kill, the reconciler
    finds both steps authorized and captures them, once each."""
    payment = recovered(crashes, split(), "confirm", in_flight, after=1)
    assert_split_captured(payment)
    assert events(crashes, payment.payment_id)[-2:] == ["payment_captured", "payment_completed"]


def test_a_split_killed_while_its_steps_are_captured_captures_each_once(crashes):
    """(5) Both steps authorized, the first capture made at Stripe, the server killed
    before the second: nothing of this was recorded (the plan is saved when it ends),
    so the reconciler finds one step captured and one held, and captures the held one;
    the capture it makes again is under the same key, replayed by Stripe."""
    payment = recovered(crashes, split(), "capture", answer_held)
    assert_split_captured(payment)
    captures = crashes.stripe.call(lambda fake: fake.requests_to("capture"))
    mine = {s.processor_payment_id for s in payment.result.step_results}
    made = [r for r in captures if r.path.split("/")[3] in mine and not r.replayed]
    assert len(made) == 2, made  # one capture per step made; any other was a replay
