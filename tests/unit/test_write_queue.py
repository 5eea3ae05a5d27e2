"""The queue that forms group-commit batches (payment_writes._Queue)."""

from __future__ import annotations

from payorch.adapters.persistence.payment_writes import Statement, Write, _Queue
from payorch.app.ports import DuplicateRequest

GUARD = Statement("INSERT ...")


def write(payment_id: str) -> Write:
    return Write(payment_id, (GUARD, []), DuplicateRequest(payment_id), [])


async def test_a_batch_takes_writes_in_order_up_to_its_size() -> None:
    queue = _Queue(max_batch=3)
    for p in ("a", "b", "c", "d"):
        queue.put(write(p))
    assert [w.payment_id for w, _ in queue.take()] == ["a", "b", "c"]
    assert [w.payment_id for w, _ in queue.take()] == ["d"]
    assert queue.take() == []


async def test_a_batch_never_holds_two_writes_of_one_payment() -> None:
    queue = _Queue(max_batch=10)
    for p in ("a", "b", "a", "c", "a"):
        queue.put(write(p))
    assert [w.payment_id for w, _ in queue.take()] == ["a", "b", "c"]
    assert [w.payment_id for w, _ in queue.take()] == ["a"]
    assert [w.payment_id for w, _ in queue.take()] == ["a"]


async def test_each_write_keeps_its_own_future() -> None:
    queue = _Queue(max_batch=10)
    first, second = queue.put(write("a")), queue.put(write("b"))
    taken = queue.take()
    assert [done for _, done in taken] == [first, second]
    assert not first.done() and not second.done()
