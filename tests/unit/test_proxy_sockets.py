"""proxy/sockets.py on this machine's kernel: two processes listen on one port (SO_REUSEPORT),
as the old and the new edge do during a handover; stopping the old one's listener sends every
new connection to the other, and the connection the old one holds goes on."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import time

from compose_atomic.proxy.sockets import client_connections, stop_listening

# Accepts on a SO_REUSEPORT listener and answers each connection with "old" (after one byte in).
OLD = textwrap.dedent("""
    import socket, sys, threading
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    def serve(conn):
        conn.recv(1)
        conn.sendall(b"old")
        conn.close()
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            break  # shut down: no more connections come here
        threading.Thread(target=serve, args=(conn,)).start()
    sys.stdin.read()
""")


def test_a_stopped_listener_takes_no_new_connection_and_keeps_the_one_it_holds():
    old = subprocess.Popen([sys.executable, "-c", OLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(old.stdout.readline())
        new = socket.socket()
        new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        new.bind(("127.0.0.1", port))
        new.listen(64)
        new.settimeout(5)
        # The kernel gives a connection to either listener; keep one that the old process holds.
        # (One in its accept queue is not in its fd table yet: wait for it, do not take it as none.)
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
        deadline = time.monotonic() + 10
        while client_connections(old.pid, {port}) != 1 and time.monotonic() < deadline:
            if select.select([new], [], [], 0.1)[0]:  # it went to the new listener: again
                new.accept()[0].close()
                held.close()
                held = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert client_connections(old.pid, {port}) == 1

        assert stop_listening(old.pid, {port})

        for _ in range(20):  # before, about half of these went to the old process
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            accepted, _ = new.accept()
            accepted.close()
            conn.close()
        held.sendall(b"x")
        assert held.recv(3) == b"old"
        held.close()
        new.close()
    finally:
        old.kill()
        old.wait()


def test_a_process_without_listeners_or_gone_is_reported_not_stopped():
    assert stop_listening(os.getpid(), {1}) is False
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert stop_listening(gone.pid, {80}) is False
    assert client_connections(gone.pid, {80}) is None
