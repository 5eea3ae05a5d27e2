"""The event loop and garbage collector settings of long-running processes."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from payorch.entrypoints.runtime import loop_factory, tune_gc
from payorch.settings import InvalidSettings


def test_uvloop_is_the_default_loop_and_asyncio_the_standard_one() -> None:
    factory = loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert loop_factory("asyncio") is None  # asyncio.Runner's own


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(InvalidSettings, match="PAYORCH_EVENT_LOOP must be uvloop or asyncio"):
        loop_factory("trio")


def test_tune_gc_freezes_start_up_objects_and_sets_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
        tune_gc(0)  # 0 keeps the threshold as it is
        assert gc.get_threshold()[0] == 12_345
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serve_runs_on_the_loop_the_settings_name() -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        assert runner.run(kind()) == "uvloop"
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert runner.run(kind()) == "asyncio"
