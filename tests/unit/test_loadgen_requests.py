"""bench/loadgen.py's request bodies: fresh request ids, or a fixed set replayed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from payments.orchestrator.v1 import orchestrator_pb2 as orch

_spec = importlib.util.spec_from_file_location(
    "loadgen", Path(__file__).resolve().parents[2] / "bench" / "loadgen.py"
)
assert _spec is not None and _spec.loader is not None
loadgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loadgen)
Requests = loadgen.Requests


def request_ids(requests: Requests, n: int) -> list[str]:
    return [orch.CreatePaymentRequest.FromString(requests.next()).request_id for _ in range(n)]


def test_every_request_has_a_fresh_id_by_default() -> None:
    ids = request_ids(Requests("single", "run", 1), 250)
    assert len(set(ids)) == 250
    assert all(i.startswith("bench.run.w1.") for i in ids)


def test_replay_ids_cycle_so_every_later_request_is_a_replay() -> None:
    ids = request_ids(Requests("split", "run", 0, replay_ids=3), 7)
    assert ids[:3] == ids[3:6] == [ids[6], ids[4], ids[5]]
    assert len(set(ids)) == 3
    body = orch.CreatePaymentRequest.FromString(Requests("split", "run", 0, 3).next())
    assert [m.method for m in body.methods] == ["apple_pay", "card"]
