"""What the monitoring host watches: Prometheus alert rules generated from the model.

Thresholds come from ``pgcluster:monitoring:alerts`` (defaults.yaml, pillar.example). Every
series carries the target labels the scrape configuration gives it: ``cluster`` (the pgcluster
cluster) and ``host`` (the minion id). Metric names are those of the exporters as Debian ships
them and of Patroni's own ``/metrics``:

- Patroni: ``patroni_postgres_running``, ``patroni_primary``, ``patroni_replica``,
  ``patroni_xlog_location`` (leader only), ``patroni_xlog_replayed_location`` (replicas only),
  ``patroni_sync_standby``, ``patroni_quorum_standby``;
- etcd: ``etcd_server_has_leader``;
- node exporter: ``node_filesystem_avail_bytes``, ``node_filesystem_size_bytes``;
- pgcluster's PgBouncer exporter (salt/pgcluster/monitoring/files/pgbouncer-exporter.py):
  ``pgbouncer_waiting_clients``;
- pgcluster's own queries for the PostgreSQL exporter (``pgcluster_database_xid_age``,
  ``pgcluster_connections_used``/``_max``, ``pgcluster_archiver_failing``) and the pgBackRest
  facts the backup host writes for the node exporter's textfile collector
  (``pgcluster_pgbackrest_last_backup_timestamp_seconds{stanza,type}``).

Each rule has promtool test cases in test/unit/promtool/ (fires, and stays quiet).
"""

from __future__ import annotations

from typing import Any

__virtualname__ = "pgcluster_monitoring"
XID_LIMIT = 2**31  # transaction ids before wraparound


def __virtual__():
    return __virtualname__


def _rule(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ and for_ != "0s":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary}
    return rule


def _strict_clusters(model: dict) -> list[str]:
    """Clusters whose profile blocks writes without a synchronous standby (strict mode)."""
    out = []
    for name, c in sorted((model.get("clusters") or {}).items()):
        prof = (model.get("profiles") or {}).get(c.get("profile"), {})
        dcs = prof.get("dcs") or {}
        if dcs.get("synchronous_mode") and dcs.get("synchronous_mode_strict"):
            out.append(name)
    return out


def alert_rules(model: dict) -> dict[str, Any]:
    """The Prometheus rule file (as data) for every cluster of MODEL.

    CLI Example (through the execution module that renders it):

    .. code-block:: bash

        salt monitor pgcluster.alert_rules
    """
    a = model["monitoring"]["alerts"]
    rules = [
        _rule("PgclusterMemberDown",
              '(up{job="patroni"} == 0) or on (cluster, host) (patroni_postgres_running == 0)',
              a["member_down_for"], "critical",
              "{{ $labels.host }} of cluster {{ $labels.cluster }}: Patroni or PostgreSQL is down"),
        _rule("PgclusterNoLeader", "max by (cluster) (patroni_primary) < 1", a["no_leader_for"], "critical",
              "cluster {{ $labels.cluster }} has no leader: writes fail"),
        _rule("PgclusterReplicationLag",
              "max by (cluster) (patroni_xlog_location) - on (cluster) group_right() "
              "(patroni_xlog_replayed_location and on (cluster, host) (patroni_replica == 1)) "
              f"> {int(a['replication_lag_bytes'])}",
              a["replication_lag_for"], "warning",
              "{{ $labels.host }} replays {{ $value | humanize1024 }}B behind the leader of {{ $labels.cluster }}"),
        _rule("PgclusterEtcdNoLeader", "etcd_server_has_leader == 0", a["etcd_no_leader_for"], "critical",
              "etcd on {{ $labels.host }} ({{ $labels.cluster }}) sees no etcd leader: Patroni cannot keep its lock"),
        _rule("PgclusterArchivingFailing", "pgcluster_archiver_failing == 1", a["archiving_failing_for"], "critical",
              "WAL archiving of {{ $labels.cluster }} fails on {{ $labels.host }}: point-in-time restore is at risk"),
        _rule("PgclusterBackupTooOld",
              f"time() - max by (cluster, stanza) (pgcluster_pgbackrest_last_backup_timestamp_seconds) "
              f"> {int(float(a['backup_max_age_hours']) * 3600)}",
              "0s", "warning",
              f"the last backup of {{{{ $labels.stanza }}}} is older than {a['backup_max_age_hours']} h"),
        _rule("PgclusterFilesystemFullSoon",
              f"predict_linear(node_filesystem_avail_bytes{{fstype!~\"tmpfs|overlay|squashfs\"}}"
              f"[{a['filesystem_trend_window']}], {int(float(a['filesystem_full_days']) * 86400)}) < 0",
              a["filesystem_full_for"], "warning",
              f"{{{{ $labels.mountpoint }}}} on {{{{ $labels.host }}}} is predicted full within "
              f"{a['filesystem_full_days']} days"),
        _rule("PgclusterXidWraparound",
              "max by (cluster, host, datname) (pgcluster_database_xid_age) "
              f"> {int(float(a['xid_age_ratio']) * XID_LIMIT)}",
              "0s", "critical",
              "database {{ $labels.datname }} on {{ $labels.host }} is {{ $value }} transactions old: vacuum it"),
        _rule("PgclusterConnectionsNearLimit",
              "pgcluster_connections_used / on (cluster, host) pgcluster_connections_max "
              f"> {float(a['connections_ratio'])}",
              a["connections_for"], "warning",
              "{{ $labels.host }} uses {{ $value | humanizePercentage }} of max_connections"),
        _rule("PgclusterClientsWaiting", "sum by (cluster, host, database) (pgbouncer_waiting_clients) > 0",
              a["clients_waiting_for"], "warning",
              "{{ $value }} clients of {{ $labels.database }} wait in PgBouncer on {{ $labels.host }}"),
    ]  # fmt: skip
    strict = _strict_clusters(model)
    if strict:
        sel = "|".join(strict)
        rules.append(_rule(
            "PgclusterNoSynchronousStandby",
            f'sum by (cluster) (patroni_sync_standby{{cluster=~"{sel}"}}) '
            f'+ sum by (cluster) (patroni_quorum_standby{{cluster=~"{sel}"}}) < 1',
            a["no_sync_standby_for"], "critical",
            "cluster {{ $labels.cluster }} has no synchronous standby: its durable profile blocks every "
            "commit"))  # fmt: skip
    return {"groups": [{"name": "pgcluster", "rules": rules}]}


def _targets(model: dict, hosts: dict[str, str | None], port: int) -> list[dict]:
    """static_configs: one per host, labelled with its minion id and its cluster (when it has one)."""
    out = []
    for host, cluster in sorted(hosts.items()):
        labels = {"host": host, **({"cluster": cluster} if cluster else {})}
        out.append({"targets": [f"{model['hosts'][host]}:{port}"], "labels": labels})
    return out


def scrape_config(model: dict, tls: dict[str, str]) -> dict[str, Any]:
    """Prometheus's configuration (as data) for every cluster of MODEL; TLS holds the monitoring
    host's ``ca``, ``cert`` and ``key`` paths (the exporters, Patroni's REST API and etcd are https,
    etcd wants a client certificate)."""
    mon, ports = model["monitoring"], model["monitoring"]["ports"]
    members, etcd, pgbouncers, every = {}, {}, {}, {}
    for name, c in sorted(model["clusters"].items()):
        for h in c.get("members") or []:
            members[h] = every[h] = name
        for h in c.get("etcd") or []:
            etcd.setdefault(h, name)
            every.setdefault(h, name)
        for h in c.get("pgbouncer") or []:
            pgbouncers.setdefault(h, name)
            every.setdefault(h, name)
        if c.get("backup"):
            every.setdefault(c["backup"], name)
    for h in model["hosts"]:
        every.setdefault(h, None)
    ca = {"ca_file": tls["ca"]}
    # Every exporter serves TLS with its host's certificate.
    jobs = [
        {"job_name": "node", "scheme": "https", "tls_config": ca,
         "static_configs": _targets(model, every, ports["node"])},
        {"job_name": "postgres", "scheme": "https", "tls_config": ca,
         "static_configs": _targets(model, members, ports["postgres"])},
        {"job_name": "patroni", "scheme": "https", "tls_config": ca,
         "static_configs": _targets(model, members, model["patroni"]["restapi_port"])},
        {"job_name": "etcd", "scheme": "https",
         "tls_config": {**ca, "cert_file": tls["cert"], "key_file": tls["key"]},
         "static_configs": _targets(model, etcd, model["etcd"]["client_port"])},
        {"job_name": "pgbouncer", "scheme": "https", "tls_config": ca,
         "static_configs": _targets(model, pgbouncers, ports["pgbouncer"])},
    ]  # fmt: skip
    return {
        "global": {"scrape_interval": mon["scrape_interval"], "evaluation_interval": mon["scrape_interval"]},
        "rule_files": [mon["rules_file"]],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [j for j in jobs if j["static_configs"]],
    }


def alertmanager_config(model: dict) -> dict[str, Any]:
    """Alertmanager's configuration (as data): every pgcluster alert to the receivers of
    pgcluster:monitoring:receivers (webhooks, e-mail through smtp:smarthost), grouped by alert and
    cluster; with no receiver configured, alerts are kept in Alertmanager only (its UI, amtool)."""
    mon = model["monitoring"]
    hooks = [{"url": u, "send_resolved": True} for u in mon["receivers"].get("webhook") or []]
    mails = [{"to": a, "send_resolved": True} for a in mon["receivers"].get("email") or []]
    receiver: dict[str, Any] = {"name": "pgcluster"}
    if hooks:
        receiver["webhook_configs"] = hooks
    if mails:
        receiver["email_configs"] = mails
    conf: dict[str, Any] = {
        "route": {"receiver": "pgcluster", "group_by": ["alertname", "cluster"], "group_wait": "30s",
                  "group_interval": "5m", "repeat_interval": mon["repeat_interval"]},
        "receivers": [receiver],
        # A member down says why its cluster has no synchronous standby: the first is enough.
        "inhibit_rules": [{"source_matchers": ["alertname = PgclusterMemberDown"],
                           "target_matchers": ["alertname = PgclusterNoSynchronousStandby"], "equal": ["cluster"]}],
    }  # fmt: skip
    if mails:
        conf["global"] = {"smtp_smarthost": mon["smtp"]["smarthost"], "smtp_from": mon["smtp"]["from"],
                          "smtp_require_tls": True}  # fmt: skip
    return conf
