"""States for a Patroni cluster, built on the ``patroni`` execution module.

.. code-block:: yaml

    patroni-timing:
      patroni.dynamic_config:
        - config:
            loop_wait: 5
            postgresql: {parameters: {work_mem: 8MB}}

    pg1-leads:
      patroni.leader:
        - name: pg1

    cluster-healthy:
      patroni.healthy:
        - replicas: 2
        - max_lag: 1048576
        - timeout: 300
"""

from __future__ import annotations

import time
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "patroni"
CONN_ARGS = ("url", "username", "password", "verify")
# Members PATCH the same dynamic configuration at once (one highstate): a conflict is read again.
PATCH_ATTEMPTS = 5


def __virtual__():
    if "patroni.cluster" in __salt__:
        return __virtualname__
    return (False, "the patroni execution module is not available")


def _ret(name: str) -> dict:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _conn(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in CONN_ARGS if kwargs.get(k) is not None}


_SAME = object()


def _equal(current: Any, wanted: Any) -> bool:
    # Patroni keeps what it was given: "on" and 8 may come back as "on" and 8 or "8".
    if any(isinstance(v, (bool, list, dict, type(None))) for v in (current, wanted)):
        return current == wanted
    return str(current) == str(wanted)


def _diff(current: Any, wanted: Any) -> Any:
    if isinstance(wanted, dict) and isinstance(current, dict):
        out = {}
        for key, value in wanted.items():
            if key not in current:
                if value is not None:  # deleting an absent key changes nothing
                    out[key] = value
                continue
            sub = _diff(current[key], value)
            if sub is not _SAME:
                out[key] = sub
        return out or _SAME
    return _SAME if _equal(current, wanted) else wanted


def config_diff(current: Any, wanted: Any) -> dict | None:
    """The part of WANTED that differs from CURRENT (recursing into dicts), or None when equal.

    A None value in WANTED deletes the key (Patroni's PATCH semantics).
    """
    d = _diff(current, wanted)
    return None if d is _SAME else d


def dynamic_config(name: str, config: dict, **kwargs: Any) -> dict:
    """Ensure the dynamic configuration contains CONFIG; PATCH only the keys that differ.

    With test=True the difference is reported and nothing is changed.
    """
    ret = _ret(name)
    if not isinstance(config, dict):
        ret.update(result=False, comment="config must be a mapping")
        return ret
    conn = _conn(kwargs)
    for attempt in range(PATCH_ATTEMPTS):
        try:
            current = __salt__["patroni.config_get"](**conn)
        except CommandExecutionError as exc:
            ret.update(result=False, comment=str(exc))
            return ret
        patch = config_diff(current, config)
        if not patch:
            # (every member applies the same highstate: another one may have just patched it)
            ret["comment"] = "dynamic configuration already as wanted"
            return ret
        ret["changes"] = {"patch": patch}
        if __opts__.get("test"):
            ret.update(result=None, comment="dynamic configuration would be patched")
            return ret
        try:
            __salt__["patroni.config_patch"](patch, **conn)
        except CommandExecutionError as exc:
            # HTTP 409: another member patched it between our read and our write: read again.
            if "HTTP 409" in str(exc) and attempt + 1 < PATCH_ATTEMPTS:
                ret["changes"] = {}
                time.sleep(0.5)
                continue
            ret.update(result=False, changes={}, comment=str(exc))
            return ret
        ret["comment"] = "dynamic configuration patched"
        return ret
    return ret


def leader(name: str, timeout: float = 60, **kwargs: Any) -> dict:
    """Ensure member NAME leads the cluster, by a planned switchover when another member does."""
    ret = _ret(name)
    conn = _conn(kwargs)
    try:
        current = __salt__["patroni.leader"](**conn)
        if current == name:
            ret["comment"] = f"{name} already leads the cluster"
            return ret
        ret["changes"] = {"leader": {"old": current, "new": name}}
        if __opts__.get("test"):
            ret.update(result=None, comment=f"switchover from {current} to {name} would be started")
            return ret
        __salt__["patroni.switchover"](candidate=name, **conn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = __salt__["patroni.cluster"](**conn)
            if c["leader"] == name and any(m["name"] == name and m["state"] == "running" for m in c["members"]):
                ret["comment"] = f"switchover from {current} to {name} done"
                return ret
            time.sleep(0.5)
        ret.update(result=False, comment=f"switchover to {name} started but {name} does not lead after {timeout} s")
    except CommandExecutionError as exc:
        ret.update(result=False, changes={}, comment=str(exc))
    return ret


def healthy(
    name: str, replicas: int = 1, max_lag: int = 1048576, timeout: float = 120, sync_standbys: int = 0, **kwargs: Any
) -> dict:
    """Wait until the cluster has a leader and REPLICAS streaming replicas within MAX_LAG bytes,
    SYNC_STANDBYS of them synchronous (named in Patroni's /sync key).

    Changes nothing; fails with the last seen cluster state after TIMEOUT seconds.
    """
    ret = _ret(name)
    if __opts__.get("test"):
        ret["comment"] = "health is checked on a real run only"
        return ret
    try:
        c = __salt__["patroni.wait_healthy"](
            replicas=replicas, max_lag=max_lag, timeout=timeout, sync_standbys=sync_standbys, **_conn(kwargs)
        )
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    sync = f", {sync_standbys}+ synchronous" if sync_standbys else ""
    ret["comment"] = f"leader {c['leader']} with {replicas}+ streaming replicas{sync}"
    return ret
