"""`payorch serve` on a PostgreSQL URL written as libpq and managed services write it:
`?sslmode=...&application_name=...` (and SQLAlchemy's `?ssl=...`) reach every
connection, SQLAlchemy's and the payment writer's, and payments are taken."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payments.result.v1 import result_pb2
from tests.conftest import require_postgres, scratch_postgres
from tests.e2e.server import create_key, payorch, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _sessions_named(url: str, name: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
                )
            )
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.mark.parametrize("ssl", ["sslmode=disable", "ssl=disable"])
def test_a_postgresql_url_with_libpq_parameters_serves_payments(tmp_path, ssl):
    with scratch_postgres() as plain:
        name = f"payorch-e2e-{uuid.uuid4().hex[:8]}"
        url = f"{plain}?{ssl}&application_name={name}"
        # Before: `sslmode` and `application_name` went to asyncpg.connect as keyword
        # arguments (a TypeError traceback at start); `ssl` started the server, and
        # every payment failed INTERNAL (the writer sent it as a server setting).
        assert "migrated" in payorch("migrate", "--database-url", url)
        key = create_key(url, merchant="m_url")
        server = start_server(tmp_path, url)
        try:
            with server.channel() as channel:
                stub = orch_grpc.PaymentOrchestratorStub(channel)
                reply = stub.CreatePayment(
                    orch.CreatePaymentRequest(
                        request_id="url-1",
                        amount_minor=1999,
                        currency="usd",
                        payment_method="pm_card_visa",
                    ),
                    metadata=[("authorization", f"Bearer {key}")],
                    timeout=30,
                )
                assert reply.payment.result.status == result_pb2.PAYMENT_STATUS_SUCCEEDED
            # SQLAlchemy's pool and the payment writer's both connected with the URL's
            # parameters: at least one session of each stays open, named.
            assert _sessions_named(plain, name) >= 2
        finally:
            assert server.stop() == 0


def test_a_connect_timeout_that_is_no_number_of_seconds_is_one_line_naming_it():
    url = "postgresql://payorch:hunter2@127.0.0.1:1/x?connect_timeout=soon"
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        ["payorch: connect_timeout in the database URL must be seconds above 0, at most 3600"],
    )


@pytest.mark.parametrize("command", ["migrate", "serve", "scheduler"])
def test_a_database_postgresql_refuses_is_one_line_naming_it_without_its_password(command):
    # Before: a 170-line traceback ending in sqlalchemy.exc.DBAPIError, exit code 1.
    admin = make_url(require_postgres())
    missing = f"payorch_missing_{uuid.uuid4().hex[:8]}"
    url = admin.set(password="hunter2", database=missing)
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PAYORCH_DATABASE_URL": url.render_as_string(hide_password=False)},
    )
    shown = url.render_as_string(hide_password=True)
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [f'payorch: cannot use the database {shown}: database "{missing}" does not exist'],
    )


# PostgreSQL's answers to a connection it cannot take yet, as the wire carries them.
STARTING_UP = b"SFATAL\x00VFATAL\x00C57P03\x00Mthe database system is starting up\x00\x00"


@contextlib.contextmanager
def a_database_that_hangs_up(answer: bytes) -> Iterator[int]:
    """A port where a PostgreSQL client's handshake is cut: the SSL request refused
    ('N'), the startup message read, then `answer` (an ErrorResponse's body, or
    nothing) and the connection closed. Its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"N")
                    conn.recv(1024)
                    if answer:
                        conn.sendall(b"E" + struct.pack("!I", len(answer) + 4) + answer)
                    conn.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", "connection was closed in the middle of operation"),
        (STARTING_UP, "the database system is starting up"),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "serve", "scheduler"])
def test_a_database_that_cannot_be_reached_at_start_is_one_line_naming_it(command, answer, reason):
    # Before: asyncpg's ConnectionDoesNotExistError (or CannotConnectNowError) in a
    # 180-line traceback ending in sqlalchemy.exc.DBAPIError, exit code 1.
    with a_database_that_hangs_up(answer) as port:
        url = f"postgresql://payorch:hunter2@127.0.0.1:{port}/payorch"
        done = subprocess.run(
            [sys.executable, "-m", "payorch.entrypoints.cli", command],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PAYORCH_DATABASE_URL": url},
        )
    shown = f"postgresql://payorch:***@127.0.0.1:{port}/payorch"
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [f"payorch: cannot reach the database {shown}: {reason}"],
    )
