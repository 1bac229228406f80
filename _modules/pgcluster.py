"""pgcluster on this minion: the validated data model and what this minion runs.

The model itself (merge, validate, derive) is the ``pgcluster_model`` custom util, shared with
the state modules and the runners; this module hands it this minion's pillar and grains.

CLI Example:

.. code-block:: bash

    salt pg1 pgcluster.roles
    salt '*' pgcluster.check
    salt pg1 pgcluster.etcd_members
"""

from __future__ import annotations

import json
import os
import re
import time

import salt.utils.yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster"
UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@_.-]*$")
# The formula's folder in the file roots (its map.jinja passes defaults.yaml itself).
FORMULA = "pgcluster"


def __virtual__():
    for util in ("pgcluster_model.settings", "pgcluster_monitoring.alert_rules"):
        if util not in __utils__:
            return (False, f"pgcluster: the {util.split('.')[0]} util is missing (run saltutil.sync_utils)")
    return __virtualname__


def _formula_yaml(name: str) -> dict:
    text = __salt__["cp.get_file_str"](f"salt://{FORMULA}/{name}")
    if not text:
        raise CommandExecutionError(f"pgcluster: salt://{FORMULA}/{name} is not in the file roots")
    return salt.utils.yaml.safe_load(text) or {}


def settings(defaults: dict | None = None, osfamilymap: dict | None = None) -> dict:
    """The validated model merged over DEFAULTS and OSFAMILYMAP (read from the formula when not
    given), with ``node``: what this minion runs. Used by the formula's map.jinja and by the
    execution modules; it holds the secrets this minion's pillar holds, so it is not meant for
    the command line (see ``roles`` and ``check``). Raises CommandExecutionError naming every
    problem of the pillar.

    CLI Example:

    .. code-block:: bash

        salt-call pgcluster.settings --out=quiet
    """
    if defaults is None:
        defaults = _formula_yaml("defaults.yaml")
    if osfamilymap is None:
        osfamilymap = _formula_yaml("osfamilymap.yaml")
    return __utils__["pgcluster_model.settings"](defaults, osfamilymap, __pillar__.get("pgcluster", {}), __grains__)


def pillar_for(model: dict, minion_id: str) -> dict:
    """MINION_ID's share of MODEL (the whole ``pgcluster`` pillar, secrets included): the model, but
    of its secrets only those the minion's roles need. For the pillar SLS that gives each minion its
    ``pgcluster`` key (rendered on the master); raises naming every secret that is missing.

    CLI Example:

    .. code-block:: bash

        # in a pillar SLS: pgcluster: {{ salt["pgcluster.pillar_for"](model, opts.id) | json }}
        salt-call pgcluster.pillar_for "$(cat model.json)" app1 --out=json
    """
    return __utils__["pgcluster_model.pillar_for"](model, minion_id)


def ca_pillar(model: dict, defaults: dict, minion_id: str) -> dict:
    """What the CA minion (``pki:ca_minion``) needs in its pillar beside ``pgcluster``: one x509
    signing policy per host (only that minion may use it; CN and subjectAltName fixed) and the
    mine function that publishes the CA certificate. Empty for every other minion. DEFAULTS: the
    formula's defaults.yaml.

    CLI Example:

    .. code-block:: bash

        # in a pillar SLS: {{ salt["pgcluster.ca_pillar"](model, defaults, opts.id) | yaml }}
        salt-call pgcluster.ca_pillar "$(cat model.json)" "$(cat defaults.json)" salt --out=yaml
    """
    return __utils__["pgcluster_model.ca_pillar"](model, defaults, minion_id)


def roles() -> dict:
    """What this minion runs: ``{'id', 'member', 'etcd', 'pgbouncer', 'backup'}`` (no secret).

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster.roles
    """
    node = settings()["node"]
    return {k: node[k] for k in ("id", "member", "etcd", "pgbouncer", "backup")}


def check() -> list[str]:
    """Every problem of the pgcluster pillar as this minion sees it, each naming its key; an empty
    list when the model is valid.

    CLI Example:

    .. code-block:: bash

        salt '*' pgcluster.check
    """
    try:
        settings()
    except CommandExecutionError as exc:
        return [p for p in str(exc).removeprefix("invalid pgcluster pillar: ").split("; ") if p]
    return []


def standby_cluster(cluster: str) -> dict:
    """When CLUSTER declares a physical migration and Patroni runs it now as a standby cluster of
    its source (after ``migrate.start``, until the cutover): {"source", "standby_leader"}; else
    {}. The states that need a leader (routing, pgBackRest's check) keep still meanwhile.

    CLI Example:

    .. code-block:: bash

        salt app1 pgcluster.standby_cluster main
    """
    model = settings()
    c = model["clusters"].get(cluster) or {}
    m = c.get("migrate") or {}
    if m.get("mode") != "physical":
        return {}
    apis = {x: __utils__["pgcluster_model.api_url"](model, x) for x in c["members"]}
    cafile = __utils__["pgcluster_model.pki_files"](model)["ca"]
    standby = __utils__["pgcluster_routing.standby_leader"](apis, cafile=cafile)
    return {"source": m["source"], "standby_leader": standby} if standby else {}


def _yaml(data: dict) -> str:
    return "# Managed by Salt (pgcluster formula).\n" + salt.utils.yaml.safe_dump(data, default_flow_style=False)


def alert_rules() -> str:
    """Prometheus's rule file for every cluster of the model (YAML text), thresholds from
    ``pgcluster:monitoring:alerts``.

    CLI Example:

    .. code-block:: bash

        salt backup pgcluster.alert_rules
    """
    return _yaml(__utils__["pgcluster_monitoring.alert_rules"](settings()))


def prometheus_config() -> str:
    """Prometheus's configuration (YAML text): every exporter, Patroni and etcd of every cluster,
    labelled with ``cluster`` and ``host``, over TLS with this host's certificate.

    CLI Example:

    .. code-block:: bash

        salt backup pgcluster.prometheus_config
    """
    model = settings()
    return _yaml(__utils__["pgcluster_monitoring.scrape_config"](model, model["node"]["pki"]["files"]))


def alertmanager_config() -> str:
    """Alertmanager's configuration (YAML text): the receivers of ``pgcluster:monitoring:receivers``.

    CLI Example:

    .. code-block:: bash

        salt backup pgcluster.alertmanager_config
    """
    return _yaml(__utils__["pgcluster_monitoring.alertmanager_config"](settings()))


# ---- etcd membership (the cluster's etcd hosts answer; TLS with this host's certificate) ----------
def _etcd_access(endpoints: list[str] | None, tls: dict | None) -> tuple[list[str], dict]:
    if endpoints and tls:
        return endpoints, tls
    node = settings()["node"]
    if not node.get("etcd_endpoints"):
        raise CommandExecutionError(f"pgcluster: {node['id']} runs no etcd of a cluster: name the endpoints")
    return endpoints or node["etcd_endpoints"], tls or node["pki"]["files"]


def _etcdctl(args: list[str], endpoints: list[str] | None, tls: dict | None, timeout: int = 5) -> dict:
    """etcdctl ARGS (JSON output) against ENDPOINTS (host:port; default: this host's cluster's)."""
    endpoints, tls = _etcd_access(endpoints, tls)
    cmd = [*__utils__["pgcluster_etcd.etcdctl_command"](endpoints, tls, timeout), "-w", "json", *args]
    res = __salt__["cmd.run_all"](cmd, env={"ETCDCTL_API": "3"}, python_shell=False, ignore_retcode=True)
    if res["retcode"] != 0:
        why = (res["stderr"] or res["stdout"]).strip().splitlines()
        raise CommandExecutionError(f"etcdctl {' '.join(args)}: {why[-1] if why else 'failed'}")
    return json.loads(res["stdout"] or "{}")


def _member(m: dict) -> dict:
    # A member publishes its client URLs when it starts (a raft write: a quorum was behind it).
    # Never started: no client URLs, and no name either when it was added (a founder of a new
    # cluster has its name from the initial cluster).
    return {"id": format(int(m["ID"]), "x"), "name": m.get("name", ""), "peer_urls": m.get("peerURLs", []),
            "started": bool(m.get("clientURLs"))}  # fmt: skip


def etcd_members(endpoints: list[str] | None = None, tls: dict | None = None) -> list[dict]:
    """The etcd cluster's members as ENDPOINTS (host:port; default: the etcd hosts of this host's
    cluster) list them: ``[{id (hex), name, peer_urls, started}]``. TLS: the ``ca``, ``cert`` and
    ``key`` files (default: this host's).

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster.etcd_members
    """
    return [_member(m) for m in _etcdctl(["member", "list"], endpoints, tls).get("members", [])]


def etcd_member_add(name: str, peer_url: str, endpoints: list[str] | None = None, tls: dict | None = None) -> list:
    """Add NAME (its etcd not started yet, its data directory empty) with PEER_URL to the running
    etcd cluster that ENDPOINTS reach; returns the members afterwards. NAME's etcd then starts with
    ``initial-cluster-state=existing``.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster.etcd_member_add app1 https://198.18.0.30:2380
    """
    _etcdctl(["member", "add", name, f"--peer-urls={peer_url}"], endpoints, tls)
    return etcd_members(endpoints, tls)


def etcd_member_remove(member_id: str, endpoints: list[str] | None = None, tls: dict | None = None) -> list[dict]:
    """Remove the member with MEMBER_ID (hex, as ``etcd_members`` shows it) from the etcd cluster
    that ENDPOINTS reach; returns the members afterwards.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster.etcd_member_remove 8e9e05c52164694d
    """
    if not isinstance(member_id, str) or not member_id.isalnum():
        raise CommandExecutionError(f"member_id={member_id!r}: not an etcd member id (hex, from etcd_members)")
    _etcdctl(["member", "remove", member_id], endpoints, tls)
    return etcd_members(endpoints, tls)


def etcd_retire(data_dir: str, service: str = "etcd") -> dict:
    """After this host was removed from its cluster's etcd: stop and disable SERVICE (etcd), and
    move its data directory DATA_DIR aside (a removed member must never start on it again; a host
    that joins later starts from an empty one). Returns what was done.

    CLI Example:

    .. code-block:: bash

        salt pg3 pgcluster.etcd_retire /var/lib/etcd/main
    """
    if not os.path.isabs(data_dir) or os.path.normpath(data_dir).count("/") < 2:
        raise CommandExecutionError(f"data_dir={data_dir!r}: not an etcd data directory (absolute, below a folder)")
    # One unit by its plain name: systemctl takes a glob (a masked value, '**********', stops all).
    if not isinstance(service, str) or not UNIT.match(service):
        raise CommandExecutionError(f"service={service!r}: not a systemd unit name")
    for fun in ("service.stop", "service.disable"):
        if __salt__[fun](service) is not True:
            raise CommandExecutionError(f"{fun} {service} failed")
    done = {"etcd": "stopped and disabled"}
    if os.path.isdir(data_dir):
        aside = f"{data_dir.rstrip('/')}.removed-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        os.rename(data_dir, aside)
        done["data_directory"] = f"moved to {aside}"
    return done
