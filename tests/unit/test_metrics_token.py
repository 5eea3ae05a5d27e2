"""/metrics behind an optional bearer token (PAYORCH_METRICS_TOKEN): what it answers
with and without it, what stays open, and the warning when it is served to anyone."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from payorch.entrypoints.http.app import build_app, warn_if_metrics_open
from payorch.settings import Settings

TOKEN = "3f9c1e7a5b2d4c6e8f0a1b2c3d4e5f60"


def registry() -> CollectorRegistry:
    r = CollectorRegistry()
    Counter("payorch_example", "An example.", registry=r).inc()
    return r


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer \u00e9t\u00e9",
    ],
    ids=repr,
)
async def test_metrics_with_a_token_set_refuses_a_scrape_without_it(authorization):
    app = build_app(registry(), metrics_token=TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/metrics", headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        body = await answer.text()
        assert "payorch_example" not in body and TOKEN not in body


async def test_metrics_with_a_token_set_answers_the_scrape_that_sends_it():
    app = build_app(registry(), metrics_token=TOKEN)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 200
        assert "payorch_example_total 1.0" in await answer.text()
        lower = await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
        assert lower.status == 200, "the scheme is case-insensitive"
        # Probes and Stripe's webhooks (signed on their own) take no token.
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200


async def test_metrics_without_a_token_set_is_open_as_before():
    async with TestClient(TestServer(build_app(registry()))) as client:
        assert (await client.get("/metrics")).status == 200


def test_the_token_is_read_from_its_file_and_never_shown(tmp_path):
    path = tmp_path / "metrics_token"
    path.write_text(TOKEN + "\n")
    settings = Settings.from_env({"PAYORCH_METRICS_TOKEN_FILE": str(path)})
    assert settings.metrics_token == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("10.0.0.5", "", True),
        ("payorch.internal", "", True),
        ("0.0.0.0", TOKEN, False),
        ("127.0.0.1", "", False),
        ("::1", "", False),
        ("[::1]", "", False),
        ("localhost", "", False),
    ],
)
def test_serving_metrics_beyond_loopback_without_a_token_is_warned_of(host, token, warned, caplog):
    caplog.set_level(logging.WARNING, logger="payorch.http")
    warn_if_metrics_open(host, token)
    assert bool(caplog.records) is warned
