"""The edge's TCP sockets, as this host's kernel shows them (``/proc``) and lets them be stopped.

The edge runs in the host's network namespace, so when compose-atomic runs on the engine's
host it can see the edge's sockets and act on them. Elsewhere (a remote engine, no ``/proc``,
not allowed) every function here says it cannot, and the caller falls back to waiting.

Why stop a listener from outside: two edges share the ports during a handover
(``SO_REUSEPORT``), and the kernel hands each new connection to either one. Go's graceful
shutdown, which SIGTERM starts in Caddy, closes a connection it has accepted but whose
request it has not read yet (golang/go#75591): the client reads EOF for a request nobody
handled. ``shutdown(SHUT_RD)`` on the old edge's listening socket takes it out of the
group first, so new connections all go to the new edge while the old one finishes its own.
"""

from __future__ import annotations

import ctypes
import os
import socket

#: pidfd_getfd(2), Linux 5.6: the same number on every architecture.
SYS_PIDFD_GETFD = 438
LISTEN, ESTABLISHED = "0A", "01"


def _socket_fds(pid: int) -> dict[str, int]:
    """Socket inode -> one of process ``pid``'s file descriptors for it."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.setdefault(target[8:-1], int(fd))
    return found


def _tcp_sockets(pid: int, ports: set[int], state: str) -> list[str]:
    """Inodes of the TCP sockets in ``state`` on local ``ports``, as ``pid``'s namespace lists them."""
    inodes = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    inodes.append(fields[9])
    return inodes


def client_connections(pid: int, ports: set[int]) -> int | None:
    """Established TCP connections on ``ports`` held by process ``pid``; None when this
    machine cannot tell (no /proc, a remote engine)."""
    try:
        own = _socket_fds(pid)
        return sum(1 for inode in _tcp_sockets(pid, ports, ESTABLISHED) if inode in own)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def stop_listening(pid: int, ports: set[int]) -> bool:
    """Make process ``pid``'s TCP listeners on ``ports`` accept no more connections
    (``shutdown(SHUT_RD)`` on a copy of each, taken with ``pidfd_getfd``); the connections it
    holds go on. False when not one could be stopped (not Linux 5.6+, not allowed, none found)."""
    try:
        own = _socket_fds(pid)
        fds = [own[inode] for inode in _tcp_sockets(pid, ports, LISTEN) if inode in own]
        if not fds:
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return False
    stopped = 0
    try:
        for fd in fds:
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                continue
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                continue
            try:
                sock.shutdown(socket.SHUT_RD)
                stopped += 1
            except OSError:
                pass
            finally:
                sock.detach()
                os.close(copy)
    finally:
        os.close(pidfd)
    return stopped > 0
