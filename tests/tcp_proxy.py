"""A TCP forwarder on loopback that a test can cut, blackhole and restore.

`cut()`: the database the server talks to through it goes away (connections reset,
new ones refused) and comes back on `restore()` on the same port, as after a failover
or a restart. `blackhole()`: nothing is forwarded either way, nothing is refused or
reset, as when a host or the network to it drops packets: connects are taken and
then hear nothing, as are statements and closes; `restore()` forwards again what was
held meanwhile, as TCP retransmits once packets pass again."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        # Cleared while blackholed: each pipe holds what it read until it is set again.
        self._flowing = threading.Event()
        self._flowing.set()
        self.port = 0

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Every open connection reset, and nothing listening: a connect is refused.
        Ends a blackhole: what it held is dropped with its connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for s in open_sockets:
            with contextlib.suppress(OSError):
                # RST, not FIN: the peer sees the connection reset, as when a host goes.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # close() alone does not end a connection another thread is reading:
                # Linux releases the socket only when that recv returns, so the
                # database would keep the session (and any open transaction) alive.
                # shutdown wakes the reader; the pipe's finally lets it go.
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        # Pipes holding data let go of it: their sockets are closed, the send fails.
        self._flowing.set()

    def blackhole(self) -> None:
        """Nothing forwarded either way from now on (data, a close) and nothing refused:
        connections stay open and new ones are taken, all silent until restore()."""
        self._flowing.clear()

    def restore(self) -> None:
        """Listening again on the same port after a cut; forwarding again after a
        blackhole, what it held first."""
        if self._listener is None:
            self.start()
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
            self._flowing.wait()  # a close is held too
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
