"""Operate a Patroni cluster from Salt through Patroni's REST API.

By default every function talks to the Patroni of this host, with the address,
credentials and TLS settings read from its ``config.yml`` (so nothing secret travels
through Salt's job data); ``url``, ``username``, ``password`` and ``verify`` override
that, for calls aimed at another node. GETs are unauthenticated, writes use basic auth.
Both Patroni 3.x (``master``) and 4.x (``primary``) are understood.

CLI examples::

    salt pg1 patroni.cluster
    salt pg1 patroni.switchover candidate=pg2
    salt pg1 patroni.restart pending_only=True
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
import salt.utils.files
import yaml
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)
__virtualname__ = "patroni"

CONFIG = "/etc/patroni/config.yml"
TIMEOUT = 10
LEADER_ROLES = ("leader", "standby_leader")
SYNC_ROLES = ("sync_standby", "quorum_standby")  # replicas named in /sync


def __virtual__():
    if "pgcluster_routing.find_leader" not in __utils__:
        return (False, "patroni: the pgcluster_routing util is missing (run saltutil.sync_utils)")
    return __virtualname__


class PatroniError(CommandExecutionError):
    """A Patroni REST call failed; the message says which call, where, and why."""


# ---- connection --------------------------------------------------------------------------------
def _config(config: str = CONFIG) -> dict:
    """This host's Patroni config.yml as a dict. Raises PatroniError when it cannot be read."""
    try:
        with salt.utils.files.fopen(config) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise PatroniError(f"cannot read Patroni configuration {config}: {why}") from None


def _local_settings(config: str = CONFIG) -> dict:
    """URL, credentials and TLS verification for this host's Patroni, from its config.yml."""
    api = _config(config).get("restapi") or {}
    scheme = "https" if api.get("certfile") else "http"
    address = api.get("connect_address") or api.get("listen")
    if not address:
        raise PatroniError(f"{config}: restapi.connect_address is not set")
    auth = api.get("authentication") or {}
    return {
        "url": f"{scheme}://{address}",
        "username": auth.get("username"),
        "password": auth.get("password"),
        "verify": api.get("cafile") or True,
    }


def _settings(url: str | None, username: str | None, password: str | None, verify: Any) -> dict:
    if url:
        s = {"url": url, "username": username, "password": password, "verify": True if verify is None else verify}
    else:
        s = _local_settings()
        if username is not None:
            s["username"] = username
        if password is not None:
            s["password"] = password
        if verify is not None:
            s["verify"] = verify
    s["url"] = s["url"].rstrip("/")
    return s


def _request(
    method: str, path: str, conn: dict, body: dict | None = None, ok: tuple = (200,), timeout: float = TIMEOUT
) -> requests.Response:
    """Send one request, answered within TIMEOUT seconds; return the response when its status is
    in OK; raise PatroniError otherwise."""
    auth = None
    if method != "GET" and conn.get("username"):
        auth = (conn["username"], conn.get("password") or "")
    where = f"{method} {conn['url']}{path}"
    try:
        resp = requests.request(
            method, conn["url"] + path, json=body, auth=auth, timeout=timeout, verify=conn.get("verify", True)
        )
    except requests.exceptions.SSLError as exc:
        raise PatroniError(f"Patroni REST API {where}: TLS error: {exc}") from None
    except requests.exceptions.ConnectionError:
        raise PatroniError(f"Patroni REST API {where}: cannot connect (is Patroni running?)") from None
    except requests.exceptions.Timeout:
        raise PatroniError(f"Patroni REST API {where}: no answer within {timeout:.0f} s") from None
    if resp.status_code not in ok:
        detail = resp.text.strip()[:500] or resp.reason
        if resp.status_code == 401:
            detail = "authentication failed (check restapi credentials)"
        raise PatroniError(f"Patroni REST API {where}: HTTP {resp.status_code}: {detail}")
    return resp


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise PatroniError(f"Patroni REST API {resp.request.method} {resp.url}: answer is not JSON") from None


def _conn(kwargs: dict) -> dict:
    return _settings(kwargs.get("url"), kwargs.get("username"), kwargs.get("password"), kwargs.get("verify"))


# ---- reading -----------------------------------------------------------------------------------
def _lag(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _normalize_cluster(raw: dict) -> dict:
    """Turn GET /cluster into {'leader', 'members': [...], 'pause', 'scope'} with plain values."""
    members = []
    for m in raw.get("members", []):
        members.append(
            {
                "name": m.get("name"),
                "role": m.get("role"),
                "state": m.get("state"),
                "host": m.get("host"),
                "port": m.get("port"),
                "api_url": m.get("api_url"),
                "timeline": m.get("timeline"),
                "lag": _lag(m.get("lag", 0 if m.get("role") in LEADER_ROLES else None)),
                "pending_restart": bool(m.get("pending_restart", False)),
                "tags": m.get("tags", {}),
            }
        )
    leaders = [m["name"] for m in members if m["role"] in LEADER_ROLES]
    return {
        "scope": raw.get("scope"),
        "leader": leaders[0] if leaders else None,
        "members": members,
        "pause": bool(raw.get("pause", False)),
    }


def cluster(**kwargs: Any) -> dict:
    """Return the cluster as Patroni sees it.

    Returns ``{'scope', 'leader', 'pause', 'members': [{'name', 'role', 'state', 'host',
    'port', 'api_url', 'timeline', 'lag', 'pending_restart', 'tags'}]}``; ``lag`` is in bytes,
    None when unknown. Raises CommandExecutionError when Patroni cannot be reached.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.cluster
    """
    return _normalize_cluster(_json(_request("GET", "/cluster", _conn(kwargs))))


def node(**kwargs: Any) -> dict:
    """Return GET /patroni of the node (its own view: state, role, timeline, xlog...).

    ``role`` is ``primary`` for the leader whatever the Patroni version.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.node
    """
    data = _json(_request("GET", "/patroni", _conn(kwargs), ok=(200, 503)))
    if data.get("role") == "master":
        data["role"] = "primary"
    return data


def leader(**kwargs: Any) -> str | None:
    """Return the name of the leader that accepts writes (the formula's one leader finder, asked of
    every member this node's Patroni knows), or None when the cluster has none.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.leader
    """
    conn = _conn(kwargs)
    c = _normalize_cluster(_json(_request("GET", "/cluster", conn)))
    apis = {m["name"]: m["api_url"].rsplit("/patroni", 1)[0] for m in c["members"] if m.get("api_url")}
    cafile = conn.get("verify") if isinstance(conn.get("verify"), str) else None
    found = __utils__["pgcluster_routing.find_leader"](apis, timeout=TIMEOUT, cafile=cafile)
    return found["name"] if found else None


def is_leader(**kwargs: Any) -> bool:
    """Return True when this node is the leader and its PostgreSQL accepts writes (GET /primary is
    200 as soon as Patroni holds the lock; the body's role says when promotion is over).

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.is_leader
    """
    resp = _request("GET", "/primary", _conn(kwargs), ok=(200, 503))
    try:
        body = resp.json()
    except ValueError:
        body = None
    return __utils__["pgcluster_routing.accepts_writes"](resp.status_code, body)


def _member(c: dict, name: str) -> dict:
    for m in c["members"]:
        if m["name"] == name:
            return m
    known = ", ".join(m["name"] for m in c["members"])
    raise PatroniError(f"no member {name!r} in cluster {c['scope']!r} (members: {known})")


def _member_conn(kwargs: dict, member: str | None, c: dict | None = None) -> tuple[dict, dict]:
    """Connection to MEMBER's own REST API (writes like restart act on the node they are sent to),
    found in cluster C (default: GET /cluster asked now)."""
    conn = _conn(kwargs)
    if member is None:
        return conn, {}
    c = c or _normalize_cluster(_json(_request("GET", "/cluster", conn)))
    m = _member(c, member)
    return dict(conn, url=m["api_url"].rsplit("/patroni", 1)[0]), m


# ---- acting ------------------------------------------------------------------------------------
def switchover(candidate: str | None = None, scheduled_at: str | None = None, **kwargs: Any) -> dict:
    """Planned switchover from the current leader (to CANDIDATE, or Patroni's choice).

    Returns ``{'from', 'to', 'message'}``. Raises CommandExecutionError when the cluster has
    no leader, CANDIDATE is not a member, is already the leader, or Patroni refuses.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.switchover candidate=pg2
    """
    conn = _conn(kwargs)
    c = _normalize_cluster(_json(_request("GET", "/cluster", conn)))
    if not c["leader"]:
        raise PatroniError(f"cluster {c['scope']!r} has no leader: use patroni.failover")
    if candidate is not None:
        m = _member(c, candidate)
        if m["name"] == c["leader"]:
            raise PatroniError(f"{candidate!r} is already the leader of cluster {c['scope']!r}")
        if m["tags"].get("nofailover"):
            raise PatroniError(f"{candidate!r} is tagged nofailover and cannot become leader")
    body: dict[str, Any] = {"leader": c["leader"]}
    if candidate:
        body["candidate"] = candidate
    if scheduled_at:
        body["scheduled_at"] = scheduled_at
    resp = _request("POST", "/switchover", conn, body, ok=(200, 202))
    return {"from": c["leader"], "to": candidate, "message": resp.text.strip()}


def failover(candidate: str, **kwargs: Any) -> dict:
    """Manual failover to CANDIDATE (works without a healthy leader).

    Returns ``{'from', 'to', 'message'}``. Raises CommandExecutionError for an unknown
    candidate or a refusal.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.failover pg2
    """
    conn = _conn(kwargs)
    c = _normalize_cluster(_json(_request("GET", "/cluster", conn)))
    _member(c, candidate)
    if candidate == c["leader"]:
        raise PatroniError(f"{candidate!r} is already the leader of cluster {c['scope']!r}")
    resp = _request("POST", "/failover", conn, {"candidate": candidate})
    return {"from": c["leader"], "to": candidate, "message": resp.text.strip()}


def restart(member: str | None = None, pending_only: bool = False, timeout: float = 120, **kwargs: Any) -> str:
    """Restart PostgreSQL on MEMBER (default: this node); with PENDING_ONLY only if a restart is
    pending. Patroni answers once PostgreSQL is up again: waited for up to TIMEOUT seconds.

    Returns Patroni's message. Raises CommandExecutionError on refusal.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.restart member=pg3 pending_only=True
    """
    conn, m = _member_conn(kwargs, member)
    body = {"restart_pending": True} if pending_only else {}
    resp = _request("POST", "/restart", conn, body, ok=(200, 202, 503), timeout=timeout)
    if resp.status_code == 503:
        # Patroni answers 503 both for "nothing pending" and for a failed restart.
        if pending_only and "conditions are not satisfied" in resp.text:
            return "no restart pending"
        raise PatroniError(f"restart of {member or 'this node'} failed: {resp.text.strip()}")
    return resp.text.strip()


def reload(member: str | None = None, **kwargs: Any) -> str:
    """Make MEMBER (default: this node) re-read its configuration. Returns Patroni's message.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.reload
    """
    conn, _ = _member_conn(kwargs, member)
    return _request("POST", "/reload", conn, ok=(200, 202)).text.strip()


def reinitialize(member: str, force: bool = False, **kwargs: Any) -> str:
    """Rebuild MEMBER's data directory from the leader. Returns Patroni's message.

    Raises CommandExecutionError for an unknown member or when MEMBER is the leader.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.reinitialize pg3
    """
    conn, m = _member_conn(kwargs, member)
    if m.get("role") in LEADER_ROLES:
        raise PatroniError(f"{member!r} is the leader: a leader cannot be reinitialized")
    return _request("POST", "/reinitialize", conn, {"force": bool(force)}).text.strip()


def config_get(**kwargs: Any) -> dict:
    """Return the cluster's dynamic configuration (GET /config).

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.config_get
    """
    return _json(_request("GET", "/config", _conn(kwargs)))


def config_patch(patch: dict, **kwargs: Any) -> dict:
    """Merge PATCH into the dynamic configuration (PATCH /config; null deletes a key).

    Returns the new configuration. Raises CommandExecutionError when PATCH is not a dict.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.config_patch '{"loop_wait": 5}'
    """
    if not isinstance(patch, dict):
        raise PatroniError(f"patroni.config_patch: patch must be a dict, got {type(patch).__name__}")
    return _json(_request("PATCH", "/config", _conn(kwargs), patch))


def pause(**kwargs: Any) -> dict:
    """Put the cluster in maintenance mode (Patroni stops acting on failures).

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.pause
    """
    return config_patch({"pause": True}, **kwargs)


def resume(**kwargs: Any) -> dict:
    """Leave maintenance mode.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.resume
    """
    return config_patch({"pause": None}, **kwargs)


def wait_healthy(
    replicas: int,
    max_lag: int = 1048576,
    timeout: float = 120,
    sync_standbys: int = 0,
    member: str | None = None,
    **kwargs: Any,
) -> dict:
    """Wait until the cluster has a leader and REPLICAS streaming replicas within MAX_LAG bytes,
    SYNC_STANDBYS of them synchronous: Patroni's /sync key names them (role ``sync_standby`` or
    ``quorum_standby``) *and* the leader's PostgreSQL waits for them (its pg_stat_replication, as
    GET /patroni on the leader reports it, says ``sync`` or ``quorum``). A synchronous profile is
    kept only from that moment: right after bootstrap the replicas stream while /sync still names
    none, and a failover then finds no eligible replica. With MEMBER, that member too must stream
    from the leader as the leader's PostgreSQL sees it (the DCS may still show a member just
    restarted as it was a loop ago).

    Returns the cluster. Raises CommandExecutionError with the last seen state on timeout.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.wait_healthy 2 timeout=300
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            c = cluster(**kwargs)
            streaming = [
                m
                for m in c["members"]
                if m["role"] not in LEADER_ROLES and m["state"] == "streaming" and m["lag"] is not None
                if m["lag"] <= max_lag
            ]
            sync = [m for m in streaming if m["role"] in SYNC_ROLES]
            if c["leader"] and len(streaming) >= replicas and len(sync) >= sync_standbys:
                seen = _replication(c, kwargs) if sync_standbys or member else []
                waited_for = [r["application_name"] for r in seen if r.get("sync_state") in ("sync", "quorum")]
                if len(waited_for) >= sync_standbys and (
                    member is None or member in {r["application_name"] for r in seen}
                ):
                    return c
                names = ", ".join(sorted(r["application_name"] for r in seen)) or "none"
                last = (f"the leader's PostgreSQL sees {names} streaming, {', '.join(sorted(waited_for)) or 'none'} "
                        "synchronous")  # fmt: skip
            else:
                last = f"leader={c['leader']}, " + ", ".join(
                    f"{m['name']}:{m['role']}/{m['state']}" for m in c["members"]
                )
        except CommandExecutionError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            wanted = f"{replicas} replicas" + (f", {sync_standbys} synchronous" if sync_standbys else "")
            raise PatroniError(f"cluster not healthy after {timeout:.0f} s ({wanted} wanted): {last}")
        time.sleep(1)


def _replication(c: dict, kwargs: dict) -> list[dict]:
    """The standbys streaming from the leader of cluster C as its PostgreSQL sees them
    (pg_stat_replication, from GET /patroni on the leader): application_name, sync_state..."""
    conn, _ = _member_conn(kwargs, c["leader"], c)
    body = _json(_request("GET", "/patroni", conn, ok=(200, 503)))
    return [r for r in body.get("replication") or [] if r.get("state") == "streaming" and r.get("application_name")]


# ---- this member's files (restore of a whole cluster) ---------------------------------------------
PATRONICTL = "/usr/local/bin/patronictl"  # the formula's wrapper: runs with this node's config.yml


def local_postgresql(config: str = CONFIG) -> dict:
    """This member's PostgreSQL, from its Patroni config.yml: {'data_dir', 'bin_dir', 'port',
    'socket_dir', 'superuser'}. Raises PatroniError when data_dir or bin_dir is not set.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.local_postgresql
    """
    pg = _config(config).get("postgresql") or {}
    if not pg.get("data_dir") or not pg.get("bin_dir"):
        raise PatroniError(f"{config}: postgresql.data_dir or postgresql.bin_dir is not set")
    params = pg.get("parameters") or {}
    listen = str(pg.get("listen", ""))
    port = params.get("port") or (listen.rsplit(":", 1)[1] if ":" in listen else 5432)
    sockets = str(params.get("unix_socket_directories") or "/var/run/postgresql")
    superuser = ((pg.get("authentication") or {}).get("superuser") or {}).get("username", "postgres")
    return {"data_dir": pg["data_dir"], "bin_dir": pg["bin_dir"], "port": int(port),
            "socket_dir": sockets.split(",")[0].strip(), "superuser": superuser}  # fmt: skip


def _as_postgres(args: list[str], timeout: float | None = None, stdin: str | None = None) -> dict:
    return __salt__["cmd.run_all"](["runuser", "-u", "postgres", "--", *args], python_shell=False, stdin=stdin,
                                   output_loglevel="quiet", ignore_retcode=True, cwd="/", timeout=timeout)  # fmt: skip


def pg_ctl(action: str, *args: str, timeout: float = 60, config: str = CONFIG) -> dict:
    """``pg_ctl ACTION -D <data_dir> ARGS`` as postgres, outside Patroni (for a restore: Patroni
    stopped). Returns cmd.run_all's result (retcode, stdout, stderr).

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.pg_ctl status
    """
    pg = local_postgresql(config)
    return _as_postgres([f"{pg['bin_dir']}/pg_ctl", action, "-D", pg["data_dir"], *args], timeout=timeout)


def pg_ctl_status(config: str = CONFIG) -> int:
    """``pg_ctl status`` of this member's data directory: 0 running, 3 not running, 4 no data directory.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.pg_ctl_status
    """
    return pg_ctl("status", timeout=30, config=config)["retcode"]


def psql(sql: str, config: str = CONFIG, timeout: float = 60) -> str:
    """Run SQL as the superuser on this member's local socket; returns the output (unaligned,
    tuples only). Raises PatroniError with PostgreSQL's message.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.psql 'SELECT pg_is_in_recovery()'
    """
    pg = local_postgresql(config)
    cmd = ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", pg["socket_dir"], "-p", str(pg["port"]),
           "-U", pg["superuser"], "-d", "postgres", "-f", "-"]  # fmt: skip
    res = _as_postgres(cmd, timeout=timeout, stdin=sql)
    if res["retcode"] != 0:
        raise PatroniError(f"psql: {' '.join((res['stderr'] or res['stdout']).split())[:300]}")
    return res["stdout"].strip()


def _stopped() -> None:
    if __salt__["service.status"]("patroni"):
        raise PatroniError("Patroni is running on this member: stop it first")


def assert_stopped(config: str = CONFIG) -> dict:
    """Raise PatroniError unless Patroni is stopped here and ``pg_ctl status`` says PostgreSQL is
    not running (3) or has no data directory (4); any other answer (e.g. pg_ctl missing) counts
    as running. Returns ``local_postgresql``.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.assert_stopped
    """
    _stopped()
    pg = local_postgresql(config)
    status = pg_ctl_status(config)
    if status not in (3, 4):
        raise PatroniError(f"pg_ctl status {pg['data_dir']} answered {status}, not 'not running'")
    return pg


def stop(config: str = CONFIG, timeout: float = 120) -> str:
    """Stop Patroni here and wait until PostgreSQL is down too (Patroni stops it; its unit's
    KillMode=process leaves it running if Patroni is killed). Returns the data directory.
    Raises PatroniError when PostgreSQL still runs after TIMEOUT seconds.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.stop
    """
    pg = local_postgresql(config)
    __salt__["service.stop"]("patroni")
    deadline = time.monotonic() + timeout
    while pg_ctl_status(config) == 0:
        if time.monotonic() > deadline:
            raise PatroniError(f"PostgreSQL still runs in {pg['data_dir']} {timeout:.0f} s after Patroni stopped")
        time.sleep(1)
    return assert_stopped(config)["data_dir"]


def remove_cluster(scope: str, config: str = CONFIG) -> str:
    """Erase cluster SCOPE's state from the DCS (``patronictl remove``): leader, members, history,
    dynamic configuration. The next Patroni to start on a data directory initializes it again.

    Only while Patroni is stopped here (the caller stops it everywhere). Returns patronictl's
    words; raises PatroniError.

    CLI Example:

    .. code-block:: bash

        salt pg1 patroni.remove_cluster main
    """
    _stopped()
    if _config(config).get("scope") != scope:
        raise PatroniError(f"this member does not belong to cluster {scope!r}")
    res = __salt__["cmd.run_all"]([PATRONICTL, "remove", scope], stdin=f"{scope}\nYes I am aware\n",
                                  python_shell=False, output_loglevel="quiet", ignore_retcode=True)  # fmt: skip
    if res["retcode"] != 0:
        raise PatroniError(f"patronictl remove {scope}: {(res['stderr'] or res['stdout']).strip()[-300:]}")
    return res["stdout"].strip()


def clear_data_dir(config: str = CONFIG) -> str:
    """Delete this member's data directory so that Patroni rebuilds it as a replica on start.

    Only while Patroni is stopped and pg_ctl says no PostgreSQL runs on it (any other answer,
    e.g. pg_ctl missing, deletes nothing). Returns the directory removed; raises PatroniError.

    CLI Example:

    .. code-block:: bash

        salt pg3 patroni.clear_data_dir
    """
    data = assert_stopped(config)["data_dir"]
    __salt__["file.remove"](data)
    return data
