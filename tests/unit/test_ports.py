"""Compose's ports syntax, read in one place (compose_atomic.ports) for deploy, proxy, swarm and init."""

from __future__ import annotations

import pytest

from compose_atomic.ports import parse_port


@pytest.mark.parametrize("entry, target, published, host_ip, protocol, listen", [
    ("8000", 8000, None, "", "tcp", ":8000"),
    (3000, 3000, None, "", "tcp", ":3000"),
    ("8000:80", 80, "8000", "", "tcp", ":8000"),
    ("127.0.0.1:5432:5432/tcp", 5432, "5432", "127.0.0.1", "tcp", "127.0.0.1:5432"),
    ("[::1]:8080:80", 80, "8080", "::1", "tcp", "[::1]:8080"),
    ("8443:8443/udp", 8443, "8443", "", "udp", ":8443"),
    ("8000-8001:8000-8001", 8000, "8000-8001", "", "tcp", ":8000"),
    ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, 80, "8080", "127.0.0.1", "tcp", "127.0.0.1:8080"),
    ({"target": 80}, 80, None, "", "tcp", ":80"),
])
def test_short_and_long_syntax(entry, target, published, host_ip, protocol, listen):
    port = parse_port(entry)
    assert (port.target, port.published, port.host_ip, port.protocol) == (target, published, host_ip, protocol)
    assert port.listen_address == listen


def test_an_unreadable_target_is_none_not_a_crash():
    assert parse_port("${WEB_PORT}").target is None
