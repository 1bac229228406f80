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
    pg["packages"] = [str(p).replace("{version}", version) for p in pg.get("packages", [])]
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
        problems.append(f"{key}:pgbackrest: missing (needs at least cipher_pass)")
        return
    if not isinstance(b.get("cipher_pass"), str) or len(b["cipher_pass"]) < 20:
        problems.append(f"{key}:pgbackrest:cipher_pass: missing or shorter than 20 characters")
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
    if isinstance(c.get("etcd"), list) and (len(etcd) < 3 or len(etcd) % 2 == 0):
        problems.append(f"{key}:etcd: {len(etcd)} members; etcd needs an odd number, at least 3")
    if "pgbouncer" in c:
        _hostlist(c.get("pgbouncer"), f"{key}:pgbouncer", hosts, problems)
    profile = c.get("profile")
    if profile not in (model.get("profiles") or {}):
        known = ", ".join(sorted(model.get("profiles") or {}))
        problems.append(f"{key}:profile: unknown profile {profile!r} (known: {known})")
    _port(c.get("port", model["postgresql"]["port"]), f"{key}:port", problems)
    secrets = c.get("passwords")
    if not isinstance(secrets, dict):
        secrets = {}
        problems.append(f"{key}:passwords: missing (superuser, replication, rewind, restapi)")
    for which in ("superuser", "replication", "rewind", "restapi"):
        pw = secrets.get(which)
        if not isinstance(pw, str) or len(pw) < 12:
            problems.append(f"{key}:passwords:{which}: missing or shorter than 12 characters")
    for i, net in enumerate(c.get("client_networks") or []):
        try:
            ipaddress.ip_network(str(net))
        except ValueError:
            problems.append(f"{key}:client_networks[{i}]: {net!r} is not a network (e.g. 10.0.0.0/24)")
    roles = c.get("roles") or {}
    if not isinstance(roles, dict):
        problems.append(f"{key}:roles: must be a mapping of role name to settings")
        roles = {}
    for role, spec in roles.items():
        if not NAME.match(str(role)):
            problems.append(f"{key}:roles:{role}: not a valid role name")
        spec = spec or {}
        if spec.get("login", True) and (not isinstance(spec.get("password"), str) or len(spec["password"]) < 12):
            problems.append(f"{key}:roles:{role}:password: missing or shorter than 12 characters")
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


def problems(model: dict) -> list[str]:
    """Return every problem of the merged model, each naming its pillar key (empty: valid)."""
    found: list[str] = []
    hosts = model.get("hosts")
    if not isinstance(hosts, dict):
        return ["pgcluster:hosts: must be a mapping of minion id to address"]
    for name, addr in hosts.items():
        try:
            ipaddress.ip_address(str(addr))
        except ValueError:
            found.append(f"pgcluster:hosts:{name}: {addr!r} is not an IP address")
    minions = model.get("minions")
    if minions:
        for name in hosts:
            if name not in minions:
                found.append(f"pgcluster:hosts:{name}: no minion with id {name!r} is known to the master")
    for key in ("port",):
        _port(model["postgresql"].get(key), f"pgcluster:postgresql:{key}", found)
    _port(model["patroni"].get("restapi_port"), "pgcluster:patroni:restapi_port", found)
    _port(model["etcd"].get("client_port"), "pgcluster:etcd:client_port", found)
    _port(model["etcd"].get("peer_port"), "pgcluster:etcd:peer_port", found)
    if model["patroni"].get("install_from") not in ("pip", "debian"):
        found.append(f"pgcluster:patroni:install_from: {model['patroni'].get('install_from')!r} is not pip or debian")
    clusters = model.get("clusters")
    if not isinstance(clusters, dict):
        return [*found, "pgcluster:clusters: must be a mapping of cluster name to cluster"]
    seen: dict[str, str] = {}
    for name, c in clusters.items():
        _validate_cluster(name, c, model, found)
        members = c.get("members") if isinstance(c, dict) else None
        for m in members if isinstance(members, list) else []:
            if m in seen:
                found.append(f"pgcluster:clusters:{name}:members: {m!r} is already a member of cluster {seen[m]!r}")
            seen[m] = name
    return found


def tls_problems(model: dict, minion_id: str) -> list[str]:
    """Problems with the pgBackRest TLS material MINION_ID needs (each minion holds only its own key)."""
    if not pgbackrest_config(model, minion_id):
        return []
    tls = model["pgbackrest"].get("tls") or {}
    found = []
    if "BEGIN CERTIFICATE" not in str(tls.get("ca", "")):
        found.append("pgcluster:pgbackrest:tls:ca: missing (PEM text of the CA certificate)")
    mine = (tls.get("hosts") or {}).get(minion_id) or {}
    if "BEGIN CERTIFICATE" not in str(mine.get("cert", "")):
        found.append(f"pgcluster:pgbackrest:tls:hosts:{minion_id}:cert: missing (PEM text, CN={minion_id})")
    if "PRIVATE KEY" not in str(mine.get("key", "")):
        found.append(f"pgcluster:pgbackrest:tls:hosts:{minion_id}:key: missing (PEM text)")
    return found


def validate(model: dict) -> dict:
    """Return MODEL when valid; raise ModelError listing every problem otherwise."""
    found = problems(model)
    if found:
        raise ModelError("invalid pgcluster pillar: " + "; ".join(found))
    return model


# ---- derive --------------------------------------------------------------------------------
def node_roles(model: dict, minion_id: str) -> dict:
    """Return what MINION_ID runs: {'member': cluster|None, 'etcd': cluster|None, 'pgbouncer': [clusters]}."""
    roles: dict[str, Any] = {"member": None, "etcd": None, "pgbouncer": [], "backup": []}
    for name, c in model["clusters"].items():
        if minion_id in c["members"]:
            roles["member"] = name
        if minion_id in c["etcd"]:
            roles["etcd"] = name
        if minion_id in c.get("pgbouncer", []):
            roles["pgbouncer"].append(name)
        if c.get("backup") == minion_id:
            roles["backup"].append(name)
    return roles


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
    """host:port of every etcd member of cluster NAME."""
    port = model["etcd"]["client_port"]
    return [f"{model['hosts'][m]}:{port}" for m in model["clusters"][name]["etcd"]]


def firewall(model: dict, minion_id: str) -> list[dict]:
    """Ports of MINION_ID that only some hosts may reach: [{'name', 'ports', 'sources'}].

    etcd (client and peer) is open to the cluster's etcd and Patroni members only;
    PostgreSQL to the members, the PgBouncer hosts and the declared client networks.
    """
    roles = node_roles(model, minion_id)
    rules = []
    if roles["etcd"]:
        c = cluster(model, roles["etcd"])
        hosts = dict.fromkeys(c["etcd"] + c["members"])
        rules.append({
            "name": "etcd",
            "ports": [model["etcd"]["client_port"], model["etcd"]["peer_port"]],
            "sources": [model["hosts"][h] for h in hosts],
        })  # fmt: skip
    if roles["member"]:
        c = cluster(model, roles["member"])
        hosts = dict.fromkeys(c["members"] + c["pgbouncer"])
        rules.append({
            "name": "postgresql",
            "ports": [c["port"]],
            "sources": [model["hosts"][h] for h in hosts] + [str(n) for n in c["client_networks"]],
        })  # fmt: skip
    # pgBackRest's TLS server: the repository host and the database servers reach each other.
    peers = pgbackrest_peers(model, minion_id)
    if peers:
        port = model["pgbackrest"]["tls_port"]
        rules.append({"name": "pgbackrest", "ports": [port], "sources": list(peers.values())})
    return rules


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


def pg_hba(model: dict, name: str) -> list[str]:
    """Least-privilege pg_hba rules for cluster NAME (first match wins; everything else rejected)."""
    c = cluster(model, name)
    p = model["patroni"]
    member_nets = [f"{model['hosts'][m]}/32" for m in c["members"]]
    rules = [
        # OS user postgres (Patroni itself, and root through 'su postgres') on the socket.
        f"local all {p['superuser']} peer",
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]
    # Replication from the other members, and from Patroni itself (it reads its own timeline).
    rules.append(f"host replication {p['replication_user']} 127.0.0.1/32 scram-sha-256")
    rules += [f"host replication {p['replication_user']} {n} scram-sha-256" for n in member_nets]
    # pg_rewind reads from the new leader through the 'postgres' database.
    rules += [f"host postgres {p['rewind_user']} {n} scram-sha-256" for n in member_nets]
    clients = [f"{model['hosts'][h]}/32" for h in c["pgbouncer"]] + [str(n) for n in c["client_networks"]]
    client_roles = ",".join(sorted(c["roles"])) or "nobody"
    for db in sorted(c["databases"]):
        for net in dict.fromkeys(clients):
            rules.append(f"host {db} {client_roles} {net} scram-sha-256")
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


def data_dir(model: dict, name: str) -> str:
    """PostgreSQL's data directory for cluster NAME: never the distribution's own (Debian: 15/main)."""
    pg = model["postgresql"]
    return f"{pg['data_root']}/{pg['version']}/patroni-{cluster(model, name)['scope']}"


def patroni_config(model: dict, name: str, member: str) -> dict:
    """Patroni's config.yml for MEMBER of cluster NAME."""
    c = cluster(model, name)
    p = model["patroni"]
    pg = model["postgresql"]
    pw = c["passwords"]
    addr = model["hosts"][member]
    restapi = {
        "listen": f"{addr}:{p['restapi_port']}",
        "connect_address": f"{addr}:{p['restapi_port']}",
        "authentication": {"username": p["restapi_username"], "password": pw["restapi"]},
    }
    if p.get("restapi_certfile"):
        restapi["certfile"] = p["restapi_certfile"]
        restapi["keyfile"] = p["restapi_keyfile"]
        if p.get("restapi_cafile"):
            restapi["cafile"] = p["restapi_cafile"]
    conf = {
        "scope": c["scope"],
        "namespace": "/service/",
        "name": member,
        "restapi": restapi,
        "etcd3": {"hosts": etcd_endpoints(model, name)},
        "bootstrap": {
            "dcs": dynamic_config(model, name),
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{addr},127.0.0.1:{c['port']}",
            "connect_address": f"{addr}:{c['port']}",
            "data_dir": data_dir(model, name),
            "bin_dir": pg["bin_dir"],
            "pgpass": f"{p['config_dir']}/.pgpass",
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": p["superuser"], "password": pw["superuser"]},
                "replication": {"username": p["replication_user"], "password": pw["replication"]},
                "rewind": {"username": p["rewind_user"], "password": pw["rewind"]},
            },
            "parameters": {"unix_socket_directories": pg["socket_dir"], "port": c["port"]},
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
    if c.get("backup"):
        bin_, stanza = model["pgbackrest"]["bin"], c["scope"]
        conf["postgresql"]["pgbackrest"] = {
            # --delta: a member's leftover data directory is reused (checksums), not copied again.
            "command": f"{bin_} --stanza={stanza} --delta --type=standby restore",
            "keep_data": True,
            "no_params": True,
        }
        conf["postgresql"]["recovery_conf"] = {"restore_command": f'{bin_} --stanza={stanza} archive-get %f "%p"'}
    return conf


def _tls_files(model: dict, prefix: str) -> dict:
    d = model["pgbackrest"]["tls_dir"]
    return {
        f"{prefix}-cert-file": f"{d}/host.crt",
        f"{prefix}-key-file": f"{d}/host.key",
        f"{prefix}-ca-file": f"{d}/ca.crt",
    }


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
        conf["global"] = {
            **common,
            "repo1-path": b["repo_path"],
            "start-fast": "y",
            "tls-server-auth": [],
        }
        for name in roles["backup"]:
            c = cluster(model, name)
            stanza = c["pgbackrest"]["stanza"]
            conf["global"]["tls-server-auth"] += [f"{member}={stanza}" for member in c["members"]]
            section = {
                "repo1-cipher-type": "aes-256-cbc",
                "repo1-cipher-pass": c["pgbackrest"]["cipher_pass"],
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


def scram_matches(password: str, verifier: str | None) -> bool:
    """True when VERIFIER (as stored in pg_authid) was made from PASSWORD."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$[^:]+:.+", verifier or "")
    if not m:
        return False
    expected = scram_verifier(password, base64.b64decode(m.group(2)), int(m.group(1)))
    return hmac.compare_digest(expected, verifier)


# ---- what one minion needs -------------------------------------------------------------------
def api_url(model: dict, member: str) -> str:
    """Base URL of MEMBER's Patroni REST API (https when the model gives it a certificate)."""
    p = model["patroni"]
    scheme = "https" if p.get("restapi_certfile") else "http"
    return f"{scheme}://{model['hosts'][member]}:{p['restapi_port']}"


def routing(model: dict, name: str) -> dict:
    """What a PgBouncer host needs to route cluster NAME (no secret): the members' addresses and
    REST APIs, PostgreSQL's port, the databases, and where this PgBouncer keeps its files."""
    c = cluster(model, name)
    b = model["pgbouncer"]
    return {
        "cluster": name,
        "members": {m: {"address": model["hosts"][m], "api": api_url(model, m)} for m in c["members"]},
        "port": c["port"],
        "databases": sorted(c["databases"]),
        "conf_dir": b["conf_dir"],
        "path": f"{b['conf_dir']}/routing-{name}.ini",
        "admin_port": b["port"],
        "admin_socket_dir": model["postgresql"]["socket_dir"],
        "cafile": model["patroni"].get("restapi_cafile") or None,
    }


def derive(model: dict, minion_id: str) -> dict:
    """Everything MINION_ID runs, derived once: its roles and each component's settings."""
    node = node_roles(model, minion_id)
    node["id"] = minion_id
    node["address"] = model["hosts"].get(minion_id)
    if node["member"]:
        node["patroni_config"] = patroni_config(model, node["member"], minion_id)
        node["dynamic_config"] = dynamic_config(model, node["member"])
    if node["etcd"]:
        node["etcd_endpoints"] = etcd_endpoints(model, node["etcd"])
    node["firewall"] = firewall(model, minion_id)
    node["pgbackrest_peers"] = pgbackrest_peers(model, minion_id)
    node["pgbackrest_conf"] = ini(pgbackrest_config(model, minion_id))
    # pgBackRest runs as the repository's owner on a backup host, as postgres on a database server.
    node["pgbackrest_user"] = model["pgbackrest"]["repo_user"] if node["backup"] else "postgres"
    node["routing"] = {name: routing(model, name) for name in node["pgbouncer"]}
    node["verifiers"] = {
        name: {r: role_verifier(name, r, s["password"]) for r, s in model["clusters"][name]["roles"].items()
               if (s or {}).get("password")}
        for name in node["pgbouncer"]
    }  # fmt: skip
    return node


def settings(defaults: dict, osfamilymap: dict, pillar: dict, grains: dict) -> dict:
    """The validated model (every cluster with its defaults filled in) plus ``node``: what the minion
    of GRAINS runs. Raises ModelError naming every problem of the pillar."""
    model = merge(defaults, osfamilymap, pillar, grains.get("os_family", ""))
    validate(model)
    found = tls_problems(model, grains["id"])
    if found:
        raise ModelError("invalid pgcluster pillar: " + "; ".join(found))
    model["clusters"] = {name: cluster(model, name) for name in model["clusters"]}
    model["node"] = derive(model, grains["id"])
    return model
