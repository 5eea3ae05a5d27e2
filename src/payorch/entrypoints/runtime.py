"""How a long-running process runs: its event loop, its garbage collector, and the
ports it cannot bind."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import stat
from collections.abc import Callable

from payorch.settings import InvalidSettings


class CannotListen(OSError):
    """A port the server cannot bind: one line for the operator, not a traceback."""


# The bind failures an operator meets most, said plainly; any other is its strerror.
_BIND_FAILURES = {
    errno.EADDRINUSE: "the port is in use",
    errno.EADDRNOTAVAIL: "the address is not one of this host's",
}
_NO_REASON = "grpc does not say why (GRPC_VERBOSITY=debug logs it)"
# The longest unix socket path grpc binds (sun_path holds 108 bytes with its NUL).
MAX_UNIX_PATH = 107


def unix_socket(address: str) -> tuple[str, bool] | None:
    """The socket a unix address names, as grpc reads it, and whether it is an abstract
    name: `unix:PATH` (relative or absolute), `unix:///ABSOLUTE`, `unix-abstract:NAME`.
    None for any other address."""
    scheme, colon, rest = address.partition(":")
    if not colon:
        return None
    if scheme == "unix-abstract":
        return rest, True
    if scheme != "unix":
        return None
    return (rest[2:] if rest.startswith("//") else rest), False


def serving_address(listen: str, port: int) -> str:
    """Where the server listens, as a client would dial it: HOST:PORT with the port grpc
    bound (0 picked one), or the unix socket as given (grpc answers 1 for any)."""
    if unix_socket(listen) is not None:
        return listen
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def refuse_served_unix_socket(address: str) -> None:
    """Raise CannotListen when a process serves on the unix socket `address` names.
    grpc removes a socket file in its way before it binds: it would take the path over
    from a server still listening there (a second `payorch serve` on the same path),
    which would keep running, unreachable. A socket nobody listens on (left by a server
    that stopped) is replaced as before."""
    found = unix_socket(address)
    if found is None or found[1]:
        return  # an abstract name in use fails grpc's bind: why_cannot_bind says so
    path = found[0]
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (TimeoutError, BlockingIOError):
            pass  # its backlog is full: served, and busy
        except OSError:
            return  # nobody listens (refused), or it cannot tell: grpc's to bind
    raise CannotListen(f"cannot listen for gRPC on {address}: another process serves on {path}")


def _why_cannot_bind_unix(path: str, abstract: bool) -> str:
    """Why grpc could not bind the unix socket `path` (or abstract name), found by
    binding it here; a socket file this makes is removed again."""
    where = path.encode()
    if not path:
        return "the address names no socket path"
    if len(where) > MAX_UNIX_PATH:
        return f"the socket path is {len(where)} bytes, more than the {MAX_UNIX_PATH} one can hold"
    parent = os.path.dirname(path) or "."
    if not abstract:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a file that is not a socket"
            return f"{path} is {kind}"
        if mode is not None:
            # grpc removes a socket file before it binds: it could not.
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"permission denied: {path} cannot be replaced in {parent}"
            return _NO_REASON
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(b"\0" + where if abstract else path)
        except OSError as exc:
            if abstract and exc.errno == errno.EADDRINUSE:
                return f"the abstract socket name {path!r} is in use"
            if exc.errno == errno.ENOENT:
                return f"the directory {parent} does not exist"
            if exc.errno == errno.ENOTDIR:
                return f"a part of {parent} is not a directory"
            if exc.errno == errno.EACCES:
                return f"permission denied: cannot create {path} in {parent}"
            return exc.strerror or str(exc)
        if not abstract:
            os.unlink(path)
    return _NO_REASON


def why_cannot_bind(address: str) -> str:
    """Why `address` ("host:port", "[v6]:port", a unix socket) cannot be bound, found by
    binding it here as grpc would (grpc says only "Failed to bind", whatever the cause)."""
    unix = unix_socket(address)
    if unix is not None:
        return _why_cannot_bind_unix(*unix)
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        return _NO_REASON  # no address at all
    try:
        found = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError):
        return f"the host {host!r} does not resolve to an address"
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            # As grpc binds: a port left in TIME_WAIT is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                return _BIND_FAILURES.get(exc.errno or 0, exc.strerror or str(exc))
    return _NO_REASON


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop makes socket I/O and callbacks cheaper for grpc.aio and asyncpg."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise InvalidSettings(f"PAYORCH_EVENT_LOOP must be uvloop or asyncio, not {name[:40]!r}")
    try:
        import uvloop
    except ImportError:  # a platform without uvloop: the standard loop serves as well
        return None
    return uvloop.new_event_loop


def tune_gc(threshold: int) -> None:
    """What start-up made (tables, compiled statements, descriptors, config) lives as long
    as the process: frozen, the collector stops walking it again and again. A payment
    makes a few thousand short-lived objects; a larger first generation collects them
    less often. Both cut the long pauses that showed as a p99 of 180-450 ms at a
    moderate load (docs/performance.md).

    The garbage start-up leaves (~1,200 objects of bootstrap's) is young: collecting
    the two young generations frees it all in under a millisecond, where a full
    collection walked every object made so far for nothing (~45 ms of CPU a start)."""
    gc.collect(1)
    gc.freeze()
    if threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)
