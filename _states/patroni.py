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

import os
import time
from typing import Any

import salt.utils.files
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


def _hba_in_effect(rules: list, port: int) -> str | None:
    """None when PostgreSQL's hba file holds exactly RULES (Patroni writes them under a comment
    header), without a line PostgreSQL refuses, and PostgreSQL loaded its configuration since the
    file was written; else what is not so yet."""
    (path, loaded, bad) = __salt__["pgsql.query"](
        "SELECT current_setting('hba_file'), extract(epoch FROM pg_conf_load_time()), (SELECT format('line %s: %s', "
        "line_number, error) FROM pg_hba_file_rules WHERE error IS NOT NULL LIMIT 1)", port=port
    )[0]  # fmt: skip
    try:
        with salt.utils.files.fopen(path) as f:
            lines = [" ".join(line.split()) for line in f if line.strip() and not line.lstrip().startswith("#")]
        written = os.path.getmtime(path)
    except OSError as exc:
        return f"{path}: {exc}"
    if lines != [" ".join(str(r).split()) for r in rules]:
        return f"{path} does not hold the rules config.yml gives"
    if bad:
        return f"PostgreSQL refuses {path} {bad} (it keeps the former rules)"
    if float(loaded) < written:
        return f"PostgreSQL has not loaded {path} since it was written"
    return None


def reloaded(name: str, pg_hba: list | None = None, port: int = 5432, timeout: float = 60, **kwargs: Any) -> dict:
    """Make this member re-read config.yml (POST /reload; retried while a Patroni started a moment
    ago does not answer yet) and, with PG_HBA (the rules config.yml gives Patroni), wait until they
    are in effect: Patroni applies a reload in its next cycle, after the answer, and a highstate
    that reported success while PostgreSQL still had the former rules would not keep its promise
    (a database just declared refused). NAME is only the state's name.

    .. code-block:: yaml

        patroni-config-reloaded:
          patroni.reloaded:
            - pg_hba: ["local all postgres peer"]
            - onchanges:
              - file: /etc/patroni/config.yml
    """
    ret = _ret(name)
    if __opts__.get("test"):
        ret.update(result=None, comment="Patroni would re-read its configuration")
        return ret
    conn = _conn(kwargs)
    deadline = time.monotonic() + timeout
    while True:
        try:
            said = __salt__["patroni.reload"](**conn)
            break
        except CommandExecutionError as exc:
            if time.monotonic() >= deadline:
                ret.update(result=False, comment=f"Patroni did not take the reload within {timeout:.0f} s: {exc}")
                return ret
            time.sleep(2)
    ret["changes"] = {"reloaded": said}
    ret["comment"] = f"Patroni re-read its configuration ({said})"
    deadline = time.monotonic() + timeout  # the rules' own wait
    while pg_hba:
        try:
            why = _hba_in_effect(pg_hba, port)
        except CommandExecutionError as exc:
            state = _postgres_state(conn)
            if state != "running":  # down on purpose, rebuilt, starting: its rules apply when it starts
                ret["comment"] += f"; PostgreSQL here is {state}: the pg_hba rules apply when it runs"
                return ret
            why = str(exc)
        if why is None:
            ret["comment"] += ", its pg_hba rules in effect"
            return ret
        if time.monotonic() >= deadline:
            ret.update(result=False, comment=f"{ret['comment']} but its pg_hba rules are not in effect after "
                       f"{timeout:.0f} s: {why}")  # fmt: skip
            return ret
        time.sleep(0.2)
    return ret


def _postgres_state(conn: dict) -> str:
    """PostgreSQL's state as this member's Patroni sees it (running, starting, stopped...)."""
    try:
        return str(__salt__["patroni.node"](**conn).get("state") or "unknown")
    except CommandExecutionError as exc:
        return f"unknown ({exc})"


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
