"""A tiny TCP proxy for tests: forwards to a server and can simulate an outage of it.

`cut()` closes every proxied connection and makes new ones fail (accepted, then closed at once:
the client sees the server hang up); `restore()` forwards again. The server itself is never
touched, so a shared PostgreSQL keeps serving everyone else.
"""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Listens on 127.0.0.1:<port> and pipes each connection to (host, port) in two threads."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Start the outage: drop every open connection and refuse new ones."""
        self.down.set()
        self._drop_all()

    def restore(self) -> None:
        """End the outage."""
        self.down.clear()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _hang_up(sock)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        _hang_up(source)
        _hang_up(sink)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
