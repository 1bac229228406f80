"""Moving an existing PostgreSQL into a cluster: what stands in the way, one line per problem.

``problems`` judges a migration before anything is touched, from what the source says of itself
(``pgsql.survey`` on the source minion) and what the cluster offers (its major version, the
extensions and locales its members have, their free disk, the user tables it already holds).
Standard library only: the runner gathers, this decides, the unit tests feed it recorded facts.
"""

from __future__ import annotations

__virtualname__ = "pgcluster_migrate"
MODES = ("physical", "logical")
# Room a member needs beyond the source's size: WAL, the copy's own overhead.
DISK_MARGIN = 1.2
GB = 1024**3
# Server certificates PgBouncer can check: the one migrate.start lends (pgcluster's, signed by the
# cluster's CA); Debian's self-signed default, which it replaces while the migration runs.
LENT_CERT = "pgcluster-migrate.crt"
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"


def __virtual__():
    return __virtualname__


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _databases(migrate: dict, survey: dict) -> list[str]:
    """The databases the migration moves: the listed ones (logical), else all of the source's."""
    return list(migrate.get("databases") or []) or sorted(survey["databases"])


def problems(cluster: str, migrate: dict, survey: dict, target: dict) -> list[str]:
    """Every problem of migrating MIGRATE's source (SURVEY: ``pgsql.survey``) into CLUSTER, whose
    facts are TARGET: ``major`` (PostgreSQL major version), ``extensions`` (available on every
    member), ``locales`` (``locale -a`` common to the members), ``free`` ({member: bytes free where
    its data lives}), ``user_tables`` ({database: tables in user schemas} on the leader),
    ``role_digests`` ({role: SHA-256 of the verifier pillar declares for it}).
    Empty: nothing stands in the way."""
    mode, source = migrate.get("mode"), migrate.get("source")
    out: list[str] = []
    dbs = _databases(migrate, survey)
    moved = {d: survey["databases"][d] for d in dbs if d in survey["databases"]}
    for d in dbs:
        if d not in survey["databases"]:
            out.append(f"database {d} does not exist on {source} (it has: {', '.join(sorted(survey['databases']))})")
    if mode == "physical":
        if survey["major"] != target["major"]:
            out.append(f"{source} runs PostgreSQL {survey['major']}, {cluster} runs {target['major']}: a physical "
                       "migration needs the same major version (use mode logical)")  # fmt: skip
        if survey["wal_level"] == "minimal":
            out.append(f"{source} has wal_level=minimal: a standby needs replica (a restart of the source)")
        if survey["max_wal_senders"] < 1:
            out.append(f"{source} has max_wal_senders=0: a standby cannot stream from it")
        mine = target.get("standby_settings") or {}
        for setting, value in sorted((survey.get("standby_settings") or {}).items()):
            if setting in mine and mine[setting] < value:
                out.append(f"{source} has {setting}={value}, {cluster} {mine[setting]}: a standby of the source "
                           f"needs at least as much (set it in pgcluster:clusters:{cluster}:parameters)")  # fmt: skip
        for lib in survey.get("shared_preload_libraries") or []:
            if "shared_preload_libraries" in target and lib not in target["shared_preload_libraries"]:
                out.append(f"{source} preloads {lib} (shared_preload_libraries), {cluster} does not: its data may "
                           "need it (add it to the cluster's parameters)")  # fmt: skip
        held = {d: n for d, n in target["user_tables"].items() if n}
        if held:
            what = ", ".join(f"{d} ({n} tables)" for d, n in sorted(held.items()))
            out.append(f"{cluster} already holds user data ({what}): a physical migration replaces every member's "
                       "data; migrate into an empty cluster or use mode logical")  # fmt: skip
    elif mode == "logical":
        if survey["wal_level"] != "logical":
            out.append(f"{source} has wal_level={survey['wal_level']}: logical replication needs wal_level=logical "
                       "(a restart of the source)")  # fmt: skip
        free_slots = survey["max_replication_slots"] - survey["slots_used"]
        if free_slots < len(moved):
            out.append(f"{source} has {free_slots} free replication slots (max_replication_slots="
                       f"{survey['max_replication_slots']}): one per database is needed ({len(moved)})")  # fmt: skip
        if survey["max_wal_senders"] < len(moved):
            out.append(f"{source} has max_wal_senders={survey['max_wal_senders']}: one per database is needed "
                       f"({len(moved)})")  # fmt: skip
        for d, facts in sorted(moved.items()):
            for table in facts["no_key"]:
                out.append(f"database {d}: table {table} has no primary key or replica identity: logical "
                           "replication cannot carry its UPDATE and DELETE (add a key or REPLICA IDENTITY "
                           "FULL)")  # fmt: skip
            for table in facts["unlogged"]:
                out.append(f"database {d}: unlogged table {table} is not replicated (make it logged or leave it)")
            if facts["large_objects"]:
                out.append(f"database {d} has {facts['large_objects']} large objects: logical replication does not "
                           "carry them (use mode physical)")  # fmt: skip
            if facts["encoding"] != "UTF8":
                out.append(f"database {d} is encoded {facts['encoding']}: the cluster's databases are UTF8")
            if target["user_tables"].get(d):
                out.append(f"database {d} already holds {target['user_tables'][d]} tables on {cluster}")
    else:
        out.append(f"mode {mode!r}: must be physical or logical")
    # A physical migration moves every database of the source, listed or not.
    for d, facts in sorted((survey["databases"] if mode == "physical" else moved).items()):
        for ext in facts["extensions"]:
            if ext not in target["extensions"]:
                out.append(f"database {d} uses extension {ext}, which {cluster}'s members do not have (install its "
                           "package there)")  # fmt: skip
        for what in ("collate", "ctype"):
            locale = facts[what]
            if locale not in ("C", "POSIX") and _norm(locale) not in {_norm(x) for x in target["locales"]}:
                out.append(f"database {d} has LC_{what.upper()} {locale}, a locale {cluster}'s members lack")
    out += _role_problems(cluster, source, survey, target)
    if (
        mode in ("logical", "physical")
        and survey.get("ssl")
        and not survey.get("ssl_cert_file", "").endswith(LENT_CERT)
        and (survey.get("ssl_cert_file") != SNAKEOIL)
    ):
        out.append(f"{source} presents its own certificate ({survey['ssl_cert_file']}): the PgBouncer hosts, which "
                   f"route the databases to {source} until the cutover, check servers against {cluster}'s CA "
                   "(give the source a certificate from that CA, or Debian's snakeoil one, which migrate.start "
                   "replaces with the host's pgcluster certificate until the cutover)")  # fmt: skip
    need = sum(f["size"] for f in moved.values()) if mode == "logical" else survey["size"]
    for member, free in sorted(target["free"].items()):
        if free < need * DISK_MARGIN:
            out.append(f"{member}: {_gb(free)} free for data, the migration needs {_gb(need * DISK_MARGIN)} "
                       f"({_gb(need)} and 20 %)")  # fmt: skip
    return list(dict.fromkeys(out))


def _role_problems(cluster: str, source: str, survey: dict, target: dict) -> list[str]:
    """The source's application roles that could not log in through PgBouncer after the move.
    PgBouncer authenticates a client with the verifier declared in pillar and logs in to the
    server with the same proof, so the declared verifier must be the source's very own."""
    key = f"pgcluster:clusters:{cluster}:roles"
    declared = target.get("role_digests") or {}
    out = []
    for role, digest in sorted((survey.get("role_digests") or {}).items()):
        if not digest:
            out.append(f"role {role} has no password on {source}: it cannot log in through PgBouncer (give it "
                       "one there, or make it NOLOGIN)")  # fmt: skip
        elif role not in declared:
            out.append(f"role {role} is not declared in {key}: it could not log in through PgBouncer (declare it "
                       f"with verifier: its rolpassword in {source}'s pg_authid)")  # fmt: skip
        elif declared[role] != digest:
            out.append(
                f"role {role}: the verifier {key}:{role} declares is not {source}'s (PgBouncer logs in with "
                f"the very same one on both sides: declare verifier: its rolpassword in {source}'s pg_authid)"
            )
    return out


def _norm(locale: str) -> str:
    """en_US.UTF-8 and en_US.utf8 are one locale to glibc."""
    return locale.lower().replace("-", "")
