"""The pgcluster data model: merge, validate, and derive what each minion runs.

One pillar key, ``pgcluster``, describes every cluster. This library merges it over the
formula's defaults (``salt/pgcluster/defaults.yaml``), validates it once (every message names
the pillar key and the problem), and derives from it everything the states, the execution
modules and the runners need: a minion's roles, Patroni's ``config.yml``, pg_hba rules, the
etcd member list, PgBouncer's routing, every address, port and URL. Nothing here talks to a
service, and no other file writes a port, path or scheme of its own.

Salt loads it as a custom util: ``__utils__["pgcluster_model.settings"](...)``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import ipaddress
import os
import re
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_model"

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # PostgreSQL identifiers we accept
SCOPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BACKUP_TYPES = ("full", "diff", "incr")
PASSWORDS = ("superuser", "replication", "rewind", "restapi")


# pg_hba's /32, nftables' `ip saddr` and the host:port of every URL assume IPv4.
IPV4_ONLY = "an IPv6 address; pgcluster supports IPv4 only (for now)"


def __virtual__():
    return __virtualname__


class ModelError(CommandExecutionError):
    """The pillar model is invalid; the message lists every problem with its key."""


# ---- merge ---------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """VALUE with every mapping/list rebuilt as plain dict/list (Salt 3008 wraps pillar in masked types)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict, over: dict) -> dict:
    """Deep-merge OVER into a copy of BASE (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge(defaults: dict, osfamilymap: dict, pillar: dict, os_family: str) -> dict:
    """Return defaults <- osfamilymap[os_family] <- pillar, with '{version}' filled in."""
    model = _merge(_merge(defaults.get("pgcluster", defaults), osfamilymap.get(os_family, {})), _plain(pillar or {}))
    pg = model["postgresql"]
    version = str(pg.get("version", ""))
    pg["bin_dir"] = str(pg.get("bin_dir", "")).replace("{version}", version)
    for key in ("packages", "minor_packages"):
        pg[key] = [str(p).replace("{version}", version) for p in pg.get(key, [])]
    if not model["patroni"].get("callback"):
        model["patroni"]["callback"] = f"{model['lib_dir']}/patroni-callback"
    return model


# ---- validate ------------------------------------------------------------------------------
def _port(value: Any, key: str, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.append(f"{key}: {value!r} is not a port number (1-65535)")


def _hostlist(value: Any, key: str, hosts: dict, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: must be a list of minion ids")
        return []
    for i, name in enumerate(value):
        if name not in hosts:
            problems.append(f"{key}[{i}]: {name!r} has no address in pgcluster:hosts")
    if len(set(value)) != len(value):
        problems.append(f"{key}: lists a minion twice")
    return value


def _validate_backup(key: str, c: dict, model: dict, problems: list[str]) -> None:
    host = c["backup"]
    if host not in (model.get("hosts") or {}):
        problems.append(f"{key}:backup: {host!r} has no address in pgcluster:hosts")
    if host in (c.get("members") or []):
        problems.append(f"{key}:backup: {host!r} is a database server; the repository needs a host of its own")
    b = c.get("pgbackrest")
    if not isinstance(b, dict):
        problems.append(f"{key}:pgbackrest: must be a mapping (cipher_pass, retention, schedule)")
        return
    if "cipher_pass" in b and (not isinstance(b["cipher_pass"], str) or len(b["cipher_pass"]) < 20):
        problems.append(f"{key}:pgbackrest:cipher_pass: shorter than 20 characters")
    for kind, n in {**model["pgbackrest"]["retention"], **(b.get("retention") or {})}.items():
        if kind not in ("full", "diff") or isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9999999:
            problems.append(f"{key}:pgbackrest:retention:{kind}: must be full or diff with a count of 1 or more")
    for kind, when in {**model["pgbackrest"]["schedule"], **(b.get("schedule") or {})}.items():
        if kind not in BACKUP_TYPES or not isinstance(when, str) or not re.fullmatch(r"[\w*:.,/~ +-]*", when):
            problems.append(f"{key}:pgbackrest:schedule:{kind}: must be full, diff or incr with an OnCalendar value")


def _validate_cluster(name: str, c: Any, model: dict, problems: list[str]) -> None:
    key = f"pgcluster:clusters:{name}"
    hosts = model.get("hosts") or {}
    if not isinstance(c, dict):
        problems.append(f"{key}: must be a mapping")
        return
    if not SCOPE.match(str(c.get("scope", name))):
        problems.append(f"{key}:scope: {c.get('scope', name)!r} must match {SCOPE.pattern}")
    members = _hostlist(c.get("members"), f"{key}:members", hosts, problems)
    if isinstance(c.get("members"), list) and len(members) < 2:
        problems.append(f"{key}:members: a cluster needs at least 2 database servers, got {len(members)}")
    etcd = _hostlist(c.get("etcd"), f"{key}:etcd", hosts, problems)
    # An even count tolerates no more failures than the odd count below it: it is the step
    # between two odd ones while a member is replaced (one etcd membership change at a time).
    if isinstance(c.get("etcd"), list) and len(etcd) < 3:
        problems.append(f"{key}:etcd: {len(etcd)} members; etcd needs at least 3")
    if "pgbouncer" in c:
        _hostlist(c.get("pgbouncer"), f"{key}:pgbouncer", hosts, problems)
    profile = c.get("profile")
    if profile not in (model.get("profiles") or {}):
        known = ", ".join(sorted(model.get("profiles") or {}))
        problems.append(f"{key}:profile: unknown profile {profile!r} (known: {known})")
    _port(c.get("port", model["postgresql"]["port"]), f"{key}:port", problems)
    secrets = c.get("passwords", {})
    if not isinstance(secrets, dict):
        secrets = {}
        problems.append(f"{key}:passwords: must be a mapping (superuser, replication, rewind, restapi)")
    for which, pw in secrets.items():  # a secret is checked where it is (secret_problems: where it is needed)
        if which not in PASSWORDS:
            problems.append(f"{key}:passwords:{which}: unknown (known: {', '.join(PASSWORDS)})")
        elif not isinstance(pw, str) or len(pw) < 12:
            problems.append(f"{key}:passwords:{which}: shorter than 12 characters")
    for i, net in enumerate(c.get("client_networks") if isinstance(c.get("client_networks"), list) else []):
        try:
            if ipaddress.ip_network(str(net)).version != 4:
                problems.append(f"{key}:client_networks[{i}]: {net!r}: {IPV4_ONLY}")
        except ValueError:
            problems.append(f"{key}:client_networks[{i}]: {net!r} is not a network (e.g. 10.0.0.0/24)")
    if not isinstance(c.get("parameters") or {}, dict):
        problems.append(f"{key}:parameters: must be a mapping of PostgreSQL parameter to value")
    if not isinstance(c.get("client_networks") or [], list):
        problems.append(f"{key}:client_networks: must be a list of networks")
    roles = c.get("roles") or {}
    if not isinstance(roles, dict):
        problems.append(f"{key}:roles: must be a mapping of role name to settings")
        roles = {}
    for role, spec in roles.items():
        if not NAME.match(str(role)):
            problems.append(f"{key}:roles:{role}: not a valid role name")
        spec = spec or {}
        if "password" in spec and (not isinstance(spec["password"], str) or len(spec["password"]) < 12):
            problems.append(f"{key}:roles:{role}:password: shorter than 12 characters")
        if "verifier" in spec and not re.fullmatch(r"SCRAM-SHA-256\$\d+:[^$]+\$[^:]+:.+", str(spec["verifier"])):
            problems.append(f"{key}:roles:{role}:verifier: not a SCRAM-SHA-256 verifier")
    if c.get("backup") is not None:
        _validate_backup(key, c, model, problems)
    dbs = c.get("databases") or {}
    if not isinstance(dbs, dict):
        problems.append(f"{key}:databases: must be a mapping of database name to settings")
        dbs = {}
    for db, spec in dbs.items():
        if not NAME.match(str(db)):
            problems.append(f"{key}:databases:{db}: not a valid database name")
        owner = (spec or {}).get("owner")
        if owner is not None and owner not in roles:
            problems.append(f"{key}:databases:{db}:owner: role {owner!r} is not declared in {key}:roles")
    if c.get("migrate") is not None:
        _validate_migrate(f"{key}:migrate", c, hosts, problems)


def _max_rate_ok(rate: Any) -> bool:
    """Whether RATE is what ``pg_basebackup --max-rate`` takes: kB/s, or with a k or M suffix, 32
    kB/s to 1 GB/s."""
    found = re.fullmatch(r"([0-9]+)([kM]?)", str(rate))
    if not found:
        return False
    kbps = int(found.group(1)) * (1024 if found.group(2) == "M" else 1)
    return 32 <= kbps <= 1024 * 1024


def _validate_migrate(key: str, c: dict, hosts: dict, problems: list[str]) -> None:
    """The migrate block: where an existing PostgreSQL comes from and how it moves in."""
    m = c["migrate"]
    if not isinstance(m, dict):
        problems.append(f"{key}: must be a mapping (source, port, mode, databases)")
        return
    source = m.get("source")
    if not isinstance(source, str) or source not in hosts:
        problems.append(f"{key}:source: {source!r} is not listed in pgcluster:hosts")
    elif source in [*(c.get("members") or []), c.get("backup")]:
        problems.append(f"{key}:source: {source} is part of the cluster itself")
    if m.get("mode") not in ("physical", "logical"):
        problems.append(f"{key}:mode: {m.get('mode')!r} is not physical (the whole instance, same major version) "
                        "or logical (chosen databases)")  # fmt: skip
    _port(m.get("port", 5432), f"{key}:port", problems)
    dbs = m.get("databases")
    if dbs is not None and (not isinstance(dbs, list) or not all(NAME.match(str(d)) for d in dbs)):
        problems.append(f"{key}:databases: must be a list of database names")
    elif not dbs and m.get("mode") == "logical":
        problems.append(f"{key}:databases: list the databases to move (PgBouncer routes them to the source "
                        "until the cutover)")  # fmt: skip
    elif not dbs and m.get("mode") == "physical":
        problems.append(f"{key}:databases: list the source's databases the applications use (the whole "
                        "instance moves; PgBouncer routes these to the source until the cutover)")  # fmt: skip
    rate = m.get("copy_max_rate")
    if rate is not None and not _max_rate_ok(rate):
        problems.append(f"{key}:copy_max_rate: {rate!r} is not a rate pg_basebackup takes: kB/s as a number, or "
                        "with k or M (e.g. 50M), from 32k to 1024M")  # fmt: skip
    overlap = sorted(set(dbs or []) & set(c.get("databases") or {})) if isinstance(dbs, list) else []
    if overlap:
        where = key.removesuffix(":migrate")
        problems.append(f"{key}:databases: {', '.join(overlap)} also in {where}:databases: declare a migrated "
                        "database there after its cutover")  # fmt: skip


def _package_version(pg: dict, problems: list[str]) -> None:
    """pgcluster:postgresql:package_version: empty, or a package version of the major version."""
    value, major = pg.get("package_version"), str(pg.get("version"))
    key = "pgcluster:postgresql:package_version"
    if value in ("", None):
        return
    if not isinstance(value, str):
        problems.append(f"{key}: {value!r} is not a string: quote it (a number loses digits: 15.20 reads as 15.2)")
    elif not re.fullmatch(rf"(\d+:)?{re.escape(major)}\.\d+([-+~][0-9A-Za-z.+~-]*)?", value):
        problems.append(f"{key}: {value!r} is not a package version of PostgreSQL {major} "
                        f"(e.g. '{major}.20-0+deb12u1'; a new major version is an upgrade of its own, not a "
                        "package change)")  # fmt: skip


def problems(model: dict) -> list[str]:
    """Return every problem of the merged model, each naming its pillar key (empty: valid)."""
    found: list[str] = []
    hosts = model.get("hosts")
    if not isinstance(hosts, dict):
        return ["pgcluster:hosts: must be a mapping of minion id to address"]
    for name, addr in hosts.items():
        try:
            if ipaddress.ip_address(str(addr)).version != 4:
                found.append(f"pgcluster:hosts:{name}: {addr!r}: {IPV4_ONLY}")
        except ValueError:
            found.append(f"pgcluster:hosts:{name}: {addr!r} is not an IP address")
    minions = model.get("minions")
    if minions:
        for name in hosts:
            if name not in minions:
                found.append(f"pgcluster:hosts:{name}: no minion with id {name!r} is known to the master")
    for key in ("port",):
        _port(model["postgresql"].get(key), f"pgcluster:postgresql:{key}", found)
    _package_version(model["postgresql"], found)
    _port(model["patroni"].get("restapi_port"), "pgcluster:patroni:restapi_port", found)
    _port(model["etcd"].get("client_port"), "pgcluster:etcd:client_port", found)
    _port(model["etcd"].get("peer_port"), "pgcluster:etcd:peer_port", found)
    beat, election = model["etcd"].get("heartbeat_interval"), model["etcd"].get("election_timeout")
    for key, value in (("heartbeat_interval", beat), ("election_timeout", election)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            found.append(f"pgcluster:etcd:{key}: {value!r} is not a number of milliseconds")
    if isinstance(beat, int) and isinstance(election, int) and beat > 0 and election < 5 * beat:
        found.append(f"pgcluster:etcd:election_timeout: {election} ms; etcd wants at least 5 heartbeats ({5 * beat})")
    pki = model["pki"]
    ca = pki.get("ca_minion")
    if pki.get("mode") not in ("salt", "pillar"):
        found.append(f"pgcluster:pki:mode: {pki.get('mode')!r} is not salt (a CA run by Salt) or pillar")
    elif pki["mode"] == "salt" and (not ca or ca not in hosts):
        found.append(f"pgcluster:pki:ca_minion: {ca!r} must be the minion that holds the CA key, listed in "
                     "pgcluster:hosts (e.g. the master's own minion)")  # fmt: skip
    for key in ("ca_days_valid", "days_valid", "days_remaining"):
        if isinstance(pki.get(key), bool) or not isinstance(pki.get(key), int) or pki[key] < 1:
            found.append(f"pgcluster:pki:{key}: {pki.get(key)!r} is not a number of days")
    if (
        isinstance(pki.get("days_remaining"), int)
        and isinstance(pki.get("days_valid"), int)
        and (pki["days_remaining"] >= pki["days_valid"])
    ):
        found.append(f"pgcluster:pki:days_remaining: {pki['days_remaining']} must be less than days_valid "
                     f"({pki['days_valid']}), or every highstate issues a new certificate")  # fmt: skip
    master = model.get("salt_master")
    if master and master not in hosts:
        found.append(f"pgcluster:salt_master: {master!r} is not listed in pgcluster:hosts (the master's own "
                     "minion: its address is let through to Patroni's REST API)")  # fmt: skip
    _validate_monitoring(model.get("monitoring"), found, hosts)
    if model["patroni"].get("install_from") not in ("pip", "debian"):
        found.append(f"pgcluster:patroni:install_from: {model['patroni'].get('install_from')!r} is not pip or debian")
    clusters = model.get("clusters")
    if not isinstance(clusters, dict):
        return [*found, "pgcluster:clusters: must be a mapping of cluster name to cluster"]
    for name, c in clusters.items():
        _validate_cluster(name, c, model, found)
    _validate_relations(model, clusters, found)
    mon = model.get("monitoring")
    if isinstance(mon, dict) and mon.get("enabled") and clusters and not monitoring_host(model):
        found.append("pgcluster:monitoring:host: no host to run Prometheus: name one, give a cluster a "
                     "backup host, or set pgcluster:monitoring:enabled: false")  # fmt: skip
    return found


# Prometheus durations (1m, 30s, 1h30m) and the kind of each alert threshold by its key's ending.
DURATION = re.compile(r"(\d+(ms|[smhdwy]))+")


def _validate_monitoring(mon: Any, problems: list[str], hosts: dict) -> None:
    if not isinstance(mon, dict):
        problems.append("pgcluster:monitoring: must be a mapping")
        return
    if not isinstance(mon.get("enabled"), bool):
        problems.append(f"pgcluster:monitoring:enabled: {mon.get('enabled')!r} is not true or false")
    if mon.get("host") and mon["host"] not in hosts:
        problems.append(f"pgcluster:monitoring:host: {mon['host']!r} is not listed in pgcluster:hosts")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(mon.get("role", ""))):
        problems.append(f"pgcluster:monitoring:role: {mon.get('role')!r} is not a plain PostgreSQL role name")
    if isinstance(mon.get("top_tables"), bool) or not isinstance(mon.get("top_tables"), int) or mon["top_tables"] < 1:
        problems.append(f"pgcluster:monitoring:top_tables: {mon.get('top_tables')!r} is not a positive number")
    types = mon.get("filesystem_types_exclude")
    if not isinstance(types, list) or not all(re.fullmatch(r"[a-z0-9_.]+", str(t)) for t in types):
        problems.append(f"pgcluster:monitoring:filesystem_types_exclude: {types!r} is not a list of filesystem "
                        "type names (e.g. [tmpfs, overlay])")  # fmt: skip
    if not re.fullmatch(r"\d+(us|ms|s|sec|min|h|d)?", str(mon.get("textfile_interval", ""))):
        problems.append(f"pgcluster:monitoring:textfile_interval: {mon.get('textfile_interval')!r} is not a "
                        "systemd time span such as 5min")  # fmt: skip
    for key in ("retention", "scrape_interval"):
        if not isinstance(mon.get(key), str) or not DURATION.fullmatch(mon[key]):
            problems.append(f"pgcluster:monitoring:{key}: {mon.get(key)!r} is not a duration such as 15s or 400d")
    for name, port in (mon.get("ports") or {}).items():
        _port(port, f"pgcluster:monitoring:ports:{name}", problems)
    receivers = mon.get("receivers") or {}
    for kind in ("webhook", "email"):
        if not isinstance(receivers.get(kind) or [], list):
            problems.append(f"pgcluster:monitoring:receivers:{kind}: must be a list")
    for url in receivers.get("webhook") or [] if isinstance(receivers.get("webhook"), list) else []:
        if not re.fullmatch(r"https?://\S+", str(url)):
            problems.append(f"pgcluster:monitoring:receivers:webhook: {url!r} is not an http(s) URL")
    mails = receivers.get("email") if isinstance(receivers.get("email"), list) else []
    for addr in mails:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", str(addr)):
            problems.append(f"pgcluster:monitoring:receivers:email: {addr!r} is not an e-mail address")
    smtp = mon.get("smtp") or {}
    if mails and not (smtp.get("smarthost") and smtp.get("from")):
        problems.append("pgcluster:monitoring:smtp: e-mail receivers need smarthost (host:port) and from")
    alerts = mon.get("alerts")
    if not isinstance(alerts, dict):
        problems.append("pgcluster:monitoring:alerts: must be a mapping of threshold to value")
        return
    for key, value in alerts.items():
        where = f"pgcluster:monitoring:alerts:{key}"
        if key.endswith(("_for", "_window")):
            if not isinstance(value, str) or not DURATION.fullmatch(value):
                problems.append(f"{where}: {value!r} is not a duration such as 30s, 5m or 1h")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"{where}: {value!r} is not a positive number")
        elif key.endswith("_ratio") and value >= 1:
            problems.append(f"{where}: {value!r} is a fraction: between 0 and 1")


def _listed(c: Any, key: str) -> list[str]:
    value = c.get(key) if isinstance(c, dict) else None
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _validate_relations(model: dict, clusters: dict, problems: list[str]) -> None:
    """What no single key shows: a host in two roles that cannot coexist, names and ports that clash."""
    by_address: dict[str, str] = {}
    for name, addr in model["hosts"].items():
        if str(addr) in by_address:
            problems.append(f"pgcluster:hosts:{name}: address {addr} is already {by_address[str(addr)]!r}'s")
        by_address.setdefault(str(addr), name)
    member_of: dict[str, str] = {}
    etcd_of: dict[str, str] = {}
    scopes: dict[str, str] = {}
    served: dict[tuple[str, str], str] = {}  # (PgBouncer host, database) -> cluster
    backups = {c.get("backup"): n for n, c in clusters.items() if isinstance(c, dict) and c.get("backup")}
    passphrase: dict[str, tuple[str, Any]] = {}  # backup host -> (cluster, passphrase)
    for name, c in clusters.items():
        if isinstance(c, dict) and c.get("backup") and isinstance(c.get("pgbackrest"), dict):
            first = passphrase.setdefault(c["backup"], (name, c["pgbackrest"].get("cipher_pass")))
            if first[1] != c["pgbackrest"].get("cipher_pass"):
                problems.append(f"pgcluster:clusters:{name}:pgbackrest:cipher_pass: the repository on "
                                f"{c['backup']!r} is also cluster {first[0]!r}'s: one repository, "
                                "one passphrase")  # fmt: skip
    for name, c in clusters.items():
        key = f"pgcluster:clusters:{name}"
        for m in _listed(c, "members"):
            if m in member_of:
                problems.append(f"{key}:members: {m!r} is already a member of cluster {member_of[m]!r}")
            member_of.setdefault(m, name)
            if m in backups and backups[m] != name:
                problems.append(f"{key}:members: {m!r} is the backup host of cluster {backups[m]!r}; "
                                "a backup host holds no database")  # fmt: skip
        for e in _listed(c, "etcd"):
            if e in etcd_of:
                problems.append(f"{key}:etcd: {e!r} already runs the etcd of cluster {etcd_of[e]!r}")
            etcd_of.setdefault(e, name)
        scope = str(c.get("scope", name)) if isinstance(c, dict) else name
        if scope in scopes:
            problems.append(f"{key}:scope: {scope!r} is already the scope of cluster {scopes[scope]!r}")
        scopes.setdefault(scope, name)
        dbs = c.get("databases") if isinstance(c, dict) and isinstance(c.get("databases"), dict) else {}
        for host in _listed(c, "pgbouncer"):
            for db in dbs:
                if (host, db) in served:
                    problems.append(f"{key}:databases:{db}: PgBouncer on {host!r} already routes {db!r} to cluster "
                                    f"{served[(host, db)]!r}")  # fmt: skip
                served.setdefault((host, db), name)
    ports = {
        "pgcluster:postgresql:port": model["postgresql"].get("port"),
        "pgcluster:patroni:restapi_port": model["patroni"].get("restapi_port"),
        "pgcluster:pgbouncer:port": model["pgbouncer"].get("port"),
        "pgcluster:etcd:client_port": model["etcd"].get("client_port"),
        "pgcluster:etcd:peer_port": model["etcd"].get("peer_port"),
        "pgcluster:pgbackrest:tls_port": model["pgbackrest"].get("tls_port"),
    }
    for name, c in clusters.items():
        if isinstance(c, dict) and "port" in c:
            ports[f"pgcluster:clusters:{name}:port"] = c["port"]

    def postgresql(key: str) -> bool:  # every cluster's PostgreSQL may use the same port
        return key == "pgcluster:postgresql:port" or key.startswith("pgcluster:clusters:")

    owner: dict[Any, str] = {}
    for key, port in ports.items():
        if port in owner and not (postgresql(key) and postgresql(owner[port])):
            problems.append(f"{key}: port {port} is already {owner[port]}")
        owner.setdefault(port, key)
    others = [(f"pgcluster:profiles:{n}:parameters", (p or {}).get("parameters")) for n, p in model["profiles"].items()]
    for key, value in [("pgcluster:postgresql:parameters", model["postgresql"].get("parameters")), *others]:
        if value is not None and not isinstance(value, dict):
            problems.append(f"{key}: must be a mapping of PostgreSQL parameter to value")


# ---- secrets by need --------------------------------------------------------------------------
def _needs(model: dict, minion_id: str) -> dict[str, set]:
    """What MINION_ID needs of each cluster's secrets: {cluster: {"passwords", "verifiers",
    "own_role_passwords", "cipher_pass", "replication_verifier"}}."""
    roles = node_roles(model, minion_id)
    out: dict[str, set] = {}
    for name in model["clusters"]:
        need = set()
        if roles["member"] == name:
            need |= {"passwords", "verifiers"}
        if name in roles["pgbouncer"]:
            need.add("verifiers")
            if roles["member"] != name:  # an application host: its own role's password (.pgpass)
                need.add("own_role_passwords")
        if name in roles["backup"]:
            need.add("cipher_pass")
        if name in roles["migrate_source"] and (model["clusters"][name].get("migrate") or {}).get("mode") == "physical":
            need.add("replication_verifier")  # the source of a physical migration: its standbys' role
        out[name] = need
    return out


def secret_problems(model: dict, minion_id: str | None = None) -> list[str]:
    """Every secret MINION_ID needs (None: every minion of the model) that is missing, named by key."""
    found = []
    hosts = list(model["hosts"]) if minion_id is None else [minion_id]
    needed: dict[str, set] = {}
    for h in hosts:
        for name, need in _needs(model, h).items():
            needed.setdefault(name, set()).update(need)
    for name, need in needed.items():
        c, key = model["clusters"][name], f"pgcluster:clusters:{name}"
        if "passwords" in need:
            pw = c.get("passwords") if isinstance(c.get("passwords"), dict) else {}
            found += [f"{key}:passwords:{w}: missing (superuser, replication, rewind and restapi are needed)"
                      for w in PASSWORDS if not pw.get(w)]  # fmt: skip
        owners = {(d or {}).get("owner") for d in (c.get("databases") or {}).values()}
        for role, spec in (c.get("roles") or {}).items():
            spec = spec or {}
            if not spec.get("login", True):
                continue
            lacks_verifier = "verifiers" in need and not (spec.get("password") or spec.get("verifier"))
            lacks_password = (
                "own_role_passwords" in need
                and role in owners
                and not spec.get("verifier")
                and not (spec.get("password"))
            )
            if lacks_verifier or lacks_password:
                found.append(f"{key}:roles:{role}:password: missing")
        if "cipher_pass" in need and not (c.get("pgbackrest") or {}).get("cipher_pass"):
            found.append(f"{key}:pgbackrest:cipher_pass: missing")
    return sorted(set(found), key=found.index)


def pillar_for(pillar: dict, minion_id: str) -> dict:
    """The ``pgcluster`` pillar of MINION_ID: the whole model, but of its secrets only those the
    minion's roles need. A database server gets its cluster's passwords; a PgBouncer host the
    roles' SCRAM verifiers (never their passwords); an application host also its own role's
    password; the backup host the repository passphrase; any other host (the master's minion)
    none. Raises ModelError naming every secret that is missing for some minion."""
    full = _plain(pillar or {})
    clusters = full.get("clusters") if isinstance(full.get("clusters"), dict) else {}
    shaped = {"hosts": full.get("hosts") or {}, "clusters": {n: c for n, c in clusters.items() if isinstance(c, dict)}}
    try:
        shaped["clusters"] = {n: {**c, "members": c.get("members") or [], "etcd": c.get("etcd") or []}
                              for n, c in shaped["clusters"].items()}  # fmt: skip
        found = secret_problems(shaped)
    except (TypeError, AttributeError, KeyError):
        found = []  # a malformed model: the minion's own validation names what is wrong
    if found:
        raise ModelError("invalid pgcluster pillar: " + "; ".join(found))
    out = copy.deepcopy(full)
    for name, c in (out.get("clusters") or {}).items():
        if not isinstance(c, dict):
            continue
        need = _needs(shaped, minion_id).get(name, set()) if minion_id in shaped["hosts"] else set()
        if "replication_verifier" in need and isinstance(c.get("migrate"), dict):
            replication = (c.get("passwords") or {}).get("replication")
            if replication:  # no plaintext: the source creates the role from the verifier alone
                c["migrate"]["replication_verifier"] = role_verifier(name, "replication", replication)
        if "passwords" not in need:
            c.pop("passwords", None)
        owners = {(d or {}).get("owner") for d in (c.get("databases") or {}).values() if isinstance(d, dict)}
        for role, spec in (c.get("roles") or {}).items():
            if not isinstance(spec, dict):
                continue
            password = spec.pop("password", None)
            if password and "verifiers" in need:
                spec["verifier"] = role_verifier(name, role, password)
            elif "verifiers" not in need:  # a role declared by its verifier (e.g. a migrated one)
                spec.pop("verifier", None)
            if password and "own_role_passwords" in need and role in owners:
                spec["password"] = password
        if "cipher_pass" not in need and isinstance(c.get("pgbackrest"), dict):
            c["pgbackrest"].pop("cipher_pass", None)
    pki = out.get("pki")
    if isinstance(pki, dict) and isinstance(pki.get("hosts"), dict):  # pki mode pillar: its own key only
        pki["hosts"] = {h: v for h, v in pki["hosts"].items() if h == minion_id}
    return out


def pki_problems(model: dict, minion_id: str) -> list[str]:
    """In pki mode pillar: the PEM material MINION_ID needs (the CA; its own certificate and key)."""
    pki = model["pki"]
    if pki.get("mode") != "pillar":
        return []
    found = []
    if "BEGIN CERTIFICATE" not in str(pki.get("ca", "")):
        found.append("pgcluster:pki:ca: missing (PEM text of the CA certificate)")
    if _has_role(model, minion_id):
        mine = (pki.get("hosts") or {}).get(minion_id) or {}
        if "BEGIN CERTIFICATE" not in str(mine.get("cert", "")):
            found.append(f"pgcluster:pki:hosts:{minion_id}:cert: missing (PEM text, CN={minion_id})")
        if "PRIVATE KEY" not in str(mine.get("key", "")):
            found.append(f"pgcluster:pki:hosts:{minion_id}:key: missing (PEM text)")
    return found


def pki_files(model: dict) -> dict[str, str]:
    """Where every host keeps the cluster's TLS material (the CA minion also its CA key)."""
    d = model["pki"]["dir"]
    return {"ca": f"{d}/ca.crt", "ca_key": f"{d}/ca.key", "cert": f"{d}/host.crt", "key": f"{d}/host.key"}


def _has_role(model: dict, minion_id: str) -> bool:
    roles = node_roles(model, minion_id)
    return bool(roles["member"] or roles["etcd"] or roles["pgbouncer"] or roles["backup"] or roles["monitored"]
                or roles["migrate_source"])  # fmt: skip


def host_certificate(model: dict, host: str) -> dict:
    """What HOST's certificate is made of (x509 arguments): signed by the CA, its CN (minion id)
    and subjectAltName (minion id, address), a server and client certificate. The CA minion's
    signing policy for HOST, the CA minion's own certificate and the check before the x509 state
    (``pgcluster_pki.certificate_current``) all take it from here."""
    f = pki_files(model)
    return {
        "signing_cert": f["ca"],
        "CN": host,
        "subjectAltName": f"DNS:{host}, IP:{model['hosts'][host]}",
        "basicConstraints": "critical, CA:false",
        "keyUsage": "critical, digitalSignature, keyEncipherment",
        "extendedKeyUsage": "serverAuth, clientAuth",
        "subjectKeyIdentifier": "hash",
        "authorityKeyIdentifier": "keyid:always",
        "days_valid": model["pki"]["days_valid"],
    }


def signing_policies(model: dict) -> dict[str, list[dict]]:
    """The CA minion's x509 signing policies: one per host with a role, which only that minion may
    use, with its CN (minion id) and subjectAltName (minion id, address) fixed: no host can get a
    certificate for another's name or address."""
    key = pki_files(model)["ca_key"]
    return {
        f"pgcluster-{host}": [{"minions": host}, {"signing_private_key": key},
                              *({k: v} for k, v in host_certificate(model, host).items())]
        for host in model["hosts"]
        if _has_role(model, host)
    }  # fmt: skip


def ca_pillar(pillar: dict, defaults: dict, minion_id: str) -> dict:
    """What the CA minion needs beside ``pgcluster`` in its pillar: the signing policies and the mine
    function that publishes the CA certificate. Empty for every other minion. DEFAULTS: the
    formula's defaults.yaml."""
    model = _merge(defaults.get("pgcluster", defaults), _plain(pillar or {}))
    if minion_id != model["pki"].get("ca_minion") or not isinstance(model.get("hosts"), dict):
        return {}
    return {
        "x509_signing_policies": signing_policies(model),
        "mine_functions": {"x509.get_pem_entries": [pki_files(model)["ca"]]},
    }


def validate(model: dict) -> dict:
    """Return MODEL when valid; raise ModelError listing every problem otherwise."""
    found = problems(model)
    if found:
        raise ModelError("invalid pgcluster pillar: " + "; ".join(found))
    return model


# ---- derive --------------------------------------------------------------------------------
def node_roles(model: dict, minion_id: str) -> dict:
    """Return what MINION_ID runs: {'member': cluster|None, 'etcd': cluster|None, 'pgbouncer': [clusters],
    'backup': [clusters], 'monitored': bool (node exporter), 'monitor': bool (Prometheus),
    'migrate_source': [clusters whose migrate block names it: it gets a host certificate]}."""
    roles: dict[str, Any] = {"member": None, "etcd": None, "pgbouncer": [], "backup": [], "migrate_source": []}
    # Monitoring: the node exporter on every host of the model; Prometheus on one of them.
    mon = model.get("monitoring") or {}
    roles["monitored"] = bool(mon.get("enabled")) and minion_id in (model.get("hosts") or {})
    roles["monitor"] = roles["monitored"] and minion_id == monitoring_host(model)
    for name, c in model["clusters"].items():
        if minion_id in c["members"]:
            roles["member"] = name
        if minion_id in c["etcd"]:
            roles["etcd"] = name
        if minion_id in c.get("pgbouncer", []):
            roles["pgbouncer"].append(name)
        if c.get("backup") == minion_id:
            roles["backup"].append(name)
        if isinstance(c.get("migrate"), dict) and c["migrate"].get("source") == minion_id:
            roles["migrate_source"].append(name)
    return roles


def monitoring_host(model: dict) -> str | None:
    """The minion that runs Prometheus and Alertmanager: pgcluster:monitoring:host, else the
    backup host of the first cluster (by name) that has one (None: no monitoring host)."""
    mon = model.get("monitoring") or {}
    if mon.get("host"):
        return mon["host"]
    clusters = model.get("clusters") or {}
    return next((c["backup"] for _, c in sorted(clusters.items()) if isinstance(c, dict) and c.get("backup")), None)


def prometheus_url(model: dict) -> str | None:
    """Base URL of the monitoring host's Prometheus (https), None without monitoring."""
    host = monitoring_host(model)
    if not (model.get("monitoring") or {}).get("enabled") or not host:
        return None
    return f"https://{model['hosts'][host]}:{model['monitoring']['ports']['prometheus']}"


def cluster(model: dict, name: str) -> dict:
    """Return cluster NAME with its defaults filled in (scope, port, profile settings)."""
    c = copy.deepcopy(model["clusters"][name])
    c["name"] = name
    c.setdefault("scope", name)
    c.setdefault("port", model["postgresql"]["port"])
    c.setdefault("client_networks", [])
    c.setdefault("pgbouncer", [])
    c.setdefault("roles", {})
    c.setdefault("databases", {})
    c["profile_settings"] = model["profiles"][c["profile"]]
    # Replicas that must be synchronous before the profile's promise holds (none: asynchronous).
    dcs = c["profile_settings"].get("dcs") or {}
    wanted = int(dcs.get("synchronous_node_count") or 1) if dcs.get("synchronous_mode") else 0
    c["sync_standbys"] = min(wanted, max(len(c.get("members") or []) - 1, 0))
    if c.get("backup"):
        b = c.get("pgbackrest") or {}
        defaults = model["pgbackrest"]
        c["pgbackrest"] = {
            **b,
            "stanza": c["scope"],
            "retention": {**defaults["retention"], **(b.get("retention") or {})},
            "schedule": {**defaults["schedule"], **(b.get("schedule") or {})},
        }
    return c


def etcd_endpoints(model: dict, name: str) -> list[str]:
    """host:port of every etcd member of cluster NAME (https, client certificates required)."""
    port = model["etcd"]["client_port"]
    return [f"{model['hosts'][m]}:{port}" for m in model["clusters"][name]["etcd"]]


def etcd_peers(model: dict, name: str) -> dict[str, str]:
    """{host: peer URL} of every etcd member of cluster NAME."""
    port = model["etcd"]["peer_port"]
    return {m: f"https://{model['hosts'][m]}:{port}" for m in model["clusters"][name]["etcd"]}


def firewall(model: dict, minion_id: str) -> list[dict]:
    """Ports of MINION_ID that only some hosts may reach: [{'name', 'ports', 'sources'}].

    etcd (client and peer) is open to the cluster's etcd and Patroni members (and the monitoring
    host) only; PostgreSQL to the members, the PgBouncer hosts and the declared client networks;
    Patroni's REST API to the members, the PgBouncer hosts, the Salt master and the monitoring
    host; every exporter to the monitoring host; Prometheus to the Salt master.
    """
    roles = node_roles(model, minion_id)
    mon = monitoring_host(model) if roles["monitored"] else None
    watcher = [mon] if mon else []  # Prometheus's host scrapes every exporter, Patroni and etcd
    ports = model["monitoring"]["ports"]
    rules = []
    if roles["etcd"]:
        c = cluster(model, roles["etcd"])
        hosts = list(dict.fromkeys(c["etcd"] + c["members"]))
        rules.append({
            "name": "etcd",
            "ports": [model["etcd"]["client_port"]],
            "sources": [model["hosts"][h] for h in dict.fromkeys(hosts + watcher)],  # /metrics
        })  # fmt: skip
        rules.append({"name": "etcd peers", "ports": [model["etcd"]["peer_port"]],
                      "sources": [model["hosts"][h] for h in hosts]})  # fmt: skip
    if roles["member"]:
        c = cluster(model, roles["member"])
        hosts = dict.fromkeys(c["members"] + c["pgbouncer"])
        rules.append({
            "name": "postgresql",
            "ports": [c["port"]],
            "sources": [model["hosts"][h] for h in hosts] + [str(n) for n in c["client_networks"]],
        })  # fmt: skip
        # Patroni's REST API: the members, the PgBouncer hosts (their start-up routing) and the
        # Salt master (the runners); nobody else.
        master = salt_master(model)
        hosts = dict.fromkeys(c["members"] + c["pgbouncer"] + ([master] if master else []) + watcher)
        rules.append({
            "name": "patroni",
            "ports": [model["patroni"]["restapi_port"]],
            "sources": [model["hosts"][h] for h in hosts],
        })  # fmt: skip
    # PgBouncer: the declared client networks (loopback is always open); nobody else.
    if roles["pgbouncer"]:
        nets = dict.fromkeys(str(n) for name in roles["pgbouncer"] for n in cluster(model, name)["client_networks"])
        rules.append({"name": "pgbouncer", "ports": [model["pgbouncer"]["port"]], "sources": list(nets)})
    # pgBackRest's TLS server: the repository host and the database servers reach each other.
    peers = pgbackrest_peers(model, minion_id)
    if peers:
        port = model["pgbackrest"]["tls_port"]
        rules.append({"name": "pgbackrest", "ports": [port], "sources": list(peers.values())})
    # Exporters: the monitoring host only.
    if mon:
        exporters = [ports["node"]] + [ports["postgres"]] * bool(roles["member"])
        exporters += [ports["pgbouncer"]] * bool(roles["pgbouncer"])
        rules.append({"name": "exporters", "ports": exporters, "sources": [model["hosts"][mon]]})
    # Prometheus: the Salt master (the runners' growth and status); Alertmanager: loopback only.
    if roles["monitor"]:
        master = salt_master(model)
        rules.append({"name": "prometheus", "ports": [ports["prometheus"]],
                      "sources": [model["hosts"][master]] if master else []})  # fmt: skip
        rules.append({"name": "alertmanager", "ports": [ports["alertmanager"]], "sources": []})
    return rules


def salt_master(model: dict) -> str | None:
    """The master's own minion (pgcluster:salt_master, else pki:ca_minion), when it is a model host."""
    master = model.get("salt_master") or model["pki"].get("ca_minion")
    return master if master in model["hosts"] else None


def pgbackrest_peers(model: dict, minion_id: str) -> dict[str, str]:
    """{minion id: address} of the hosts MINION_ID's pgBackRest talks to: the backup host of its
    cluster (a member), or the members of the clusters it backs up (a backup host)."""
    roles = node_roles(model, minion_id)
    peers = []
    if roles["member"] and model["clusters"][roles["member"]].get("backup"):
        peers.append(model["clusters"][roles["member"]]["backup"])
    for name in roles["backup"]:
        peers += model["clusters"][name]["members"]
    return {h: model["hosts"][h] for h in peers}


IDENT_MAP = "pgcluster-monitor"  # pg_ident.conf: the OS user prometheus logs in as the monitoring role


def pg_hba(model: dict, name: str) -> list[str]:
    """Least-privilege pg_hba rules for cluster NAME (first match wins; everything else rejected)."""
    c = cluster(model, name)
    p = model["patroni"]
    member_nets = [f"{model['hosts'][m]}/32" for m in c["members"]]
    rules = [
        # OS user postgres (Patroni itself, and root through 'su postgres') on the socket.
        f"local all {p['superuser']} peer",
    ]
    if model["monitoring"]["enabled"]:  # the PostgreSQL exporter, run by the OS user prometheus
        rules.append(f"local all {model['monitoring']['role']} peer map={IDENT_MAP}")
    rules += [
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]
    # Replication from the other members (TLS only), and from Patroni itself on the local socket
    # (it reads its own timeline: use_unix_socket_repl).
    rules.append(f"local replication {p['replication_user']} scram-sha-256")
    rules += [f"hostssl replication {p['replication_user']} {n} scram-sha-256" for n in member_nets]
    # pg_rewind reads from the new leader through the 'postgres' database.
    rules += [f"hostssl postgres {p['rewind_user']} {n} scram-sha-256" for n in member_nets]
    clients = [f"{model['hosts'][h]}/32" for h in c["pgbouncer"]] + [str(n) for n in c["client_networks"]]
    client_roles = ",".join(sorted(c["roles"])) or "nobody"
    # The databases being migrated in too: PgBouncer reaches them here from their cutover on.
    for db in sorted(set(c["databases"]) | set(migrated_sources(model, c))):
        for net in dict.fromkeys(clients):
            rules.append(f"hostssl {db} {client_roles} {net} scram-sha-256")
    # Anything else, TLS or not, is refused: a plaintext connection matches no hostssl line above.
    rules += ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject"]
    return rules


def dynamic_config(model: dict, name: str) -> dict:
    """Patroni's dynamic (DCS) configuration of cluster NAME: the profile's timing and durability,
    and the PostgreSQL parameters every member must share (defaults <- profile <- cluster)."""
    c = cluster(model, name)
    prof = c["profile_settings"]
    params = _merge(model["postgresql"]["parameters"], prof.get("parameters", {}))
    if c.get("backup"):
        # Only the leader archives (archive_mode on); archive-push is asynchronous (archive-async).
        params.update({
            "archive_mode": "on",
            "archive_command": f"{model['pgbackrest']['bin']} --stanza={c['scope']} archive-push %p",
            "archive_timeout": model["pgbackrest"]["archive_timeout"],
        })  # fmt: skip
    params = _merge(params, c.get("parameters", {}))
    return {
        **copy.deepcopy(prof["dcs"]),
        "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": params},
    }


def bootstrap_dcs(model: dict, name: str) -> dict:
    """The dynamic configuration cluster NAME is created with: the profile's, but never strict
    synchronous mode. Patroni 4.1.5 bootstraps a strict quorum cluster with the invalid
    ``synchronous_standby_names = 'ANY None (*)'``; the profile's strictness is PATCHed in once the
    replicas stream (``patroni-dynamic-config-applied``), before highstate reports ready."""
    return {**dynamic_config(model, name), "synchronous_mode_strict": False}


def data_dir(model: dict, name: str) -> str:
    """PostgreSQL's data directory for cluster NAME: never the distribution's own (Debian: 15/main)."""
    pg = model["postgresql"]
    return f"{pg['data_root']}/{pg['version']}/patroni-{cluster(model, name)['scope']}"


def physical_source(model: dict, c: dict) -> dict:
    """Where cluster C's standby cluster streams from during a physical migration: the source's
    address and port, and the replication slot made there for it."""
    m = c["migrate"]
    return {"host": model["hosts"][m["source"]], "port": int(m.get("port", 5432)), "slot": f"pgcluster_{c['scope']}",
            "max_rate": str(m["copy_max_rate"]) if m.get("copy_max_rate") is not None else None}  # fmt: skip


def patroni_config(model: dict, name: str, member: str, standby: dict | None = None) -> dict:
    """Patroni's config.yml for MEMBER of cluster NAME. With STANDBY (``physical_source``: a
    physical migration under way), the cluster bootstraps as a standby cluster of the source:
    the standby leader cloned by the formula's clone method (a Debian source keeps its
    postgresql.conf in /etc), the replicas by pg_basebackup from it, no pgBackRest (its stanza is
    the old system's)."""
    c = cluster(model, name)
    p = model["patroni"]
    pg = model["postgresql"]
    pw = c["passwords"]
    addr = model["hosts"][member]
    f = pki_files(model)
    # https only (plain http is refused); writes need the REST API's password.
    restapi = {
        "listen": f"{addr}:{p['restapi_port']}",
        "connect_address": f"{addr}:{p['restapi_port']}",
        "authentication": {"username": p["restapi_username"], "password": pw["restapi"]},
        "certfile": f["cert"],
        "keyfile": f["key"],
        "cafile": f["ca"],
    }
    # Replication and pg_rewind over TLS, the leader's certificate checked against its address.
    verify = {"sslmode": "verify-full", "sslrootcert": f["ca"]}
    conf = {
        "scope": c["scope"],
        "namespace": "/service/",
        "name": member,
        "restapi": restapi,
        "etcd3": {
            "hosts": etcd_endpoints(model, name),
            "protocol": "https",
            "cacert": f["ca"],
            "cert": f["cert"],
            "key": f["key"],
        },  # fmt: skip
        "ctl": {"cacert": f["ca"]},
        "bootstrap": {
            "dcs": bootstrap_dcs(model, name),
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{addr},127.0.0.1:{c['port']}",
            "connect_address": f"{addr}:{c['port']}",
            "data_dir": data_dir(model, name),
            "bin_dir": pg["bin_dir"],
            "pgpass": f"{p['config_dir']}/.pgpass",
            "use_unix_socket": True,
            "use_unix_socket_repl": True,
            "authentication": {
                "superuser": {"username": p["superuser"], "password": pw["superuser"]},
                "replication": {"username": p["replication_user"], "password": pw["replication"], **verify},
                "rewind": {"username": p["rewind_user"], "password": pw["rewind"], **verify},
            },
            "parameters": {
                "unix_socket_directories": pg["socket_dir"],
                "port": c["port"],
                "ssl": "on",
                "ssl_cert_file": f["cert"],
                "ssl_key_file": f["key"],
                "ssl_ca_file": f["ca"],
                "ssl_min_protocol_version": "TLSv1.2",
            },  # fmt: skip
            "pg_hba": pg_hba(model, name),
            "create_replica_methods": ["pgbackrest", "basebackup"] if c.get("backup") else ["basebackup"],
            "callbacks": {
                e: f"{p['callback']} {model['events_socket']}" for e in ("on_role_change", "on_start", "on_stop")
            },
            "basebackup": [{"checkpoint": "fast"}],
            "remove_data_directory_on_rewind_failure": True,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }
    if model["monitoring"]["enabled"]:
        conf["postgresql"]["pg_ident"] = [f"{IDENT_MAP} prometheus {model['monitoring']['role']}"]
    if c.get("backup"):
        bin_, stanza = model["pgbackrest"]["bin"], c["scope"]
        conf["postgresql"]["pgbackrest"] = {
            # --delta: a member's leftover data directory is reused (checksums), not copied again.
            "command": f"{bin_} --stanza={stanza} --delta --type=standby restore",
            "keep_data": True,
            "no_params": True,
        }
        conf["postgresql"]["recovery_conf"] = {"restore_command": f'{bin_} --stanza={stanza} archive-get %f "%p"'}
    if standby:
        conf["bootstrap"]["dcs"]["standby_cluster"] = {
            "host": standby["host"], "port": standby["port"], "primary_slot_name": standby["slot"],
            "create_replica_methods": ["clone_source"],
        }  # fmt: skip
        conf["postgresql"]["clone_source"] = {"command": f"{model['lib_dir']}/pgcluster-clone-source",
                                              "no_params": False, "keep_data": False}  # fmt: skip
        if standby.get("max_rate"):  # Patroni hands it to the method as --max_rate=<rate>
            conf["postgresql"]["clone_source"]["max_rate"] = standby["max_rate"]
        conf["postgresql"]["create_replica_methods"] = ["basebackup"]
        for key in ("pgbackrest", "recovery_conf"):
            conf["postgresql"].pop(key, None)
        # The cutover checksums every table on the standby leader while the frozen source's
        # autovacuum may still clean up: its feedback keeps those rows (no query cancelled).
        conf["postgresql"].setdefault("parameters", {})["hot_standby_feedback"] = "on"
    return conf


def _tls_files(model: dict, prefix: str) -> dict:
    f = pki_files(model)
    return {f"{prefix}-cert-file": f["cert"], f"{prefix}-key-file": f["key"], f"{prefix}-ca-file": f["ca"]}


def pgbackrest_config(model: dict, minion_id: str) -> dict:
    """pgbackrest.conf of MINION_ID as {section: {option: value or [values]}} (empty: no pgBackRest).

    The backup host holds the repository (and its passphrase) and knows every member of its
    clusters, so a backup finds the leader by itself after any failover. Peers are named by
    minion id (pgBackRest 2.45 checks the certificate's DNS names, not IP addresses; the
    formula puts the names in /etc/hosts). A database server
    knows only the repository host; both run pgBackRest's TLS server, each accepting only the
    other side's certificate (CN = minion id) for the cluster's stanza.
    """
    b = model["pgbackrest"]
    roles = node_roles(model, minion_id)
    if not pgbackrest_peers(model, minion_id):
        return {}
    common = {
        "log-path": b["log_path"],
        "log-level-file": "info",
        "compress-type": b["compress_type"],
        "compress-level": b["compress_level"],
        "process-max": b["process_max"],
        "tls-server-address": model["hosts"][minion_id],
        "tls-server-port": b["tls_port"],
        **_tls_files(model, "tls-server"),
    }
    conf: dict[str, dict] = {}
    if roles["backup"]:
        # One repository, one passphrase (validated): in [global], so that a plain `pgbackrest info`
        # reads every stanza, as a DBA types it.
        first = cluster(model, roles["backup"][0])
        conf["global"] = {
            **common,
            "repo1-path": b["repo_path"],
            "repo1-cipher-type": "aes-256-cbc",
            "repo1-cipher-pass": first["pgbackrest"]["cipher_pass"],
            "start-fast": "y",
            "tls-server-auth": [],
        }
        for name in roles["backup"]:
            c = cluster(model, name)
            stanza = c["pgbackrest"]["stanza"]
            conf["global"]["tls-server-auth"] += [f"{member}={stanza}" for member in c["members"]]
            section = {
                "repo1-retention-full": c["pgbackrest"]["retention"]["full"],
                "repo1-retention-diff": c["pgbackrest"]["retention"]["diff"],
            }
            for i, member in enumerate(c["members"], start=1):
                section.update({
                    f"pg{i}-host": member,
                    f"pg{i}-host-type": "tls",
                    f"pg{i}-host-port": b["tls_port"],
                    **_tls_files(model, f"pg{i}-host"),
                    f"pg{i}-path": data_dir(model, name),
                    f"pg{i}-port": c["port"],
                    f"pg{i}-socket-path": model["postgresql"]["socket_dir"],
                })  # fmt: skip
            conf[stanza] = section
    elif roles["member"] and model["clusters"][roles["member"]].get("backup"):
        c = cluster(model, roles["member"])
        stanza = c["pgbackrest"]["stanza"]
        conf["global"] = {
            **common,
            "repo1-host": c["backup"],
            "repo1-host-type": "tls",
            "repo1-host-port": b["tls_port"],
            **_tls_files(model, "repo1-host"),
            "spool-path": b["spool_path"],
            "archive-async": "y",
            "archive-push-queue-max": b["archive_push_queue_max"],
            "tls-server-auth": [f"{c['backup']}={stanza}"],
        }
        conf[stanza] = {
            "pg1-path": data_dir(model, roles["member"]),
            "pg1-port": c["port"],
            "pg1-socket-path": model["postgresql"]["socket_dir"],
        }
    return conf


def ini(sections: dict) -> str:
    """SECTIONS ({section: {option: value or [values]}}) as pgBackRest's ini text (lists repeat the key)."""
    lines = []
    for section, options in sections.items():
        lines += [f"[{section}]"]
        for key, value in options.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"{key}={v}")
        lines.append("")
    return "\n".join(lines)


# ---- SCRAM ---------------------------------------------------------------------------------
def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """Return PostgreSQL's SCRAM-SHA-256 verifier of PASSWORD (so plaintext never reaches the server)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def role_verifier(cluster_name: str, role: str, password: str) -> str:
    """The SCRAM verifier of ROLE in CLUSTER_NAME, the same on every host.

    The salt is derived from the cluster and role names, so that PgBouncer's auth_file and
    pg_authid hold the very same verifier: PgBouncer then logs into PostgreSQL with it and
    no host but the client ever holds the plaintext.
    """
    salt = hashlib.sha256(f"pgcluster/{cluster_name}/{role}".encode()).digest()[:16]
    return scram_verifier(password, salt)


def role_verifiers(model: dict, name: str) -> dict[str, str]:
    """{role: SCRAM verifier} of cluster NAME's login roles, from pillar's verifier or password."""
    out = {}
    for role, spec in (model["clusters"][name].get("roles") or {}).items():
        spec = spec or {}
        if spec.get("verifier"):
            out[role] = spec["verifier"]
        elif spec.get("password"):
            out[role] = role_verifier(name, role, spec["password"])
    return out


def scram_matches(password: str, verifier: str | None) -> bool:
    """True when VERIFIER (as stored in pg_authid) was made from PASSWORD."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$[^:]+:.+", verifier or "")
    if not m:
        return False
    expected = scram_verifier(password, base64.b64decode(m.group(2)), int(m.group(1)))
    return hmac.compare_digest(expected, verifier)


# ---- what one minion needs -------------------------------------------------------------------
def api_url(model: dict, member: str) -> str:
    """Base URL of MEMBER's Patroni REST API (https only, checked against the cluster's CA)."""
    return f"https://{model['hosts'][member]}:{model['patroni']['restapi_port']}"


def migrated_sources(model: dict, c: dict) -> dict[str, dict]:
    """{database: {"address", "port"}} of the databases cluster C is migrating in (either mode):
    PgBouncer routes them to their source until the cutover."""
    m = c.get("migrate") or {}
    if m.get("mode") not in ("logical", "physical"):
        return {}
    source = {"address": model["hosts"][m["source"]], "port": int(m.get("port", 5432))}
    return {db: dict(source) for db in m.get("databases") or []}


def routing(model: dict, name: str) -> dict:
    """What a PgBouncer host needs to route cluster NAME (no secret): the members' addresses and
    REST APIs, PostgreSQL's port, the databases (those being migrated in too, with their source
    in ``sources``), and where this PgBouncer keeps its files."""
    c = cluster(model, name)
    b = model["pgbouncer"]
    sources = migrated_sources(model, c)
    return {
        "cluster": name,
        "members": {m: {"address": model["hosts"][m], "api": api_url(model, m)} for m in c["members"]},
        "port": c["port"],
        "databases": sorted(set(c["databases"]) | set(sources)),
        "sources": sources,
        "conf_dir": b["conf_dir"],
        "path": f"{b['conf_dir']}/routing-{name}.ini",
        "admin_port": b["port"],
        "admin_socket_dir": model["postgresql"]["socket_dir"],
        "cafile": pki_files(model)["ca"],
    }


def derive(model: dict, minion_id: str, migrating: dict | None = None) -> dict:
    """Everything MINION_ID runs, derived once: its roles and each component's settings.
    MIGRATING: the minion's ``pgcluster_migrating`` grain, {cluster: source} of the physical
    migrations ``migrate.start`` has begun on it (the standby bootstrap is rendered only then:
    left in config.yml, a later re-bootstrap, e.g. a restore, would follow the source again)."""
    node = node_roles(model, minion_id)
    node["id"] = minion_id
    node["address"] = model["hosts"].get(minion_id)
    if node["member"]:
        c = model["clusters"][node["member"]]
        m = c.get("migrate") or {}
        running = m.get("mode") == "physical" and (migrating or {}).get(node["member"]) == m.get("source")
        standby = physical_source(model, c) if running else None
        node["patroni_config"] = patroni_config(model, node["member"], minion_id, standby=standby)
        node["dynamic_config"] = dynamic_config(model, node["member"])
        node["standby_of"] = m["source"] if running else None
    if node["etcd"]:
        node["etcd_endpoints"] = etcd_endpoints(model, node["etcd"])
        node["etcd_peers"] = etcd_peers(model, node["etcd"])
    node["pki"] = {
        "ca": minion_id == model["pki"]["ca_minion"],
        "host": _has_role(model, minion_id),
        "policy": f"pgcluster-{minion_id}",
        "files": pki_files(model),
    }
    node["pki"]["certificate"] = host_certificate(model, minion_id) if node["pki"]["host"] else {}
    node["firewall"] = firewall(model, minion_id)
    node["pgbackrest_peers"] = pgbackrest_peers(model, minion_id)
    node["pgbackrest_conf"] = ini(pgbackrest_config(model, minion_id))
    # pgBackRest runs as the repository's owner on a backup host, as postgres on a database server.
    node["pgbackrest_user"] = model["pgbackrest"]["repo_user"] if node["backup"] else "postgres"
    node["routing"] = {name: routing(model, name) for name in node["pgbouncer"]}
    node["verifiers"] = {name: role_verifiers(model, name) for name in node["pgbouncer"]}
    return node


def settings(defaults: dict, osfamilymap: dict, pillar: dict, grains: dict) -> dict:
    """The validated model (every cluster with its defaults filled in) plus ``node``: what the minion
    of GRAINS runs. Raises ModelError naming every problem of the pillar."""
    model = merge(defaults, osfamilymap, pillar, grains.get("os_family", ""))
    validate(model)
    found = secret_problems(model, grains["id"]) + pki_problems(model, grains["id"])
    if found:
        raise ModelError("invalid pgcluster pillar: " + "; ".join(found))
    model["clusters"] = {name: cluster(model, name) for name in model["clusters"]}
    model["node"] = derive(model, grains["id"], grains.get("pgcluster_migrating"))
    return model
