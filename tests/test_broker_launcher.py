"""The test broker launcher's ports: drawn below the kernel's ephemeral range, so that an outgoing
connection's local port cannot take one between the probe and mosquitto's bind (seen in a full run:
mosquitto exited with "Address already in use")."""

from __future__ import annotations

import socket
from pathlib import Path

from edged_bench.broker import LISTEN_PORTS, free_port


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_free_ports_are_outside_the_ephemeral_range_and_bindable() -> None:
    ephemeral = ephemeral_range()
    for _ in range(50):
        port = free_port()
        assert port in LISTEN_PORTS and port not in ephemeral
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
