from __future__ import annotations

import pytest

from tests.e2e.server import RunningServer, create_key, start_server


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(request: pytest.FixtureRequest, tmp_path_factory) -> RunningServer:
    """A real server process with keys for merchants m_1, m_2 and for ops."""
    workdir = tmp_path_factory.mktemp("e2e")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'payorch.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    running = start_server(workdir, url)
    running.keys = {
        "m_1": create_key(url, merchant="m_1"),
        "m_2": create_key(url, merchant="m_2"),
        "ops": create_key(url, scope="ops"),
    }
    yield running
    running.stop()
