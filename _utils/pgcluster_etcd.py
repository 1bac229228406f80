"""etcdctl's command line, for the execution module (membership) and the states (health, the
rolling restart's lock): one place that says how pgcluster reaches etcd."""

from __future__ import annotations

__virtualname__ = "pgcluster_etcd"


def __virtual__():
    return __virtualname__


def etcdctl_command(endpoints: list[str], tls: dict | None, command_timeout: float = 3) -> list[str]:
    """etcdctl (API v3: set ``ETCDCTL_API=3`` in its environment) to ENDPOINTS (host:port), https
    with TLS's ``ca``, ``cert`` and ``key`` files (plain http without TLS), giving up on a
    connection after 2 s and on a command after COMMAND_TIMEOUT seconds."""
    scheme = "https" if tls else "http"
    cmd = ["etcdctl", "--endpoints", ",".join(f"{scheme}://{e}" for e in endpoints), "--dial-timeout=2s",
           f"--command-timeout={command_timeout:g}s"]  # fmt: skip
    return cmd + ([f"--cacert={tls['ca']}", f"--cert={tls['cert']}", f"--key={tls['key']}"] if tls else [])
