"""Both ends of a logical migration into a pgcluster cluster; ``salt-run migrate.*`` calls these.

On the source (a standalone PostgreSQL on its minion), ``source_open`` lets the cluster's members
in: a role without a password (``pgcluster_migrate``: LOGIN, REPLICATION, pg_read_all_data),
certificate authentication from the members' addresses only (a block between markers at the top
of pg_hba.conf and in pg_ident.conf: a member's certificate, its CN the minion id, maps to the
role), the cluster's CA to check those certificates, and a publication of every table per moved
database. ``source_close`` takes all of it back. No password exists anywhere: nothing secret
travels through Salt.

On the cluster's leader, ``subscribe`` creates the source's roles (without their passwords), the
databases and their schema (``pg_dump --schema-only`` from the source) and one subscription per
database, which copies every table and then streams changes; the members check the source's own
certificate, pinned. ``unsubscribe`` drops what ``subscribe`` created. ``progress`` and
``source_progress`` read the copy and the lag at each end.

CLI Example:

.. code-block:: bash

    salt legacy pgmigrate.source_progress
    salt pg1 pgmigrate.progress databases='[shop]'
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
import time
from collections.abc import Callable
from typing import Any

import salt.utils.files
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgmigrate"
ROLE = "pgcluster_migrate"
MAP = "pgcluster-migrate"
PUBLICATION = "pgcluster_migrate"
BEGIN = ("# BEGIN pgcluster migrate: members of the cluster copying this server, its PgBouncer hosts "
         "(migrate.abort removes it)")  # fmt: skip
END = "# END pgcluster migrate"
# The cutover's freeze: clients refused at the top of pg_hba.conf (the migration's own sessions and
# the local superuser excepted) until pgmigrate.thaw; it stays after a cutover.
FROZEN_BEGIN = ("# BEGIN pgcluster frozen: its databases moved into a pgcluster cluster, clients refused "
                "(pgmigrate.thaw lets them in again)")  # fmt: skip
FROZEN_END = "# END pgcluster frozen"
FROZEN_DATABASES = "# refused: "  # the frozen block's first line: which databases (JSON, or "all")
SNAKEOIL = "/etc/ssl/certs/ssl-cert-snakeoil.pem"  # Debian's default server certificate (ssl-cert)
# Whether the server's new sessions are read-only (the configured value: the migration's own
# sessions override it, see _q).
READ_ONLY = "SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_read_only'"
# The databases made read-only by ALTER DATABASE (a logical migration's freeze).
DATABASES_READ_ONLY = ("SELECT d.datname FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                       "WHERE s.setrole = 0 AND 'default_transaction_read_only=on' = ANY (s.setconfig)")  # fmt: skip
# A subscription's state per table (pg_subscription_rel.srsubstate).
TABLE_STATES = {"i": "initializing", "d": "copying", "f": "copied", "s": "synchronized", "r": "ready"}


def __virtual__():
    if "pgsql.query" not in __salt__:
        return (False, "pgmigrate: the pgsql execution module is not available (psql missing?)")
    return __virtualname__


def _q(sql: str, port: int, dbname: str = "postgres", names: bool = False, timeout: float = 60) -> list:
    """Rows of SQL in DBNAME; the migration's own sessions write even on a frozen source."""
    sql = f"SET default_transaction_read_only = off;\n{sql}"
    return __salt__["pgsql.query"](sql, dbname=dbname, port=port, names=names, timeout=timeout)


def _until(ready: Callable[[], Any], wait: float, interval: float) -> bool:
    """Call READY every INTERVAL seconds until it answers true (True) or WAIT seconds passed (False)."""
    deadline = time.monotonic() + wait
    while not ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _lit(value: Any) -> str:
    return __salt__["pgsql.literal"](str(value))


def _ident(value: Any) -> str:
    return __salt__["pgsql.ident"](str(value))


def subscription(db: str) -> str:
    """The name of the subscription (and of its slot on the source) that carries database DB.

    CLI Example:

    .. code-block:: bash

        salt-call pgmigrate.subscription shop
    """
    return f"{PUBLICATION}_{db}"[:63]


# ---- the source ---------------------------------------------------------------------------------
def _write_block(path: str, lines: list[str], top: bool, begin: str = BEGIN, end: str = END) -> None:
    """Put LINES between the markers BEGIN and END in the file at PATH (at its top when TOP, else
    its end), replacing an earlier block; no LINES: remove the block. Owner and mode are kept; a
    file that would not change is not written."""
    with salt.utils.files.fopen(path, encoding="utf-8") as f:
        old = f.read()
    kept, inside = [], False
    for line in old.splitlines():
        if line == begin:
            inside = True
        elif line == end:
            inside = False
        elif not inside:
            kept.append(line)
    block = [begin, *lines, end] if lines else []
    new = "\n".join(block + kept if top else kept + block) + "\n"
    if new == old:
        return
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pgcluster-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _reload(port: int) -> None:
    """Reload the server's configuration; CommandExecutionError naming the first bad pg_hba line."""
    _q("SELECT pg_reload_conf()", port)
    bad = _q("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL LIMIT 1", port)
    if bad:
        raise CommandExecutionError(f"pg_hba.conf line {bad[0][0]}: {bad[0][1]}")


def _own_tls_files(hba: str) -> tuple[str, str]:
    """Where this server keeps the host certificate and key that ``source_open`` lends it."""
    d = os.path.dirname(hba)
    return os.path.join(d, "pgcluster-migrate.crt"), os.path.join(d, "pgcluster-migrate.key")


def _lend_tls(hba: str, cert: str, key: str, port: int) -> None:
    """Turn TLS on with this host's pgcluster certificate: copies owned by the server's user (it
    may not read the originals), set by ALTER SYSTEM, reloaded; CommandExecutionError when the
    server does not take it."""
    own_cert, own_key = _own_tls_files(hba)
    st = os.stat(hba)
    for src, dst, mode in ((cert, own_cert, 0o644), (key, own_key, 0o600)):
        with salt.utils.files.fopen(src, "rb") as f:
            data = f.read()
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, mode)
    _q(f"ALTER SYSTEM SET ssl_cert_file = {_lit(own_cert)}", port)
    _q(f"ALTER SYSTEM SET ssl_key_file = {_lit(own_key)}", port)
    _q("ALTER SYSTEM SET ssl = on", port)
    _q("SELECT pg_reload_conf()", port)
    for _ in range(50):  # the postmaster applies a reload asynchronously
        if _q("SELECT current_setting('ssl'), current_setting('ssl_cert_file')", port)[0] == ["on", own_cert]:
            return
        time.sleep(0.1)
    raise CommandExecutionError("this server did not turn TLS on with its pgcluster certificate (see its log)")


def _return_tls(hba: str, port: int) -> None:
    """Undo ``_lend_tls`` when it was done: the settings reset, the copies removed."""
    own_cert, own_key = _own_tls_files(hba)
    if _q("SELECT current_setting('ssl_cert_file')", port)[0][0] == own_cert:
        for name in ("ssl", "ssl_cert_file", "ssl_key_file"):
            _q(f"ALTER SYSTEM RESET {name}", port)
        _q("SELECT pg_reload_conf()", port)
        time.sleep(0.5)  # the postmaster stops using the files before they go
    for path in (own_cert, own_key):
        if os.path.exists(path):
            os.unlink(path)


def source_open(
    members: dict, databases: list, ca_file: str, cert: str, key: str, port: int = 5432, routers: dict | None = None
) -> dict:
    """Let MEMBERS ({minion id: address}) copy DATABASES from this server: the migration role,
    certificate authentication from those addresses (checked against CA_FILE, the cluster's CA),
    a publication of all tables per database; let ROUTERS ({minion id: address}: the cluster's
    PgBouncer hosts, which send DATABASES here until the cutover) log in to DATABASES over TLS
    with scram-sha-256. A server without TLS gets it, with this host's pgcluster certificate CERT
    and key KEY. Idempotent. Returns how the members check this server: its own certificate
    (PEM, public: they pin it), or None when it presents the pgcluster one (they check it
    against the CA). Debian's self-signed default certificate is replaced with the pgcluster one.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.source_open '{pg1: 198.18.0.11}' '[shop]' /etc/pgcluster/pki/ca.crt \\
            /etc/pgcluster/pki/host.crt /etc/pgcluster/pki/host.key
    """
    (row,) = _q("SELECT current_setting('ssl'), current_setting('ssl_cert_file'), current_setting('ssl_ca_file'), "
                "current_setting('hba_file'), current_setting('ident_file')", port)  # fmt: skip
    ssl, cert_file, current_ca, hba, ident = row
    if current_ca not in ("", ca_file):
        raise CommandExecutionError(f"ssl_ca_file is already {current_ca}: pgcluster will not replace it "
                                    f"(the members' certificates are signed by {ca_file})")  # fmt: skip
    if not current_ca:
        _q(f"ALTER SYSTEM SET ssl_ca_file = {_lit(ca_file)}", port)
    # Without TLS, or with Debian's self-signed default (no client can check it against a CA), the
    # server presents the host's pgcluster certificate until the migration ends (members and
    # PgBouncer hosts check it against the CA).
    lend = ssl != "on" or cert_file == SNAKEOIL
    lent = lend or cert_file == _own_tls_files(hba)[0]
    if lend:
        _lend_tls(hba, cert, key, port)
    _q(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_lit(ROLE)}) THEN "
       f"CREATE ROLE {_ident(ROLE)} LOGIN REPLICATION; END IF; END $$; GRANT pg_read_all_data TO {_ident(ROLE)}",
       port)  # fmt: skip
    dbs = ",".join(_ident(d) for d in dict.fromkeys(["postgres", *databases]))
    hba_lines = [f"hostssl {dbs} {ROLE} {addr}/32 cert map={MAP}" for addr in members.values()]
    moved = ",".join(_ident(d) for d in databases)
    routers = routers or {}
    if routers:  # the migration role only ever by certificate from a member
        hba_lines.append(f"host all {ROLE} all reject")
    hba_lines += [f"hostssl {moved} all {addr}/32 scram-sha-256" for addr in routers.values()]
    _write_block(hba, hba_lines, top=True)
    _write_block(ident, [f"{MAP} {name} {ROLE}" for name in members], top=False)
    for db in databases:
        _q(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = {_lit(PUBLICATION)}) THEN "
           f"CREATE PUBLICATION {_ident(PUBLICATION)} FOR ALL TABLES; END IF; END $$", port, dbname=db)  # fmt: skip
    try:
        _reload(port)
    except CommandExecutionError:
        source_close(databases, ca_file, port)
        raise
    if lent:
        return {"server_certificate": None, "tls": "lent: the pgcluster host certificate"}
    with salt.utils.files.fopen(cert_file, encoding="ascii") as f:
        return {"server_certificate": f.read(), "tls": f"its own: {cert_file}"}


# ---- the source of a physical migration ---------------------------------------------------------
PHYSICAL_COMMENT = "pgcluster migrate: the standby cluster's replication role (migrate.abort removes it)"


def _migration_verifier(cluster: str) -> str:
    """The replication role's SCRAM verifier for CLUSTER, from this minion's pillar (secrets by
    need: the source of a physical migration receives it, never the password)."""
    m = (((__pillar__.get("pgcluster") or {}).get("clusters") or {}).get(cluster) or {}).get("migrate") or {}
    verifier = m.get("replication_verifier")
    if not verifier:
        raise CommandExecutionError(f"this minion's pillar holds no pgcluster:clusters:{cluster}:migrate:"
                                    "replication_verifier: is it the source of a physical migration of "
                                    f"{cluster}? (refresh its pillar)")  # fmt: skip
    return verifier


def _role_owner(user: str, port: int) -> str | None:
    """None when role USER does not exist; 'pgcluster' when ``physical_open`` made it; else 'other'."""
    rows = _q(f"SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = {_lit(user)}",
              port)  # fmt: skip
    if not rows:
        return None
    return "pgcluster" if rows[0][0] == PHYSICAL_COMMENT else "other"


def physical_open(
    cluster: str, members: dict, user: str, slot: str, cert: str, key: str, port: int = 5432,
    routers: dict | None = None, databases: list = (),
) -> dict:  # fmt: skip
    """Let MEMBERS ({minion id: address}) of CLUSTER stream this whole server (a physical
    migration): role USER (LOGIN REPLICATION, the cluster's replication verifier from this
    minion's pillar: the same role replicates inside the cluster after the cutover), replication
    over TLS with scram-sha-256 from those addresses only, a physical replication slot SLOT that
    keeps WAL from now on; ROUTERS ({minion id: address}, the PgBouncer hosts) may log in to
    DATABASES over TLS with scram-sha-256. A server without TLS (or with Debian's self-signed
    default) presents this host's pgcluster certificate CERT/key KEY until the migration ends.
    Refuses a role USER it did not make, and a server that presents a certificate of its own
    (the members check the source against the cluster's CA). Idempotent.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.physical_open main '{pg1: 198.18.0.11}' replicator pgcluster_main \
            /etc/pgcluster/pki/host.crt /etc/pgcluster/pki/host.key
    """
    verifier = _migration_verifier(cluster)
    (row,) = _q("SELECT current_setting('ssl'), current_setting('ssl_cert_file'), current_setting('hba_file')", port)
    ssl, cert_file, hba = row
    if ssl == "on" and cert_file not in (SNAKEOIL, _own_tls_files(hba)[0]):
        raise CommandExecutionError(f"this server presents its own certificate ({cert_file}): the members of "
                                    f"{cluster} check the source against the cluster's CA; a physical migration "
                                    "needs Debian's default (ssl_cert_file reset) or the pgcluster one")  # fmt: skip
    if _role_owner(user, port) == "other":
        raise CommandExecutionError(f"role {user} already exists on this server: the cluster's replication role "
                                    "must be made for the migration (rename or drop it first)")  # fmt: skip
    try:  # anything that fails on the way takes back what was done
        if ssl != "on" or cert_file == SNAKEOIL:
            _lend_tls(hba, cert, key, port)
        _q(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_lit(user)}) THEN "
           f"CREATE ROLE {_ident(user)} LOGIN REPLICATION; END IF; END $$; "
           f"ALTER ROLE {_ident(user)} LOGIN REPLICATION PASSWORD {_lit(verifier)}; "
           f"COMMENT ON ROLE {_ident(user)} IS {_lit(PHYSICAL_COMMENT)}", port)  # fmt: skip
        lines = [f"hostssl replication {_ident(user)} {addr}/32 scram-sha-256" for addr in members.values()]
        if databases:
            moved = ",".join(_ident(d) for d in databases)
            lines += [f"hostssl {moved} all {addr}/32 scram-sha-256" for addr in (routers or {}).values()]
        _write_block(hba, lines, top=True)
        _q(f"SELECT pg_create_physical_replication_slot({_lit(slot)}, true) WHERE NOT EXISTS "
           f"(SELECT FROM pg_replication_slots WHERE slot_name = {_lit(slot)})", port)  # fmt: skip
        _reload(port)
    except CommandExecutionError:
        physical_close(user, slot, port)
        raise
    return {"slot": slot, "role": user, "tls": "the pgcluster host certificate"}


def physical_close(user: str, slot: str, port: int = 5432) -> dict:
    """Take back what ``physical_open`` did: the slot (its walsender ended first), the pg_hba
    block, the lent TLS settings, role USER when it made it. Idempotent; the server keeps serving.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.physical_close replicator pgcluster_main
    """
    _q(f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {_lit(slot)} "
       "AND active_pid IS NOT NULL", port)  # fmt: skip
    for _ in range(100):  # the walsender releases the slot as it exits
        if not _q(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = {_lit(slot)} AND active", port):
            break
        time.sleep(0.1)
    else:
        raise CommandExecutionError(f"replication slot {slot} is still in use 10 s after its walsender was ended: "
                                    "not dropped (it keeps WAL); run again")  # fmt: skip
    dropped = _q(f"SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 f"WHERE slot_name = {_lit(slot)}", port)  # fmt: skip
    (hba,) = _q("SELECT current_setting('hba_file')", port)[0]
    _write_block(hba, [], top=True)
    _reload(port)
    _return_tls(hba, port)
    if _role_owner(user, port) == "pgcluster":
        _q(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {_lit(user)}", port)
        _q(f"DROP ROLE {_ident(user)}", port)
    return {"slots_dropped": [r[0] for r in dropped]}


def physical_progress(slot: str, port: int = 5432) -> dict:
    """The source's side of a physical migration: its WAL position, whether it is read-only,
    slot SLOT (active, the position the standby has flushed, the bytes it has not) and the copies
    it is sending now (``pgsql.basebackups``: the standby leader's while it copies the source).

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.physical_progress pgcluster_main
    """
    rows = _q(f"SELECT active, restart_lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) "
              f"FROM pg_replication_slots WHERE slot_name = {_lit(slot)}", port)  # fmt: skip
    s = rows[0] if rows else None
    return {
        "lsn": _q("SELECT pg_current_wal_lsn()", port)[0][0],
        "read_only": _q(READ_ONLY, port)[0][0] == "on",
        "slot": {"active": s[0] == "t", "flushed_lsn": s[1] or None, "lag_bytes": int(float(s[2] or 0))} if s else None,
        "copies": __salt__["pgsql.basebackups"](port=port),
    }


# Patroni grants these to its rewind role when it bootstraps a cluster (PostgreSQL 11 and later).
REWIND_FUNCTIONS = ("pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)",
                    "pg_read_binary_file(text)", "pg_read_binary_file(text, bigint, bigint, boolean)")  # fmt: skip


def patroni_roles(cluster: str, port: int = 5432) -> dict:
    """On the leader of CLUSTER after a physical migration (its catalog is the source's): the
    roles Patroni works with as pillar declares them, passwords read from this member's pillar
    (set as SCRAM verifiers): the superuser's password, the replication role, the rewind role
    (created with the grants Patroni gives it at a bootstrap). Returns {role: what changed}.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.patroni_roles main
    """
    model = __salt__["pgcluster.settings"]()
    c, p = model["clusters"][cluster], model["patroni"]
    verifier = __utils__["pgcluster_model.role_verifier"]
    wanted = {
        p["superuser"]: ("superuser", ""),
        p["replication_user"]: ("replication", " REPLICATION"),
        p["rewind_user"]: ("rewind", ""),
    }
    done = {}
    for role, (key, attrs) in wanted.items():
        new = verifier(cluster, role, c["passwords"][key])
        rows = _q(f"SELECT rolname, rolpassword FROM pg_authid WHERE rolname = {_lit(role)}", port)
        if rows and rows[0][1] == new:
            continue
        verb = "ALTER" if rows else "CREATE"
        attrs += " SUPERUSER" if key == "superuser" else ""
        _q(f"{verb} ROLE {_ident(role)} LOGIN{attrs} PASSWORD {_lit(new)}", port)
        done[role] = "password set" if rows else "created"
    grants = "; ".join(f"GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {_ident(p['rewind_user'])}"
                       for f in REWIND_FUNCTIONS)  # fmt: skip
    _q(grants, port)
    _q(f"COMMENT ON ROLE {_ident(p['replication_user'])} IS NULL", port)
    return done


def source_close(databases: list, ca_file: str, port: int = 5432) -> dict:
    """Take back what ``source_open`` did: the publications, the migration's replication slots
    (their walsenders ended first), the pg_hba and pg_ident blocks, ssl_ca_file when it is
    CA_FILE, the role. Idempotent; the server keeps serving throughout.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.source_close '[shop]' /etc/pgcluster/pki/ca.crt
    """
    existing = {r[0] for r in _q("SELECT datname FROM pg_database WHERE datallowconn", port)}
    for db in databases:
        if db in existing:
            _q(f"DROP PUBLICATION IF EXISTS {_ident(PUBLICATION)}", port, dbname=db)
    like = _lit(f"{PUBLICATION}%")
    _q(f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE {like} "
       "AND active_pid IS NOT NULL", port)  # fmt: skip
    dropped = _q(f"SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 f"WHERE slot_name LIKE {like} AND NOT active", port)  # fmt: skip
    (row,) = _q("SELECT current_setting('ssl_ca_file'), current_setting('hba_file'), current_setting('ident_file')",
                port)  # fmt: skip
    if row[0] == ca_file:
        _q("ALTER SYSTEM RESET ssl_ca_file", port)
    _write_block(row[1], [], top=True)
    _write_block(row[2], [], top=False)
    _unfreeze(row[1], [], port, migrating=False)  # a frozen block keeps refusing, without the role that goes
    _reload(port)
    _return_tls(row[1], port)
    _q(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {_lit(ROLE)}", port)
    _q(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {_lit(ROLE)}) THEN "
       f"DROP ROLE {_ident(ROLE)}; END IF; END $$", port)  # fmt: skip
    return {"slots_dropped": [r[0] for r in dropped]}


def source_progress(databases: list, port: int = 5432) -> dict:
    """The source's side of the copy: its current WAL position, whether it is read-only, and per
    database of DATABASES its migration slot (active, confirmed position, bytes of WAL not yet
    confirmed by the subscriber) and the size of every table.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.source_progress '[shop]'
    """
    like = _lit(f"{PUBLICATION}%")
    slots = {s[0]: s for s in _q(f"SELECT slot_name, active, confirmed_flush_lsn, pg_wal_lsn_diff("
                                 f"pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots "
                                 f"WHERE slot_name LIKE {like}", port)}  # fmt: skip
    frozen = {r[0] for r in _q(DATABASES_READ_ONLY, port)}
    out: dict[str, Any] = {
        "lsn": _q("SELECT pg_current_wal_lsn()", port)[0][0],
        "read_only": _q(READ_ONLY, port)[0][0] == "on" or set(databases) <= frozen,
        "databases": {},
    }
    for db in databases:
        s = slots.get(subscription(db))
        rows = _q("SELECT format('%I.%I', schemaname, relname), pg_table_size(relid) FROM pg_stat_user_tables", port,
                  dbname=db)  # fmt: skip
        out["databases"][db] = {
            "slot": {"active": s[1] == "t", "confirmed_flush_lsn": s[2], "lag_bytes": int(float(s[3] or 0))}
            if s
            else None,
            "tables": {name: int(size) for name, size in rows},
        }
    return out


def _frozen(hba: str) -> list | str | None:
    """What the frozen block of the pg_hba.conf at HBA refuses: "all", [database, ...] or None
    (no block). Its first line records it (JSON), so that a second wave adds its databases."""
    with salt.utils.files.fopen(hba, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if FROZEN_BEGIN not in lines:
        return None
    block = lines[lines.index(FROZEN_BEGIN) + 1 :]
    if block[0].startswith(FROZEN_DATABASES):
        return json.loads(block[0][len(FROZEN_DATABASES) :])
    # A block an earlier version wrote, without the record: what its "local <dbs> all reject" names.
    refusal = next((line.split() for line in block if line.startswith("local ") and line.endswith(" all reject")), None)
    if refusal is None or refusal[1] == "all":
        return "all"
    return [name.strip('"').replace('""', '"') for name in refusal[1].split(",")]


def _frozen_lines(frozen: list | str, superuser: str, migrating: bool) -> list[str]:
    """pg_hba lines that refuse every client of the FROZEN databases ("all": every database) but
    SUPERUSER over the local socket (the migration's own calls) and, while a logical migration is
    MIGRATING over TLS, its role (its walsenders may reconnect). Physical replication is not a
    database: the standby keeps streaming."""
    dbs = "all" if frozen == "all" else ",".join(_ident(d) for d in frozen)
    lines = [FROZEN_DATABASES + json.dumps(frozen), f"local {dbs} {_ident(superuser)} peer"]
    if frozen != "all" and migrating:
        lines.append(f"hostssl {dbs} {ROLE} all cert map={MAP}")
    return [*lines, f"local {dbs} all reject", f"host {dbs} all all reject"]


def freeze(databases: list, port: int = 5432, every_database: bool = False, confirm_wait: float = 0) -> dict:
    """Make DATABASES read-only for the cutover: their new transactions read-only by default
    (``default_transaction_read_only`` by ALTER DATABASE; with EVERY_DATABASE, a physical
    migration moving them all, by ALTER SYSTEM: the whole server), their new client connections
    refused by a block at the top of pg_hba.conf (the local superuser excepted), one reload; then
    every client session of those databases ended (the migration's own walsenders kept). A client
    that would say ``BEGIN READ WRITE`` cannot come in. The block stays after the cutover (the
    source must take no more writes) and adds the databases of a second migration from this
    server to those it already refuses; ``thaw`` removes them. Returns the WAL position after
    it (once the ended sessions are gone), which the cluster must reach, and the sessions ended.
    With CONFIRM_WAIT (a logical cutover: one job, not one per poll), it then waits until every
    database's migration slot has confirmed that position (the cluster has every committed row;
    CommandExecutionError after that many seconds) and returns what logical replication does not
    carry, as the frozen source has it: each database's sequences and populated materialized views.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.freeze '[shop]'
    """
    (hba, me, ssl, loaded) = _q("SELECT current_setting('hba_file'), current_user, current_setting('ssl'), "
                                "pg_conf_load_time()", port)[0]  # fmt: skip
    before = _frozen(hba)
    if every_database or before == "all":
        frozen: list | str = "all"
        _q("ALTER SYSTEM SET default_transaction_read_only = on", port)
    else:  # only these databases: the server's others keep taking writes
        frozen = [*(before or []), *(d for d in databases if d not in (before or []))]
        _q("".join(f"ALTER DATABASE {_ident(d)} SET default_transaction_read_only = on;\n" for d in databases), port)
    _write_block(hba, _frozen_lines(frozen, me, ssl == "on"), top=True, begin=FROZEN_BEGIN, end=FROZEN_END)
    _reload(port)
    # The postmaster applies a reload asynchronously: a client let in by the former rules after the
    # sessions are ended below would never be ended.
    _until(lambda: _q(f"SELECT pg_conf_load_time() > {_lit(loaded)}::timestamptz", port)[0][0] == "t", 5, 0.1)
    names = ",".join(_lit(d) for d in databases)
    where = "" if every_database else f"datname IN ({names}) AND "
    ended = [pid for pid, done in _q(f"SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}"
                                     f"backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename <> "
                                     f"{_lit(ROLE)}", port) if done == "t"]  # fmt: skip
    _gone(ended, port)
    # Where the last record was inserted, not the write position: an asynchronous commit of a
    # session just ended may not be written yet.
    out = {"lsn": _q("SELECT pg_current_wal_insert_lsn()", port)[0][0], "sessions_ended": len(ended)}
    if confirm_wait:
        t = time.monotonic()
        _confirmed(databases, out["lsn"], port, confirm_wait)
        out["confirm_s"] = round(time.monotonic() - t, 2)
        out["sequences"] = {db: _sequences(db, port) for db in databases}
        out["views"] = {db: [n for (n,) in _q(RELATIONS.format(kinds=KINDS["views"]), port, db)] for db in databases}
    return out


def _gone(pids: list, port: int, wait: float = 5) -> None:
    """Wait (at most WAIT seconds) until the backends PIDS, just told to terminate, have exited:
    one still committing would write after the position the cutover reads."""
    sql = f"SELECT pid FROM pg_stat_activity WHERE pid IN ({','.join(str(int(p)) for p in pids)})"
    if pids and not _until(lambda: not _q(sql, port), wait, 0.02):
        raise CommandExecutionError(f"sessions {pids} did not end within {wait} s of being terminated")


def _confirmed(databases: list, position: str, port: int, wait: float) -> None:
    """Wait until the migration slot of every database of DATABASES has confirmed the WAL up to
    POSITION; CommandExecutionError naming those that did not after WAIT seconds."""
    names = ",".join(_lit(subscription(db)) for db in databases)
    behind = list(databases)

    def confirmed() -> bool:
        done = {r[0] for r in _q(f"SELECT slot_name FROM pg_replication_slots WHERE slot_name IN ({names}) AND "
                                 f"confirmed_flush_lsn >= {_lit(position)}::pg_lsn", port)}  # fmt: skip
        behind[:] = [db for db in databases if subscription(db) not in done]
        return not behind

    if not _until(confirmed, wait, 0.05):
        raise CommandExecutionError(f"the cluster did not confirm the WAL of {', '.join(behind)} up to {position} "
                                    f"within {wait} s")  # fmt: skip


def _unfreeze(hba: str, databases: list | None, port: int, migrating: bool = True) -> tuple:
    """Rewrite the frozen block of HBA without DATABASES (None: remove it; a block refusing "all"
    goes whole) and, unless MIGRATING (over TLS, as ``freeze`` decides), without the migration
    role's line; (what was frozen, what stays frozen)."""
    before = _frozen(hba)
    if before is None:
        return None, []
    if databases is None or (before == "all" and databases):
        left: list | str = []
    elif before == "all":
        left = "all"
    else:
        left = [d for d in before if d not in databases]
    (me, ssl) = _q("SELECT current_user, current_setting('ssl')", port)[0]
    lines = _frozen_lines(left, me, migrating and ssl == "on") if left else []
    _write_block(hba, lines, top=True, begin=FROZEN_BEGIN, end=FROZEN_END)
    return before, left


def thaw(port: int = 5432, databases: list | None = None) -> dict:
    """Undo ``freeze`` for DATABASES (all of them when not given): their clients come in again
    (out of the pg_hba block) and they take writes again (and the whole server, once no database
    stays frozen). A database frozen by an earlier migration from this server stays refused and
    read-only. Idempotent.
    Returns {"frozen": what stays refused}.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.thaw
        salt legacy pgmigrate.thaw databases='[billing]'
    """
    if isinstance(databases, str):  # databases=shop on the command line: one database, not its letters
        databases = [databases]
    (hba,) = _q("SELECT current_setting('hba_file')", port)[0]
    before, left = _unfreeze(hba, databases, port)
    gone = [] if before in (None, "all") else [d for d in before if d not in left]
    existing = {r[0] for r in _q("SELECT datname FROM pg_database", port)}
    resets = "".join(
        f"ALTER DATABASE {_ident(d)} RESET default_transaction_read_only;\n" for d in gone if d in existing
    )
    if resets:
        _q(resets, port)
    if not left:
        _q("ALTER SYSTEM RESET default_transaction_read_only", port)
    _reload(port)
    return {"frozen": left}


# The relations compared, by kind: tables (a partitioned one as a whole, through its parent) and
# the materialized views that hold data (logical replication does not carry them: the cutover
# refreshes them on the cluster first).
RELATIONS = """SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND NOT c.relispartition
AND (c.relkind <> 'm' OR c.relispopulated)
AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' ORDER BY c.oid"""
KINDS = {"tables": "'r', 'p'", "views": "'m'"}
# A table's rows and checksum, in any order and constant memory: the sum of each row's 64-bit hash
# (no sort, no aggregate string; 3.5 times faster than md5). "record": the row hashed column by
# column with each type's own extended hash (PostgreSQL 14 and later), 1.8 times faster than
# "text", only where both ends share one catalog (a physical copy: an enum's hash is its OID);
# "text": each row written as text the same way at both ends whatever their settings (time zone,
# date, interval and float styles) and hashed. A table with a column type that has no hash
# (json, geometric types...) falls back to "text" (messages in English to tell it).
# The row as "t.*", never a bare "t": in a table with a column named t that would be the column.
ROW_HASHES = {"record": "hash_record_extended(t.*, 0)", "text": "hashtextextended((t.*)::text, 0)"}
# "portable" (a logical copy: two catalogs): "record" for every table but those with a column
# whose hash may not be the same in another cluster, listed here (as text): a type, seen through
# domains and arrays, that is an enum (its hash is its OID), a reg* type or aclitem (their values
# are OIDs), a composite or a range (they hash their members: conservatively), or a
# nondeterministic collation (hashed by its ICU sort key). By record, values compare by their
# type's equality: numeric 1.0 and 1.00, citext 'A' and 'a' hash alike (text hashing tells them
# apart); a logical copy writes each value as the source's text, so they do not differ there.
OID_BOUND = """WITH RECURSIVE used (rel, typ) AS (
SELECT a.attrelid, a.atttypid FROM pg_attribute a WHERE a.attnum > 0 AND NOT a.attisdropped
UNION SELECT u.rel, x.typ FROM used u JOIN pg_type t ON t.oid = u.typ
CROSS JOIN LATERAL (VALUES (t.typbasetype), (t.typelem)) x (typ) WHERE x.typ <> 0)
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
AND n.nspname !~ '^pg_' AND (c.oid IN (SELECT u.rel FROM used u JOIN pg_type t ON t.oid = u.typ
WHERE t.typtype NOT IN ('b', 'd')
OR (t.typnamespace = 'pg_catalog'::regnamespace AND (t.typname ~ '^reg' OR t.typname = 'aclitem')))
OR c.oid IN (SELECT a.attrelid FROM pg_attribute a JOIN pg_collation l ON l.oid = a.attcollation
WHERE a.attnum > 0 AND NOT a.attisdropped AND NOT l.collisdeterministic))"""
ROW_SUM = """SET lc_messages = 'C'; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 1; SET bytea_output = 'hex';
SELECT count(*), coalesce(sum({hash}), 0) FROM {table} t"""
# A checksum or a materialized view's refresh may take long (the cutover's job waits 1800 s).
LONG_QUERY = 1800
NO_HASH = "could not identify"  # PostgreSQL: "could not identify a hash function for type json"
# Faster still where "record" would be used (1.7 times, pgbench_accounts on PostgreSQL 15): no row
# formed as a record, each column hashed by its type's own extended hash function in the row's
# expression, the columns combined by XOR. Each column by its rank among the table's columns (not
# its number: a dropped column at one end only shifts numbers): a 64-bit seed and a NULL's value
# of its own, pseudo-random (``_seed``): a numeric, float or jsonb zero hashes to its seed or next
# to it, so small seeds (the rank) and NULL values made zeros and NULLs cancel out under XOR. Only
# for a table every column of which has such a function, the default hash operator class's as hash
# partitioning uses (stable across versions): of its type, of a domain's base type
# or of a type it is binary-coercible to (varchar: text's), the value cast to what the function
# takes where a cast exists (timestamptz to timestamp, at the UTC that ROW_SUM sets; a cast by
# the type's own name, never "character": that is char(1) and would cut the value); the others
# (bool and date, hashed as char and int4 with no cast; arrays, enums...) by record.
COLUMN_HASHES = """WITH cols AS (
SELECT a.attrelid AS rel, a.attname, rank() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS pos,
coalesce(nullif(t.typbasetype, 0), t.oid) AS typ FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped),
hashes AS (SELECT o.opcintype AS typ, p.amproc AS fn, f.proargtypes[0] AS arg FROM pg_opclass o JOIN pg_amproc p
ON p.amprocfamily = o.opcfamily AND p.amproclefttype = o.opcintype AND p.amprocrighttype = o.opcintype
AND p.amprocnum = 2 JOIN pg_proc f ON f.oid = p.amproc
WHERE o.opcdefault AND o.opcmethod = (SELECT oid FROM pg_am WHERE amname = 'hash')
AND (f.proargtypes[0] = o.opcintype OR EXISTS (SELECT FROM pg_cast k WHERE k.castsource = o.opcintype
AND k.casttarget = f.proargtypes[0] AND k.castcontext IN ('a', 'i'))))
SELECT format('%I.%I', n.nspname, c.relname), x.pos, format('%I', x.attname), coalesce(d.fn, b.fn)::regproc::text,
(SELECT format('%I.%I', tn.nspname, tt.typname) FROM pg_type tt JOIN pg_namespace tn ON tn.oid = tt.typnamespace
WHERE tt.oid = coalesce(d.arg, b.arg) AND tt.oid <> x.typ) FROM cols x
JOIN pg_class c ON c.oid = x.rel JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN hashes d ON d.typ = x.typ
LEFT JOIN LATERAL (SELECT h.arg, h.fn FROM pg_cast k JOIN hashes h ON h.typ = k.casttarget
WHERE k.castsource = x.typ AND k.castmethod = 'b' ORDER BY h.typ::regtype::text LIMIT 1) b ON d.fn IS NULL
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
AND n.nspname !~ '^pg_' ORDER BY 1, 2"""
FINGERPRINT_SCHEMA = """SELECT md5(string_agg(format('%s.%s.%s:%s:%s', table_schema, table_name, column_name,
data_type, is_nullable), ',' ORDER BY table_schema, table_name, ordinal_position))
FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"""


def _row_sum(db: str, name: str, port: int, row_hash: str, columns: str | None = None) -> dict:
    """{"rows", "checksum", "hash"} of relation NAME of DB, its rows hashed the ROW_HASH way
    ("columns": by the expression COLUMNS, ``_column_hashes``, its "functions" named by a digest:
    two ends whose types hash by other functions, an extension's versions, say so; any error
    there: by record)."""
    expression = f"({columns})" if row_hash == "columns" else ROW_HASHES[row_hash]
    try:
        count, digest = _q(ROW_SUM.format(hash=expression, table=name), port, db, timeout=LONG_QUERY)[0]
    except CommandExecutionError as exc:
        if row_hash == "columns":
            return _row_sum(db, name, port, "record")
        if row_hash == "text" or NO_HASH not in str(exc):
            raise
        return _row_sum(db, name, port, "text")
    out = {"rows": int(count), "checksum": digest, "hash": row_hash}
    if row_hash == "columns":
        out["functions"] = hashlib.sha256(str(columns).replace("pg_catalog.", "").encode()).hexdigest()[:12]
    return out


def _seed(pos: int, what: str) -> int:
    """A pseudo-random signed 64-bit constant for column rank POS: its hash seed or its NULL's value
    (the same at both ends: derived from the rank only)."""
    return int.from_bytes(hashlib.sha256(f"pgcluster {what} {pos}".encode()).digest()[:8], "big", signed=True)


def _column_hashes(db: str, port: int) -> dict[str, str]:
    """{relation: its row's hash expression, column by column} of DB's relations whose every
    column has its type's extended hash function (``COLUMN_HASHES``)."""
    found: dict[str, list] = {}
    for name, pos, column, fun, arg in _q(COLUMN_HASHES, port, db):
        value, pos = f"t.{column}::{arg}" if arg else f"t.{column}", int(pos)
        found.setdefault(name, []).append(
            f"CASE WHEN t.{column} IS NULL THEN {_seed(pos, 'null')} ELSE {fun}({value}, {_seed(pos, 'seed')}) END"
            if fun
            else None
        )
    return {name: " # ".join(parts) for name, parts in found.items() if None not in parts}


def _hash_plan(db: str, port: int, row_hash: str) -> tuple[set | None, dict]:
    """How DB's relations are hashed, read once per database: (those hashed as text: None for all
    of them ("text"), ``OID_BOUND``'s for "portable"; {relation: column-by-column expression})."""
    if row_hash == "text":
        return None, {}
    bound = {name for (name,) in _q(OID_BOUND, port, db)} if row_hash == "portable" else set()
    return bound, _column_hashes(db, port)


def _checksums(db: str, kind: str, port: int, plan: tuple[set | None, dict]) -> dict:
    """{relation: {"rows", "checksum", "hash"}} of DB's relations of KIND (``KINDS``), in creation
    order, as PLAN (``_hash_plan``) says: as text, column by column where every column allows it,
    else by record."""
    bound, columns = plan
    out = {}
    for (name,) in _q(RELATIONS.format(kinds=KINDS[kind]), port, db):
        if bound is None or name in bound:
            out[name] = _row_sum(db, name, port, "text")
        elif name in columns:
            out[name] = _row_sum(db, name, port, "columns", columns[name])
        else:
            out[name] = _row_sum(db, name, port, "record")
    return out


def replayed_to(lsn: str, port: int = 5432, wait: float = 60) -> bool:
    """Wait until this hot standby (a physical migration's standby leader) has replayed WAL up to
    LSN (the frozen source's last); CommandExecutionError after WAIT seconds. Returns True.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.replayed_to 0/3000060
    """
    sql = f"SELECT coalesce(pg_last_wal_replay_lsn() >= {_lit(lsn)}::pg_lsn, false)"
    if not _until(lambda: _q(sql, port)[0][0] == "t", wait, 0.05):
        raise CommandExecutionError(f"this server did not replay the source's WAL up to {lsn} within {wait} s")
    return True


def fingerprint(
    databases: list,
    port: int = 5432,
    tables: bool = True,
    views: bool = True,
    row_hash: str = "text",
    replayed: str | None = None,
    replay_wait: float = 60,
) -> dict:
    """What the cutover compares between the source and the cluster, per database: each table's
    row count and checksum (the sum of its rows' hashes, in any order; a partitioned table as a
    whole), the same of each populated materialized view (VIEWS), each sequence's last value,
    and a checksum of the columns of every table (the schema). ROW_HASH: "text" (any version),
    "record" (faster; PostgreSQL 14 and later, a physical copy at the other end) or "portable"
    (by record but the tables whose hash would be made of OIDs, as text; a logical copy at the
    other end), see ``ROW_HASHES``. Reads everything (without TABLES, not the tables): run it when no one writes.
    With REPLAYED (a physical cutover's standby leader, in the same job): first ``replayed_to``
    that position, within REPLAY_WAIT seconds.

    CLI Example:

    .. code-block:: bash

        salt legacy pgmigrate.fingerprint '[shop]'
    """
    if replayed:
        replayed_to(replayed, port=port, wait=replay_wait)
    out = {}
    for db in databases:
        plan = _hash_plan(db, port, row_hash) if tables or views else (set(), {})
        out[db] = {
            "tables": _checksums(db, "tables", port, plan) if tables else {},
            "views": _checksums(db, "views", port, plan) if views else {},
            "sequences": _sequences(db, port),
            "schema": _q(FINGERPRINT_SCHEMA, port, db)[0][0],
        }
    return out


def _sequences(db: str, port: int) -> dict:
    """{schema.sequence: last value (0: never used)} of DB."""
    seqs = _q("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences", port, db)
    return {name: int(value or 0) for name, value in seqs}


def finish_copy(databases: list, sequences: dict, views: dict, port: int = 5432, row_hash: str = "text") -> dict:
    """On the cluster's leader in a logical cutover, once the frozen source's last WAL is here (one
    job): each sequence set from SEQUENCES (``set_sequences``), the materialized views of VIEWS
    refreshed (``refresh_views``), then the ``fingerprint`` of DATABASES to compare with the source's.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.finish_copy '[shop]' '{shop: {public.orders_id_seq: 10}}' '{shop: []}'
    """
    set_sequences(sequences, port=port)
    refresh_views(views, port=port)
    return fingerprint(databases, port=port, row_hash=row_hash)


def refresh_views(views: dict, port: int = 5432) -> dict:
    """REFRESH each materialized view of VIEWS ({database: [schema.view, ...]}, in creation
    order) on this leader: logical replication carries no view data. Returns VIEWS.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.refresh_views '{shop: [public.daily_totals]}'
    """
    for db, names in views.items():
        for name in names:  # NAME as format('%I.%I') wrote it
            _q(f"REFRESH MATERIALIZED VIEW {name}", port, db, timeout=LONG_QUERY)
    return views


# ---- the cluster's leader -----------------------------------------------------------------------
def _conninfo(source: dict, dbname: str) -> str:
    """libpq connection string to the source as the migration role: TLS both ways, no password."""
    parts = {"host": source["address"], "port": source["port"], "dbname": dbname, "user": ROLE,
             "sslmode": source["sslmode"], "sslrootcert": source["root"], "sslcert": source["cert"],
             "sslkey": source["key"],
             "connect_timeout": 10, "application_name": ROLE}  # fmt: skip
    return " ".join(f"{k}={v}" for k, v in parts.items())


def _as_postgres(script: str, timeout: float = 3600) -> str:
    """Run SCRIPT (a shell pipeline of PostgreSQL client tools, no secret in it) as postgres."""
    res = __salt__["cmd.run_all"](["runuser", "-u", "postgres", "--", "bash", "-o", "pipefail", "-c", script],
                                  python_shell=False, output_loglevel="quiet", ignore_retcode=True, cwd="/",
                                  timeout=timeout)  # fmt: skip
    if res["retcode"] != 0:
        raise CommandExecutionError(" ".join((res.get("stderr") or res.get("stdout") or "failed").split())[:600])
    return res["stdout"]


def _remote(source: dict, sql: str, dbname: str = "postgres") -> list[list[str]]:
    """Rows of SQL run on the source as the migration role."""
    out = _as_postgres(f"psql -X -At -F '\x02' -v ON_ERROR_STOP=1 -d {shlex.quote(_conninfo(source, dbname))} "
                       f"-c {shlex.quote(sql)}", timeout=120)  # fmt: skip
    return [line.split("\x02") for line in out.splitlines() if line]


ROLES = """SELECT rolname, rolcanlogin, rolcreatedb, rolcreaterole, rolinherit, rolconnlimit, rolbypassrls
FROM pg_roles WHERE rolname !~ '^pg_' AND NOT rolsuper AND rolname <> current_user ORDER BY rolname"""
MEMBERSHIPS = """SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
JOIN pg_roles m ON m.oid = a.member WHERE r.rolname !~ '^pg_' AND m.rolname <> current_user"""
DATABASES = """SELECT datname, pg_get_userbyid(datdba), datcollate, datctype FROM pg_database
WHERE NOT datistemplate AND datallowconn"""


def _create_roles(source: dict, port: int) -> list[str]:
    """The source's roles (not its superusers) that the cluster lacks, with their attributes and
    memberships, without passwords (its login roles are declared in pillar, and the members'
    highstate has created them with their verifiers); returns the roles created."""
    have = {r[0] for r in _q("SELECT rolname FROM pg_roles", port)}
    created = []
    for name, login, createdb, createrole, inherit, connlimit, bypassrls in _remote(source, ROLES):
        if name in have:
            continue
        attrs = {"LOGIN": login, "CREATEDB": createdb, "CREATEROLE": createrole, "INHERIT": inherit,
                 "BYPASSRLS": bypassrls}  # fmt: skip
        flags = [k if v == "t" else f"NO{k}" for k, v in attrs.items()] + [f"CONNECTION LIMIT {int(connlimit)}"]
        _q(f"CREATE ROLE {_ident(name)} {' '.join(flags)}", port)
        created.append(name)
    for role, member in _remote(source, MEMBERSHIPS):
        if member in created:
            _q(f"GRANT {_ident(role)} TO {_ident(member)}", port)
    return created


def subscribe(source: dict, databases: list, port: int = 5432) -> dict:
    """Copy DATABASES from SOURCE ({address, port, certificate: the server's own PEM to pin, or
    None: it presents a certificate of CA; cert, key: this host's client certificate and key})
    into this leader: missing roles, each database and its
    schema, a subscription per database (which copies, then streams). Stops at the first error,
    returning nothing half-made: what it created is dropped again.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.subscribe '{address: 198.18.0.40, port: 5432, certificate: "...", ...}' '[shop]'
    """
    if source.get("certificate"):  # the source's own certificate, pinned
        pin = os.path.join(os.path.dirname(source["cert"]), "migrate-source.crt")
        with salt.utils.files.fopen(pin, "w", encoding="ascii") as f:
            f.write(source["certificate"])
        os.chmod(pin, 0o644)
        source = dict(source, root=pin, sslmode="verify-ca")
    else:  # the pgcluster certificate lent to the source: its name and address checked
        source = dict(source, root=source["ca"], sslmode="verify-full")
    made: dict[str, list] = {"roles": [], "databases": [], "subscriptions": []}
    try:
        made["roles"] = _create_roles(source, port)
        have = {r[0] for r in _q("SELECT datname FROM pg_database", port)}
        facts = {r[0]: r for r in _remote(source, DATABASES)}
        for db in databases:
            if db not in facts:
                raise CommandExecutionError(f"database {db} does not exist on the source")
            _, owner, collate, ctype = facts[db]
            if db not in have:
                _q(f"CREATE DATABASE {_ident(db)} OWNER {_ident(owner)} TEMPLATE template0 ENCODING 'UTF8' "
                   f"LC_COLLATE {_lit(collate)} LC_CTYPE {_lit(ctype)}", port)  # fmt: skip
                made["databases"].append(db)
            dump = f"pg_dump --schema-only --no-publications --no-subscriptions -d {shlex.quote(_conninfo(source, db))}"
            load = f"psql -X -q -v ON_ERROR_STOP=1 -p {int(port)} -d {shlex.quote(db)}"
            _as_postgres(f"{dump} | {load} >/dev/null")
            name = subscription(db)
            _q(f"CREATE SUBSCRIPTION {_ident(name)} CONNECTION {_lit(_conninfo(source, db))} "
               f"PUBLICATION {_ident(PUBLICATION)} WITH (copy_data = true)", port, dbname=db)  # fmt: skip
            made["subscriptions"].append(db)
    except CommandExecutionError:
        unsubscribe(made["subscriptions"], made["databases"], made["roles"], port)
        raise
    return made


def unsubscribe(databases: list, drop_databases: list = (), drop_roles: list = (), port: int = 5432) -> dict:
    """Drop the subscriptions of DATABASES (their slots on the source too when it answers; else
    the slots are left to ``source_close``), then DROP_DATABASES and DROP_ROLES (what
    ``subscribe`` created). Idempotent.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.unsubscribe '[shop]' drop_databases='[shop]'
    """
    existing = {r[0] for r in _q("SELECT datname FROM pg_database", port)}
    for db in databases:
        name = subscription(db)
        if db not in existing or not _q(f"SELECT 1 FROM pg_subscription WHERE subname = {_lit(name)}", port, db):
            continue
        try:
            _q(f"DROP SUBSCRIPTION {_ident(name)}", port, dbname=db)
        except CommandExecutionError:  # the source does not answer: keep its slot, drop ours
            _q(f"ALTER SUBSCRIPTION {_ident(name)} DISABLE", port, dbname=db)
            _q(f"ALTER SUBSCRIPTION {_ident(name)} SET (slot_name = NONE)", port, dbname=db)
            _q(f"DROP SUBSCRIPTION {_ident(name)}", port, dbname=db)
    for db in drop_databases:
        if db in existing:
            _q(f"DROP DATABASE {_ident(db)} WITH (FORCE)", port)
    for role in drop_roles:
        _q(f"DROP ROLE IF EXISTS {_ident(role)}", port)
    return {"databases_dropped": [d for d in drop_databases if d in existing], "roles_dropped": list(drop_roles)}


def progress(databases: list, port: int = 5432) -> dict:
    """The leader's side of the copy, per database: each table's state (copying, ready...) and
    the subscription's last received and applied positions with their times.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.progress '[shop]'
    """
    out = {}
    for db in databases:
        name = subscription(db)
        tables = _q(f"SELECT format('%I.%I', n.nspname, c.relname), sr.srsubstate FROM pg_subscription_rel sr "
                    f"JOIN pg_subscription s ON s.oid = sr.srsubid JOIN pg_class c ON c.oid = sr.srrelid "
                    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE s.subname = {_lit(name)}",
                    port, db)  # fmt: skip
        stat = _q(f"SELECT received_lsn, latest_end_lsn, extract(epoch FROM latest_end_time), "
                  f"extract(epoch FROM last_msg_receipt_time) FROM pg_stat_subscription "
                  f"WHERE subname = {_lit(name)} AND relid IS NULL", port, db, names=False)  # fmt: skip
        received, applied, applied_at, heard_at = stat[0] if stat else [None] * 4
        out[db] = {
            "tables": {t: TABLE_STATES.get(s, s) for t, s in tables},
            "received_lsn": received or None,
            "applied_lsn": applied or None,
            "applied_at": float(applied_at) if applied_at else None,
            "heard_at": float(heard_at) if heard_at else None,
        }
    return out


def vacuum_analyze(databases: list, port: int = 5432, timeout: float = 3600) -> dict:
    """On the cluster's leader before a logical cutover: ``VACUUM (ANALYZE)`` each of DATABASES.
    Rows a subscription copied carry no hint bits yet: the first read of each page sets them and,
    with data checksums, writes it to WAL whole, which the cutover's verification would otherwise
    pay inside the pause (the whole database once more in WAL). Statistics for the planner come
    with it, before the applications arrive. Returns {database: seconds}.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.vacuum_analyze '[shop]'
    """
    out = {}
    for db in databases:
        t = time.monotonic()
        __salt__["pgsql.query"]("VACUUM (ANALYZE)", dbname=db, port=port, timeout=timeout)
        out[db] = round(time.monotonic() - t, 2)
    return out


def set_sequences(values: dict, port: int = 5432) -> dict:
    """Set each sequence of VALUES ({database: {schema.sequence: last value}}) on this leader to
    its value from the source (logical replication does not carry sequences). Returns them.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgmigrate.set_sequences '{shop: {public.orders_id_seq: 1000}}'
    """
    for db, seqs in values.items():
        for name, value in seqs.items():  # NAME as format('%I.%I') wrote it
            if int(value) > 0:
                _q(f"SELECT setval({_lit(name)}::regclass, {int(value)})", port, db)
    return values
