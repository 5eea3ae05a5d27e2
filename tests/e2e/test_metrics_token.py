"""The real server with PAYORCH_METRICS_TOKEN_FILE: /metrics answers only the scrape
that sends the token, the probes stay open, and the token is never logged."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.server import start_server

pytestmark = pytest.mark.e2e

TOKEN = "9d2f0b6c4a8e1f3d5c7b9a0e2d4f6a8c"


def scrape(address: str, authorization: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{address}/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_answer_only_the_scrape_that_sends_the_token(tmp_path: Path):
    token_file = tmp_path / "metrics_token"
    token_file.write_text(TOKEN + "\n")
    server = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'payorch.db'}",
        env={"PAYORCH_METRICS_TOKEN_FILE": str(token_file)},
    )
    try:
        assert scrape(server.http_address, None)[0] == 401
        assert scrape(server.http_address, f"Bearer {TOKEN[:-1]}")[0] == 401
        status, page = scrape(server.http_address, f"Bearer {TOKEN}")
        assert status == 200 and "payorch_database_up 1.0" in page
        assert server.http_status("/readyz") == 200
        assert server.http_status("/healthz") == 200
    finally:
        assert server.stop() == 0
    assert TOKEN not in server.log()
    assert "answers without a token" not in server.log()
