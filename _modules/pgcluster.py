"""The pgcluster data model: merge, validate, and derive what each minion runs.

One pillar key, ``pgcluster``, describes every cluster. This module merges it over
the formula's defaults, validates it once (every message names the pillar key and the
problem), and derives from it everything the states need: this minion's roles, Patroni's
``config.yml``, pg_hba rules, the etcd member list. Nothing here talks to a service.
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

__virtualname__ = "pgcluster"

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # PostgreSQL identifiers we accept
SCOPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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
    return rules


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
    params = _merge(_merge(model["postgresql"]["parameters"], prof.get("parameters", {})), c.get("parameters", {}))
    return {
        **copy.deepcopy(prof["dcs"]),
        "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": params},
    }


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
    # Never the distribution's own cluster directory (Debian: 15/main).
    data_dir = f"{pg['data_root']}/{pg['version']}/patroni-{c['scope']}"
    return {
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
            "data_dir": data_dir,
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
            "create_replica_methods": ["basebackup"],
            "callbacks": {event: p["callback"] for event in ("on_role_change", "on_start", "on_stop")},
            "basebackup": [{"checkpoint": "fast"}],
            "remove_data_directory_on_rewind_failure": True,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


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


# ---- entry point for map.jinja ---------------------------------------------------------------
def settings(defaults: dict, osfamilymap: dict) -> dict:
    """Return the validated model plus ``node`` (this minion's roles). Raises ModelError."""
    model = merge(defaults, osfamilymap, __pillar__.get("pgcluster", {}), __grains__.get("os_family", ""))
    validate(model)
    model["node"] = node_roles(model, __grains__["id"])
    model["node"]["id"] = __grains__["id"]
    return model
