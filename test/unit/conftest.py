"""Unit tests touch no network but loopback: a test that would reach a lab host fails at once."""

from __future__ import annotations

import ipaddress
import socket

import pytest


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a unit test tried to reach {address[0]}: use pgctest.patroni_replay")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
