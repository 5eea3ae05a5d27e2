"""What a worker loads before it does anything: start-up counts in every `--once` run."""

from __future__ import annotations

import subprocess
import sys

_IMPORTS = """
import sys
import payorch.bootstrap, payorch.entrypoints.cli, payorch.entrypoints.installments_cli
print(" ".join(m for m in ("aiohttp", "alembic") if m in sys.modules))
"""


def test_a_worker_loads_neither_aiohttp_nor_alembic_before_it_needs_them():
    # aiohttp waits for the first webhook delivery, Alembic for a database not at
    # every head (tests/integration/test_migrations.py): 0.2-0.3 s of each start.
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == []
