"""States of the pgcluster formula that need more than Salt's own: etcd membership and health, roles
and databases created through the cluster's leader, PgBouncer's routing, the CA certificate.

Role verifiers (or passwords) are read from pillar by the state itself
(``pgcluster:clusters:<cluster>:roles:<role>``), so they never appear in the rendered SLS,
in job data or in state output.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import ssl
import time
import urllib.parse
import urllib.request

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster"


def __virtual__():
    missing = [f for f in ("pgcluster.settings",) if f not in __salt__]
    if missing:
        return (False, f"pgcluster states: execution modules missing: {', '.join(missing)} (run saltutil.sync_all)")
    return __virtualname__


def _ret(name: str) -> dict:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def etcd_healthy(name: str, endpoints: list[str], tls: dict | None = None, timeout: float = 120) -> dict:
    """Wait until every etcd member in ENDPOINTS (host:port) is healthy. Changes nothing. TLS: the
    ``ca``, ``cert`` and ``key`` files to ask them over https with a client certificate."""
    ret = _ret(name)
    if __opts__.get("test"):
        ret["comment"] = "health is checked on a real run only"
        return ret
    cmd = [*_etcdctl_cmd(endpoints, tls), "endpoint", "health", "-w", "json"]
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        res = __salt__["cmd.run_all"](cmd, env={"ETCDCTL_API": "3"}, python_shell=False, ignore_retcode=True)
        try:
            health = json.loads(res["stdout"] or "[]")
            sick = [h["endpoint"] for h in health if not h.get("health")]
            if len(health) == len(endpoints) and not sick:
                ret["comment"] = f"etcd healthy: {len(endpoints)} members"
                return ret
            last = f"unhealthy: {', '.join(sick)}"
        except (ValueError, KeyError, TypeError):
            last = (res["stderr"] or res["stdout"]).strip()[-300:]
        if time.monotonic() >= deadline:
            ret.update(result=False, comment=f"etcd not healthy after {timeout:.0f} s: {last}")
            return ret
        time.sleep(1)


def _answers(endpoint: str) -> bool:
    """Whether ENDPOINT (host:port) answers a TCP connection, taking or refusing it (False: no
    answer at all: a host down, or a firewall that drops this host's packets)."""
    host, port = endpoint.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return True


def _etcd_running(name: str, others: list[str], tls: dict, timeout: float) -> tuple[bool, list[dict]]:
    """(whether OTHERS, the other etcd hosts, run the cluster already, its members). New only when
    every one of them answers or refuses and none has a started member; a silent one is waited
    for up to TIMEOUT seconds (a firewall not yet admitting NAME must not make it found a cluster
    of its own)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            members = __salt__["pgcluster.etcd_members"](endpoints=others, tls=tls) if others else []
        except CommandExecutionError:
            members = []
        if any(m["started"] for m in members):  # published only with a quorum behind it
            return True, members
        silent = [e for e in others if not _answers(e)]
        if not silent:
            return False, members
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"cannot tell whether the etcd cluster runs: {', '.join(silent)} do not answer on etcd's client "
                f"port (down, or their firewall does not admit {name} yet: run highstate on them)"
            )
        time.sleep(2)


def etcd_joined(
    name: str,
    peers: dict,
    endpoints: list[str],
    token: str,
    data_dir: str,
    env_file: str,
    tls: dict,
    timeout: float = 120,
) -> dict:
    """Prepare etcd member NAME (this host) to start: the ``ETCD_INITIAL_*`` settings in ENV_FILE.
    With its data in DATA_DIR it is a member already and nothing is done (etcd reads those settings
    on its first start only). Otherwise, when the other hosts of ENDPOINTS (host:port) run the
    cluster, NAME is added to it (``member add``, unless listed already) and starts with
    ``existing`` and the cluster's actual members; when none does, the cluster is new and starts
    from PEERS ({host: peer URL}, the model's etcd hosts) and TOKEN, as does a founder of a new
    cluster that the others started without (named, never started). A host that etcd lists as a
    started member but whose data directory is empty is refused (its identity is lost: take it out
    of etcd first). TLS: the ``ca``, ``cert`` and ``key`` files."""
    ret = _ret(name)
    if os.path.isdir(os.path.join(data_dir, "member")):
        ret["comment"] = f"etcd member {name} has its data in {data_dir}"
        return ret
    mine = peers[name]
    host = urllib.parse.urlsplit(mine).hostname
    others = [e for e in endpoints if e.rsplit(":", 1)[0] != host]
    try:
        running, members = _etcd_running(name, others, tls, 0 if __opts__.get("test") else timeout)
    except CommandExecutionError as exc:
        ret.update(result=None if __opts__.get("test") else False, comment=str(exc))
        return ret
    listed = next((m for m in members if mine in m["peer_urls"]), None)
    if running and listed and listed["started"]:
        ret.update(
            result=False,
            comment=(
                f"etcd lists {name} (id {listed['id']}) as a started member, but its data directory {data_dir} is "
                f"empty: take it out of etcd (etcdctl member remove {listed['id']}), then run highstate again"
            ),
        )
        return ret
    if listed and listed["name"] == name:
        # A founder, named by the new cluster's initial cluster and not started yet: it starts as
        # the other founders did, however far they got.
        running = False
    if running and not listed:
        if __opts__.get("test"):
            ret.update(result=None, changes={"member": "would be added to the running etcd cluster"})
            return ret
        members = __salt__["pgcluster.etcd_member_add"](name, mine, endpoints=others, tls=tls)
        ret["changes"]["member"] = f"added to the running etcd cluster ({len(members)} members)"
    by_url = {url: host for host, url in peers.items()}
    if running:
        initial = {m["name"] or by_url.get(m["peer_urls"][0], m["id"]): m["peer_urls"][0] for m in members}
    else:
        initial = dict(peers)
    text = ("# Managed by Salt (pgcluster formula): read by etcd on its first start only.\n"
            f'ETCD_INITIAL_CLUSTER="{",".join(f"{h}={u}" for h, u in initial.items())}"\n'
            f'ETCD_INITIAL_CLUSTER_STATE="{"existing" if running else "new"}"\n'
            f'ETCD_INITIAL_CLUSTER_TOKEN="{token}"\n')  # fmt: skip
    try:
        with salt.utils.files.fopen(env_file) as f:
            current = f.read()
    except OSError:
        current = None
    if current != text:
        if __opts__.get("test"):
            ret.update(result=None, changes={**ret["changes"], "env_file": f"{env_file} would be written"})
            return ret
        with salt.utils.files.fopen(env_file, "w") as f:
            f.write(text)
        os.chmod(env_file, 0o644)
        ret["changes"]["env_file"] = f"{'existing' if running else 'new'} cluster: {', '.join(initial)}"
    ret["comment"] = f"etcd member {name} starts into the {'running' if running else 'new'} cluster"
    return ret


def _started_at(service: str) -> float | None:
    """When SERVICE's main process started (epoch seconds; None when it does not run)."""
    out = __salt__["cmd.run"](["systemctl", "show", "-p", "ExecMainStartTimestampMonotonic", "-p", "MainPID",
                               service], python_shell=False)  # fmt: skip
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("MainPID", "0") == "0":
        return None
    # systemd's monotonic clock is CLOCK_MONOTONIC, as Python's: no wall-clock rounding.
    return time.time() - (time.monotonic() - int(props["ExecMainStartTimestampMonotonic"]) / 1e6)


def _etcdctl_cmd(endpoints: list[str], tls: dict | None) -> list[str]:
    return __utils__["pgcluster_etcd.etcdctl_command"](endpoints, tls)


def etcd_restarted(name: str, service: str, endpoints: list[str], local: str, tls: dict, files: list[str],
                   timeout: float = 180) -> dict:  # fmt: skip
    """etcd on this host (NAME) running with its configuration: restarted when one of FILES (its
    environment, drop-ins, certificate and key) is newer than its process, one etcd host of the
    cluster at a time. The restart runs under an etcd lock taken through the other hosts of
    ENDPOINTS (host:port; LOCAL is this host's), only while every one of them is healthy (a
    restart then never costs the quorum), and holds the lock until this etcd is healthy again.
    When none of the others is healthy there is no quorum to keep: restarted directly. TLS: the
    ``ca``, ``cert`` and ``key`` files. Waits up to TIMEOUT seconds for the lock."""
    ret = _ret(name)
    started = _started_at(service)
    newest = max((os.stat(f).st_mtime for f in files if os.path.exists(f)), default=0.0)
    if started is None or started >= newest:
        ret["comment"] = f"{service} runs with its current configuration" if started else f"{service} does not run"
        return ret
    if __opts__.get("test"):
        ret.update(result=None, changes={"restarted": "would be restarted, one etcd host at a time"})
        return ret
    others = [e for e in endpoints if e != local]
    health = " ".join(shlex.quote(a) for a in _etcdctl_cmd(others, tls)) + " endpoint health"
    mine = " ".join(shlex.quote(a) for a in _etcdctl_cmd([local], tls)) + " endpoint health"
    script = (f"echo pgcluster-locked; {health} >/dev/null 2>&1 || {{ echo pgcluster-others-unhealthy; exit 3; }}; "
              f"date +%s.%N; systemctl restart {shlex.quote(service)} || exit 4; i=0; "
              f"until {mine} >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 120 ] && exit 5; sleep 0.5; done; "
              "date +%s.%N; echo pgcluster-restarted")  # fmt: skip
    t0 = time.time()
    cmd = [*_etcdctl_cmd(others, tls), "lock", "pgcluster-etcd-restart", "--", "/bin/sh", "-c", script]
    res = __salt__["cmd.run_all"](cmd, env={"ETCDCTL_API": "3"}, python_shell=False, ignore_retcode=True,
                                  timeout=timeout, output_loglevel="quiet")  # fmt: skip
    out = res["stdout"].splitlines()
    if "pgcluster-restarted" in out:
        began, ended = (float(x) for x in out if x.replace(".", "", 1).isdigit())
        ret["changes"]["restarted"] = {"lock_wait_seconds": round(began - t0, 3), "from": began, "to": ended}
        ret["comment"] = f"{service} restarted under the cluster's restart lock, down {ended - began:.1f} s"
        return ret
    if "pgcluster-others-unhealthy" in out:
        why = "another etcd host is not healthy (a restart now could cost the quorum)"
        ret.update(result=False, comment=f"{service} not restarted: {why}: run highstate again once every one is")
        return ret
    if "pgcluster-locked" not in out:
        probe = __salt__["cmd.run_all"]([*_etcdctl_cmd(others, tls), "endpoint", "health"], env={"ETCDCTL_API": "3"},
                                        python_shell=False, ignore_retcode=True)  # fmt: skip
        if "is healthy" not in probe["stdout"] + probe["stderr"]:
            __salt__["service.restart"](service)
            ret["changes"]["restarted"] = "directly: no other etcd host is healthy (no quorum to keep)"
            return ret
    why = (res["stderr"] or res["stdout"]).strip().splitlines()
    ret.update(result=False, comment=f"{service} not restarted: {why[-1] if why else 'the restart lock failed'}")
    return ret


def https_ready(name: str, ca_file: str, timeout: float = 120) -> dict:
    """Wait until the URL NAME answers 200 over https (its certificate checked against CA_FILE).
    Changes nothing; with test=True it does not wait."""
    ret = _ret(name)
    if __opts__.get("test"):
        ret["comment"] = "readiness is checked on a real run only"
        return ret
    ctx = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(name, timeout=5, context=ctx) as resp:  # noqa: S310 (https only)
                if resp.status == 200:
                    ret["comment"] = f"{name} answers 200"
                    return ret
                last = f"status {resp.status}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            ret.update(result=False, comment=f"{name} not ready after {timeout:.0f} s: {last}")
            return ret
        time.sleep(1)


def _leader_only(ret: dict) -> bool:
    """True when this node leads; otherwise fills RET with a no-op comment."""
    try:
        if __salt__["patroni.is_leader"]():
            return True
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return False
    ret["comment"] = "not the leader: the leader applies this"
    return False


def _spec_on_leader(ret: dict, cluster: str, kind: str, name: str) -> dict | None:
    """The pillar settings of NAME (a role or database of CLUSTER) when this node leads, else None
    with RET saying why (not in pillar: a failure; not the leader: nothing to do)."""
    declared = (__salt__["pgcluster.settings"]()["clusters"].get(cluster) or {}).get(kind) or {}
    if name not in declared:
        ret.update(result=False, comment=f"pgcluster:clusters:{cluster}:{kind}:{name} is not in pillar")
        return None
    return (declared[name] or {}) if _leader_only(ret) else None


def _query(ret: dict, sql: str, port: int) -> list | None:
    """Rows of SQL on the local PostgreSQL, or None with RET marked failed."""
    try:
        return __salt__["pgsql.query"](sql, port=port)
    except CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return None


def _apply(ret: dict, what: str, changes: dict, done: str, statements: list[str], port: int) -> dict:
    """Report CHANGES of WHAT; with test=True stop there, else run STATEMENTS. DONE says what changes."""
    ret["changes"] = changes
    if __opts__.get("test"):
        ret.update(result=None, comment=f"{what} would be {done}")
        return ret
    try:
        for stmt in statements:
            __salt__["pgsql.query"](stmt, port=port)
    except CommandExecutionError as exc:
        ret.update(result=False, changes={}, comment=f"{what}: {exc}")
        return ret
    ret["comment"] = f"{what} {done}"
    return ret


def role_present(name: str, cluster: str, port: int = 5432) -> dict:
    """Ensure role NAME of CLUSTER exists with its pillar password and LOGIN setting (on the leader)."""
    ret = _ret(name)
    spec = _spec_on_leader(ret, cluster, "roles", name)
    if spec is None:
        return ret
    lit, idt = __salt__["pgsql.literal"], __salt__["pgsql.ident"]
    login = bool(spec.get("login", True))
    # A database server receives the role's SCRAM verifier, not its password (pgcluster.pillar_for).
    password = spec.get("password")
    verifier = spec.get("verifier") or (
        __utils__["pgcluster_model.role_verifier"](cluster, name, password) if password else None
    )
    rows = _query(
        ret, f"SELECT rolcanlogin, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = {lit(name)}", port
    )
    if rows is None:
        return ret
    todo = []
    if not rows:
        todo.append("created")
    else:
        if (rows[0][0] == "t") != login:
            todo.append("login" if login else "nologin")
        if verifier and rows[0][1] != verifier:
            todo.append("password")
    if not todo:
        ret["comment"] = f"role {name} is as wanted"
        return ret
    attrs = ("LOGIN" if login else "NOLOGIN") + (f" PASSWORD {lit(verifier)}" if verifier else "")
    stmt = f"{'CREATE' if not rows else 'ALTER'} ROLE {idt(name)} {attrs}"
    # The changes name what changes, never a password or verifier.
    return _apply(ret, f"role {name}", {name: todo}, f"changed: {', '.join(todo)}", [stmt], port)


def monitor_role_present(name: str, port: int = 5432, databases: list | None = None) -> dict:
    """Ensure the monitoring role NAME exists (on the leader): LOGIN, member of pg_monitor
    (read-only statistics), CONNECT on DATABASES (their table sizes; it reads no row), no password
    (it logs in over the local socket, peer), and nothing more (no superuser, no database or
    role creation)."""
    ret = _ret(name)
    if not _leader_only(ret):
        return ret
    lit, idt = __salt__["pgsql.literal"], __salt__["pgsql.ident"]
    rows = _query(ret, "SELECT rolcanlogin, rolsuper OR rolcreatedb OR rolcreaterole, rolpassword IS NOT NULL, "
                       "pg_has_role(oid, 'pg_monitor', 'MEMBER') "
                       f"FROM pg_authid WHERE rolname = {lit(name)}", port)  # fmt: skip
    if rows is None:
        return ret
    attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD NULL"
    todo, stmts = [], []
    if not rows:
        todo, stmts = ["created"], [f"CREATE ROLE {idt(name)} {attrs}"]
    elif rows[0][:3] != ["t", "f", "f"]:
        todo, stmts = ["attributes"], [f"ALTER ROLE {idt(name)} {attrs}"]
    if not rows or rows[0][3] != "t":
        todo.append("granted pg_monitor")
        stmts.append(f"GRANT pg_monitor TO {idt(name)}")
    for db in databases or []:
        if rows:
            granted = _query(ret, f"SELECT has_database_privilege({lit(name)}, {lit(db)}, 'CONNECT')", port)
            if granted is None:
                return ret
            if granted == [["t"]]:
                continue
        todo.append(f"CONNECT on {db}")
        stmts.append(f"GRANT CONNECT ON DATABASE {idt(db)} TO {idt(name)}")
    if not todo:
        ret["comment"] = f"role {name} is as wanted"
        return ret
    return _apply(ret, f"role {name}", {name: todo}, ", ".join(todo), stmts, port)


def database_present(name: str, cluster: str, port: int = 5432) -> dict:
    """Ensure database NAME of CLUSTER exists with its pillar owner (on the leader)."""
    ret = _ret(name)
    spec = _spec_on_leader(ret, cluster, "databases", name)
    if spec is None:
        return ret
    lit, idt = __salt__["pgsql.literal"], __salt__["pgsql.ident"]
    owner = spec.get("owner") or "postgres"
    rows = _query(ret, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = " + lit(name), port)
    if rows is None:
        return ret
    if rows and rows[0][0] == owner:
        ret["comment"] = f"database {name} owned by {owner} exists"
        return ret
    changes = {name: {"owner": {"old": rows[0][0] if rows else None, "new": owner}}}
    if rows:
        return _apply(ret, f"database {name}", changes, f"given to {owner}",
                      [f"ALTER DATABASE {idt(name)} OWNER TO {idt(owner)}"], port)  # fmt: skip
    # Least privilege: only the owner (and superusers) may connect or create objects.
    return _apply(ret, f"database {name}", changes, "created",
                  [f"CREATE DATABASE {idt(name)} OWNER {idt(owner)}",
                   f"REVOKE ALL ON DATABASE {idt(name)} FROM PUBLIC"], port)  # fmt: skip


def _routes_in_place(spec: dict, text: str) -> bool:
    """Whether SPEC's routing file already sends every database where TEXT does. Which replica
    takes the <db>_ro reads changes with replication at run time (the event path and the safety
    net follow it): the state owns where writes go, so a second run that finds them in place
    changes nothing."""
    reads = {f"{db}_ro" for db in spec["databases"]}

    def writes(routes: str) -> list[str]:
        return [line for line in routes.splitlines() if line.split(" = ", 1)[0] not in reads]

    try:
        with salt.utils.files.fopen(spec["path"]) as f:
            return writes(f.read()) == writes(text)
    except FileNotFoundError:
        return False


def _standby_routes(ret: dict, spec: dict, standby: dict) -> dict:
    """A standby cluster of a physical migration's source (no leader until the cutover): the routes
    kept as they were written (the header's leader, timeline and databases cut over), but with
    every database of ``migrate:databases`` going to its source, one added since ``start`` too."""
    name = spec["cluster"]
    kept = (f"cluster {name} is a standby cluster of {standby['source']} (physical migration, standby leader "
            f"{standby['standby_leader']})")  # fmt: skip
    current = __utils__["pgcluster_routing.routed"](spec) or {}
    leader, timeline, system = current.get("leader"), current.get("timeline"), current.get("system")
    text = __utils__["pgcluster_routing.routing_text"](spec, leader, timeline, None, system, current.get("cut") or [])
    ret["comment"] = f"{kept}: routes kept, the migrated databases go to their source until the cutover"
    if _routes_in_place(spec, text):
        return ret
    with salt.utils.files.fopen(spec["path"]) as f:
        have = set(f.read().splitlines())
    wanted = [line for line in text.splitlines() if " = host=" in line]
    at_source = sorted(db for db in set(spec.get("sources") or {}) - set(current.get("cut") or [])
                       if any(line.startswith(f"{db} = ") and line not in have for line in wanted))  # fmt: skip
    ret["changes"] = {"to_their_source": at_source}
    if __opts__.get("test"):
        ret.update(result=None, comment=f"{kept}: would send {', '.join(at_source)} to their source")
        return ret
    changed, why = __utils__["pgcluster_routing.install_route"](spec, leader, timeline, system)
    if why:
        ret.update(changes={}, comment=f"{kept}: routing of {name} left alone: {why}")
    elif not changed:
        ret["changes"] = {}
    else:
        ret["comment"] = f"{kept}: {', '.join(at_source)} sent to their source until the cutover"
    return ret


def pgbouncer_routed(name: str, timeout: float = 300) -> dict:
    """Ensure this PgBouncer's routing file for cluster NAME points at the current leader (a
    database being migrated in: at its source, until its cutover).

    The leader is read from Patroni (the formula's one leader finder); waits up to TIMEOUT
    seconds for the cluster to have one (on a first deployment the database servers bootstrap
    at the same time). A standby cluster of a physical migration's source has none until the
    cutover: its routes are kept as they are (``_standby_routes``).
    """
    ret = _ret(name)
    spec = __salt__["pgcluster.settings"]()["node"]["routing"].get(name)
    if spec is None:
        ret.update(result=False, comment=f"this host serves no cluster {name!r} in pgcluster:clusters")
        return ret
    apis = {m: v["api"] for m, v in spec["members"].items()}
    deadline = time.monotonic() + (5 if __opts__.get("test") else timeout)
    while True:
        leader = __utils__["pgcluster_routing.find_leader"](apis, cafile=spec.get("cafile"))
        # Only a cluster that declares a migration can be a standby cluster (no model rendered
        # each poll while a first deployment waits for its leader).
        standby = {} if leader or not spec.get("sources") else __salt__["pgcluster.standby_cluster"](name)
        if leader or standby or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if standby and not os.path.exists(spec["path"]):
        ret.update(result=False, comment=f"cluster {name} is a standby cluster of {standby['source']} (physical "
                   "migration) and this host has no routes yet: run the highstate again after the cutover")  # fmt: skip
        return ret
    if standby:
        return _standby_routes(ret, spec, standby)
    if leader is None:
        ret.update(result=False, comment=f"cluster {name} has no leader accepting writes after {timeout:.0f} s")
        return ret
    address = spec["members"][leader["name"]]["address"]
    timeline, system = leader["timeline"], leader.get("system")
    ret["comment"] = f"routes {name} to the leader {leader['name']} ({address}, timeline {timeline})"
    current = __utils__["pgcluster_routing.routed"](spec)
    # A repoint after this state looked may have installed a newer route: the fence keeps it.
    why = __utils__["pgcluster_routing.refusal"](current, address, timeline, system)
    if why:
        ret["comment"] = f"routing of {name} left alone: {why}"
        return ret
    # Databases being migrated in go to their source until their cutover (kept in the file).
    cut = (current or {}).get("cut") or []
    replicas = __utils__["pgcluster_routing.replica_addresses"](spec, leader)
    text = __utils__["pgcluster_routing.routing_text"](spec, address, timeline, replicas, system, cut)
    if _routes_in_place(spec, text):
        return ret
    ret["changes"] = {"leader": address}
    at_source = sorted(set(spec.get("sources") or {}) - set(cut))
    if at_source:
        ret["changes"]["to_their_source"] = at_source
    if __opts__.get("test"):
        ret.update(result=None, comment=f"would route {name} to the leader {leader['name']} ({address})")
        return ret
    changed, why = __utils__["pgcluster_routing.install_route"](spec, address, timeline, system, replicas)
    if why:
        ret.update(changes={}, comment=f"routing of {name} left alone: {why}")
    elif not changed:
        ret["changes"] = {}
    return ret


def ca_certificate_present(name: str, ca_minion: str, timeout: float = 300) -> dict:
    """Ensure NAME holds the cluster's CA certificate, as CA_MINION publishes it in the Salt mine
    (``x509.get_pem_entries``); waits up to TIMEOUT seconds for it (on a first highstate the CA is
    created at the same time). The certificate is public: its text may show in the changes."""
    ret = _ret(name)
    deadline = time.monotonic() + (0 if __opts__.get("test") else timeout)
    while True:
        entries = (__salt__["mine.get"](ca_minion, "x509.get_pem_entries") or {}).get(ca_minion) or {}
        pem = next((str(v) for v in entries.values() if "BEGIN CERTIFICATE" in str(v)), None)
        if pem or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if pem is None:
        ret.update(result=False, comment=f"{ca_minion} published no CA certificate in the mine after {timeout:.0f} s "
                                         f"(has it run pgcluster.pki.ca?)")  # fmt: skip
        return ret
    pem = pem.strip() + "\n"
    try:
        with salt.utils.files.fopen(name) as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    if current == pem:
        ret["comment"] = f"{name} holds the CA certificate of {ca_minion}"
        return ret
    ret["changes"] = {"ca": "replaced" if current else "created"}
    if __opts__.get("test"):
        ret.update(result=None, comment=f"{name} would get the CA certificate of {ca_minion}")
        return ret
    with salt.utils.files.fopen(name, "w") as f:
        f.write(pem)
    __salt__["file.set_mode"](name, "0644")
    ret["comment"] = f"{name} holds the CA certificate of {ca_minion}"
    return ret
