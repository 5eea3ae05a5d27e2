"""Start the real `payorch serve` process on free ports and talk to it over gRPC."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc

_READY = re.compile(r"gRPC on (\S+) and HTTP on (\S+)")


def payorch(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Run the real CLI in a subprocess; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "payorch.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"payorch {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def create_key(database_url: str, *, merchant: str | None = None, scope: str = "merchant") -> str:
    args = ["keys", "--database-url", database_url, "create"]
    args += ["--merchant", merchant] if merchant else ["--scope", scope]
    return str(json.loads(payorch(*args).splitlines()[0])["api_key"])


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    address: str
    http_address: str
    database_url: str
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.keys[who]}")]

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies where it is, with no shutdown path at all."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def http_status(self, path: str) -> int:
        """The status of a GET of `path` on the HTTP port."""
        try:
            with urllib.request.urlopen(f"http://{self.http_address}{path}", timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code


def start_server(
    workdir: Path,
    database_url: str,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
    user: int | None = None,
    python: tuple[str, dict[str, str]] | None = None,
) -> RunningServer:
    """`user`: run as this uid (and gid), as a container image's USER would; `python`:
    the interpreter to run it with and what it needs in its environment."""
    log_path = workdir / f"server-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "PAYORCH_DATABASE_URL": database_url,
        "PAYORCH_LISTEN": "127.0.0.1:0",
        "PAYORCH_HTTP_PORT": "0",
        "PAYORCH_AUTH_CACHE_S": "0",
        **(env or {}),
        **(python[1] if python else {}),
    }
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [python[0] if python else sys.executable, "-m", "payorch.entrypoints.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env=full_env,
        cwd=workdir,
        user=user,
        group=user,
    )
    assert process.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{log_path.read_text()}")
        if sel.select(timeout=0.2):
            line = process.stdout.readline()
            match = _READY.search(line)
            if match:
                return RunningServer(
                    process, match.group(1), match.group(2), database_url, log_path
                )
    process.kill()
    raise AssertionError(f"server not ready in {ready_timeout} s:\n{log_path.read_text()}")
