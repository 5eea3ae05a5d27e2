"""The real `payorch serve` and CLI with secrets at rest (docs/security.md): `make run`'s
default (SQLite, no key given) makes a key file beside the database and seals with it;
PostgreSQL without a key, or a key that cannot be used, stops the server in one line."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys

import pytest

from payments.installments.v1 import installments_pb2 as pb
from payments.installments.v1 import installments_pb2_grpc as pb_grpc
from tests.e2e.server import payorch, start_server

# As `make run`: no key in the environment (an empty variable is an unset one).
NO_KEY = {"PAYORCH_SECRETS_KEY": "", "PAYORCH_SECRETS_KEY_FILE": ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_embedded_default_seals_webhook_keys_with_a_key_file_made_beside_the_database(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'payorch.db'}"
    env = {**NO_KEY, "PAYORCH_WEBHOOKS_ALLOW_HTTP_LOOPBACK": "1"}
    args = ("--demo-key-file", ".payorch/demo-key")
    key_file = tmp_path / "payorch.db.secrets-key"
    first = start_server(tmp_path, url, args=args, env=env)
    try:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        demo = (tmp_path / ".payorch" / "demo-key").read_text().strip()
        with first.channel() as channel:
            made = pb_grpc.InstallmentServiceStub(channel).CreateWebhookEndpoint(
                pb.CreateWebhookEndpointRequest(url=f"http://127.0.0.1:{free_port()}/hooks"),
                metadata=[("authorization", f"Bearer {demo}")],
                timeout=10,
            )
    finally:
        first.stop()
    signing_key = made.secret.removeprefix("whsec_")
    assert signing_key
    with sqlite3.connect(tmp_path / "payorch.db") as db:
        (stored,) = db.execute("SELECT signing_key FROM webhook_endpoints").fetchone()
    assert stored.startswith("enc1:") and signing_key not in stored
    assert signing_key.encode() not in (tmp_path / "payorch.db").read_bytes()
    key_text = key_file.read_text().strip().split(":", 1)[1]
    log = first.log()
    assert str(key_file) in log, "the key file made is logged, by its path"
    assert key_text not in log and signing_key not in log

    # Stored as a version before encryption left it (an upgrade): the restart, taking
    # the same file, seals it, logging the count, never the key.
    with sqlite3.connect(tmp_path / "payorch.db") as db:
        db.execute("UPDATE webhook_endpoints SET signing_key = ?", (signing_key,))
    second = start_server(tmp_path, url, args=args, env=env)
    second.stop()
    with sqlite3.connect(tmp_path / "payorch.db") as db:
        (resealed,) = db.execute("SELECT signing_key FROM webhook_endpoints").fetchone()
    assert resealed.startswith("enc1:") and resealed != stored
    log = second.log()
    assert "sealed 1 stored secrets that were in plain text" in log
    assert key_text not in log and signing_key not in log
    # The CLI finds the key file the same way.
    status = json.loads(payorch("secrets", "status", "--database-url", url, env=NO_KEY))
    assert status["plain_text"] == 0 and status["unknown_key_ids"] == []
    assert list(status["by_key_id"].values()) == [1]
    assert key_file.read_text().strip().split(":", 1)[1] == key_text


def serve_refused(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PAYORCH_HTTP_PORT": "0", **env},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        # Refused before the database is opened: no server answers at that port.
        (
            {**NO_KEY, "PAYORCH_DATABASE_URL": "postgresql://payorch@127.0.0.1:9/payorch"},
            "PAYORCH_SECRETS_KEY (or PAYORCH_SECRETS_KEY_FILE) is not set",
        ),
        (
            {"PAYORCH_SECRETS_KEY": "a:c2hvcnQta2V5", "PAYORCH_DATABASE_URL": "sqlite://"},
            "PAYORCH_SECRETS_KEY (or PAYORCH_SECRETS_KEY_FILE): key 1 is not the base64",
        ),
    ],
)
def test_serve_without_a_usable_key_exits_2_in_one_line_naming_the_variable(env, says):
    done = serve_refused(env)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "c2hvcnQta2V5" not in done.stderr + done.stdout


def test_generate_key_writes_a_file_once_and_prints_no_key(tmp_path):
    path = tmp_path / "secrets-key"
    first = json.loads(payorch("secrets", "generate-key", "--file", str(path)))
    assert first["made"] is True and stat.S_IMODE(path.stat().st_mode) == 0o600
    key_text = path.read_text().strip()
    assert key_text.split(":")[0] == first["key_id"]
    again = payorch("secrets", "generate-key", "--file", str(path))
    assert json.loads(again)["made"] is False and path.read_text().strip() == key_text
    assert key_text.split(":")[1] not in again
