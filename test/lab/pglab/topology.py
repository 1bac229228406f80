"""Lab topology: which hosts exist, their addresses, and which one is the Salt master."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TOPOLOGY = Path(__file__).resolve().parent.parent / "topology.toml"
# Where a host's setup script lives (a topology names it relative to test/lab).
SETUP_DIR = DEFAULT_TOPOLOGY.parent
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/24")
# Host names become interface names (vb-NAME, at most 15 bytes) and hostnames.
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,10}$")
UNIT = re.compile(r"^[A-Za-z0-9@_.-]+\.(service|timer|socket)$")


class TopologyError(ValueError):
    """The topology file is unusable; the message names the key and the problem."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    master: bool = False
    # Units of the machine's packages this host runs (enabled on its own disk), e.g. a standalone
    # PostgreSQL that no formula manages; and a script (in test/lab, SETUP_DIR) run once inside the
    # host after its first boot.
    services: tuple[str, ...] = ()
    setup: str | None = None
    # A spare host is not booted with the lab: 'lab boot NAME' brings it in (its minion key
    # accepted then), 'lab retire NAME' takes it out again (a new server for a cluster to grow onto).
    spare: bool = False

    @property
    def veth(self) -> str:
        """Name of the host's veth on the machine's side of the bridge."""
        return f"vb-{self.name}"


@dataclass(frozen=True)
class Topology:
    bridge: str
    gateway: str
    hosts: tuple[Host, ...]
    path: Path

    @property
    def master(self) -> Host:
        return next(h for h in self.hosts if h.master)

    @property
    def booted(self) -> tuple[Host, ...]:
        """The hosts 'lab up' boots: every one but the spares."""
        return tuple(h for h in self.hosts if not h.spare)

    def host(self, name: str) -> Host:
        """Return the host called NAME; raise TopologyError when there is none."""
        for h in self.hosts:
            if h.name == name:
                return h
        known = ", ".join(h.name for h in self.hosts)
        raise TopologyError(f"unknown host {name!r} (lab hosts: {known})")


def _lab_address(value: object, key: str) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise TopologyError(f"{key}: {value!r} is not an IP address") from None
    if addr not in LAB_NETWORK or addr in (LAB_NETWORK.network_address, LAB_NETWORK.broadcast_address):
        raise TopologyError(f"{key}: {value} is not a host address in the lab network {LAB_NETWORK}")
    return str(addr)


def load(path: Path | str | None = None) -> Topology:
    """Read and validate a topology file.

    Returns the Topology. Raises TopologyError naming the offending key when the
    file is missing, malformed, or has duplicate names or addresses.
    """
    path = Path(path) if path else DEFAULT_TOPOLOGY
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TopologyError(f"cannot read topology {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"topology {path} is not valid TOML: {exc}") from None
    lab = data.get("lab", {})
    bridge = str(lab.get("bridge", "pgclab0"))
    if not re.fullmatch(r"[a-z][a-z0-9]{1,14}", bridge):
        raise TopologyError(f"lab.bridge: {bridge!r} is not a valid interface name")
    gateway = _lab_address(lab.get("gateway", "198.18.0.1"), "lab.gateway")
    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise TopologyError(f"{path}: 'hosts' must be a non-empty list of [[hosts]] tables")
    hosts: list[Host] = []
    seen_names: set[str] = set()
    seen_addresses: set[str] = {gateway}
    for i, raw in enumerate(raw_hosts):
        name = raw.get("name")
        if not isinstance(name, str) or not HOST_NAME.match(name):
            raise TopologyError(f"hosts[{i}].name: {name!r} must match {HOST_NAME.pattern}")
        if name in seen_names:
            raise TopologyError(f"hosts[{i}].name: duplicate host name {name!r}")
        address = _lab_address(raw.get("address"), f"hosts[{i}].address")
        if address in seen_addresses:
            raise TopologyError(f"hosts[{i}].address: duplicate address {address} (host {name!r})")
        seen_names.add(name)
        seen_addresses.add(address)
        services = raw.get("services", [])
        if not isinstance(services, list) or not all(isinstance(u, str) and UNIT.match(u) for u in services):
            raise TopologyError(f"hosts[{i}].services: {services!r} must be a list of systemd unit names")
        setup = raw.get("setup")
        if setup is not None and not (SETUP_DIR / str(setup)).is_file():
            raise TopologyError(f"hosts[{i}].setup: {setup!r} is not a file in {SETUP_DIR}")
        spare = raw.get("spare", False)
        if not isinstance(spare, bool):
            raise TopologyError(f"hosts[{i}].spare: {spare!r} must be true or false")
        if spare and raw.get("master", False):
            raise TopologyError(f"hosts[{i}].spare: the master is never spare")
        hosts.append(Host(name=name, address=address, master=bool(raw.get("master", False)),
                          services=tuple(services), setup=setup, spare=spare))  # fmt: skip
    masters = [h.name for h in hosts if h.master]
    if len(masters) != 1:
        raise TopologyError(f"exactly one host must have master = true (found {masters or 'none'})")
    return Topology(bridge=bridge, gateway=gateway, hosts=tuple(hosts), path=path.resolve())
