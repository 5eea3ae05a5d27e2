"""One worker of a kind per SQLite database: a file lock next to the database file.

PostgreSQL needs none (claims skip locked rows and carry a lease); SQLite has no
SKIP LOCKED, so a second scheduler or dispatcher on the same file is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from payorch.adapters.persistence.engine import normalize_url


class AnotherWorkerRunning(RuntimeError):
    pass


def lock_path(database_url: str, kind: str) -> Path | None:
    url = normalize_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(f"{url.database}.{kind}.lock")


@contextlib.contextmanager
def single_worker(database_url: str, kind: str) -> Iterator[None]:
    """Hold the `kind` lock of a SQLite database for the duration; no-op elsewhere."""
    path = lock_path(database_url, kind)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise AnotherWorkerRunning(
                f"another {kind} is already running on this SQLite database "
                f"(lock {path} held by pid {holder}); SQLite runs one {kind}: "
                "stop the other one, or use PostgreSQL to run several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
