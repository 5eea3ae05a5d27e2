"""The event loop and garbage collector settings of long-running processes, and what
they say of an address they cannot listen on."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from payorch.entrypoints.runtime import (
    CannotListen,
    loop_factory,
    refuse_served_unix_socket,
    serving_address,
    tune_gc,
    why_cannot_bind,
)
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


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_tune_gc_frees_start_up_garbage_without_walking_every_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full collection walks every object start-up made (~45 ms of CPU a start);
    # the garbage is young, and the young generations' collection frees it.
    generations: list[int] = []
    collect = gc.collect

    def counted(generation: int = 2) -> int:
        generations.append(generation)
        return collect(generation)

    garbage = _Cycle()
    left = weakref.ref(garbage)
    del garbage
    monkeypatch.setattr(gc, "collect", counted)
    try:
        tune_gc(0)
    finally:
        gc.unfreeze()
    assert left() is None
    assert generations and max(generations) < 2


def test_serve_runs_on_the_loop_the_settings_name() -> None:
    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        assert runner.run(kind()) == "uvloop"
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert runner.run(kind()) == "asyncio"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory whose socket paths stay well under the 107 bytes one can hold."""
    with tempfile.TemporaryDirectory(prefix="po-") as d:
        yield Path(d)


@pytest.mark.parametrize("form", ["unix:{}", "unix://{}"])
def test_a_unix_socket_in_a_directory_that_does_not_exist_says_which(short_dir, form):
    path = short_dir / "gone" / "grpc.sock"
    assert why_cannot_bind(form.format(path)) == f"the directory {path.parent} does not exist"


def test_a_unix_socket_path_held_by_a_file_or_a_directory_says_what_is_there(short_dir):
    (short_dir / "file").write_text("")
    (short_dir / "dir").mkdir()
    assert why_cannot_bind(f"unix:{short_dir}/file") == (
        f"{short_dir}/file is a file that is not a socket"
    )
    assert why_cannot_bind(f"unix:{short_dir}/dir") == f"{short_dir}/dir is a directory"


def test_a_unix_socket_path_too_long_to_bind_says_how_long(short_dir):
    path = f"{short_dir}/{'s' * 120}.sock"
    n = len(path.encode())
    assert why_cannot_bind(f"unix:{path}") == (
        f"the socket path is {n} bytes, more than the 107 one can hold"
    )


def test_a_relative_unix_socket_path_is_read_as_a_path_not_a_host_and_port(short_dir, monkeypatch):
    """`unix:123` is the file 123 in the working directory: not host "unix", port 123."""
    monkeypatch.chdir(short_dir)
    assert why_cannot_bind("unix:9/123") == "the directory 9 does not exist"
    # One it can bind: the reason is grpc's own, and the probe leaves no file behind.
    assert why_cannot_bind("unix:123").startswith("grpc does not say why")
    assert list(short_dir.iterdir()) == []


def as_nobody(work: Callable[[], str]) -> str:
    """What `work` returns in a child process running as the unprivileged user nobody
    (as a service runs): root is never refused a directory."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, work().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as said:
        out = said.read()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="becomes nobody: needs root")
def test_a_unix_socket_in_a_directory_not_writable_says_permission_denied(short_dir, monkeypatch):
    """`unix:123`, the working directory root's: grpc cannot create the socket there."""
    short_dir.chmod(0o755)
    monkeypatch.chdir(short_dir)
    said = as_nobody(lambda: why_cannot_bind("unix:123"))
    assert said == "permission denied: cannot create 123 in ."


def test_an_abstract_unix_socket_name_in_use_says_so():
    name = f"payorch-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
        holder.bind(b"\0" + name.encode())
        assert why_cannot_bind(f"unix-abstract:{name}") == (
            f"the abstract socket name {name!r} is in use"
        )


def test_a_unix_socket_another_process_serves_on_is_refused_a_stale_one_is_not(short_dir):
    path = short_dir / "grpc.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as serving:
        serving.bind(str(path))
        serving.listen()
        with pytest.raises(CannotListen) as refused:
            refuse_served_unix_socket(f"unix:{path}")
    assert str(refused.value) == (
        f"cannot listen for gRPC on unix:{path}: another process serves on {path}"
    )
    # Its server stopped and left the file: nobody answers, grpc replaces it.
    assert path.exists()
    refuse_served_unix_socket(f"unix:{path}")
    refuse_served_unix_socket("127.0.0.1:0")


@pytest.mark.parametrize(
    ("listen", "port", "said"),
    [
        ("127.0.0.1:0", 40123, "127.0.0.1:40123"),
        ("[::]:50051", 50051, "[::]:50051"),
        # grpc answers 1 for any unix socket: the socket is where it listens.
        ("unix:/run/payorch/grpc.sock", 1, "unix:/run/payorch/grpc.sock"),
        ("unix:///run/payorch/grpc.sock", 1, "unix:///run/payorch/grpc.sock"),
        ("unix:123", 1, "unix:123"),
        ("unix-abstract:payorch", 1, "unix-abstract:payorch"),
    ],
)
def test_the_serving_address_is_the_port_bound_or_the_unix_socket_as_given(listen, port, said):
    assert serving_address(listen, port) == said


@pytest.mark.parametrize(
    "command",
    [["scheduler", "--no-webhooks"], ["webhooks", "dispatch"]],
    ids=["scheduler", "dispatcher"],
)
def test_the_scheduler_and_the_webhook_dispatcher_start_on_the_same_loop_and_collector_settings(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both are long-running workers of the same kind: the loop PAYORCH_EVENT_LOOP names,
    and the collector tuned once start-up is done (PAYORCH_GC_THRESHOLD)."""
    from payorch.entrypoints import cli, runtime

    monkeypatch.setenv("PAYORCH_EVENT_LOOP", "asyncio")
    monkeypatch.setenv("PAYORCH_GC_THRESHOLD", "54321")
    asked: list[str] = []
    loops: list[asyncio.AbstractEventLoop] = []
    tuned: list[int] = []

    def recorded_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
        asked.append(name)

        def new_loop() -> asyncio.AbstractEventLoop:
            loops.append(asyncio.new_event_loop())
            return loops[-1]

        return new_loop

    monkeypatch.setattr(runtime, "loop_factory", recorded_loop_factory)
    monkeypatch.setattr(runtime, "tune_gc", tuned.append)
    url = f"sqlite:///{tmp_path / 'p.db'}"

    assert cli.main([*command, "--once", "--database-url", url]) == 0

    assert (asked, len(loops), tuned) == (["asyncio"], 1, [54321])
