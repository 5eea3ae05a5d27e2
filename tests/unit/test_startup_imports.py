"""What a worker loads before it does anything: start-up counts in every `--once` run."""

from __future__ import annotations

import subprocess
import sys

_IMPORTS = """
import sys
import payorch.bootstrap, payorch.entrypoints.cli, payorch.entrypoints.installments_cli
print(" ".join(m for m in ("aiohttp", "alembic") if m in sys.modules))
"""

# What `payorch scheduler` and `payorch dispatch` import before their first claim: the
# command's parser (every subcommand's flags) and the modules cmd_scheduler imports.
_WORKER_START = """
import sys
from payorch.entrypoints import cli
args = cli.parser().parse_args(["scheduler", "--once", "--no-webhooks"])
assert args.func.__name__ == "cmd_scheduler"
import payorch.adapters.worker_lock, payorch.bootstrap
import payorch.entrypoints.logs, payorch.entrypoints.runtime
print(" ".join(m for m in ("grpc", "google.protobuf") if m in sys.modules))
"""


def test_a_worker_loads_neither_aiohttp_nor_alembic_before_it_needs_them():
    # aiohttp waits for the first webhook delivery, Alembic for a database not at
    # every head (tests/integration/test_migrations.py): 0.2-0.3 s of each start.
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []


def test_a_worker_loads_neither_grpc_nor_protobuf_its_client_commands_use():
    # Only the client commands (pay, installments get, stats, ...) and `serve` talk
    # gRPC: a scheduler or dispatcher never does (~0.1-0.2 s of each start).
    done = subprocess.run(
        [sys.executable, "-c", _WORKER_START], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []
