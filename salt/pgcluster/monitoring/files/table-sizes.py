#!/usr/bin/python3 -I
"""The largest tables of every database a member serves, for the node exporter's textfile
collector (run by a systemd timer as the OS user prometheus, which logs in as the monitoring
role: pg_monitor and CONNECT, no read of any table's rows). Relation sizes need no privilege on
the table. Writes ``pgcluster_table_size_bytes{datname,table}`` (table with its indexes and
TOAST) for the TOP largest tables of each database, atomically, through pgcluster_textfile
(installed beside this script).

Usage: pgcluster-table-sizes ROLE SOCKET_DIR PORT TOP OUT
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster_textfile  # noqa: E402

DATABASES = ("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
             "AND has_database_privilege(datname, 'CONNECT') ORDER BY 1")  # fmt: skip
TABLES = ("SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') "
          "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
          "ORDER BY 2 DESC LIMIT {top}")  # fmt: skip


def rows(role: str, socket_dir: str, port: str, db: str, sql: str) -> list[list[str]]:
    res = subprocess.run(["psql", "-XAtq", "-F", "\x1f", "-h", socket_dir, "-p", port, "-U", role, "-d", db, "-c", sql],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    return [line.split("\x1f") for line in res.stdout.splitlines() if line]


def main(role: str, socket_dir: str, port: str, top: str, out: str) -> int:
    samples = []
    try:
        for (db,) in rows(role, socket_dir, port, "postgres", DATABASES):
            for table, size in rows(role, socket_dir, port, db, TABLES.format(top=int(top))):
                samples.append(({"datname": db, "table": table}, int(size)))
        up = 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
        print(f"pgcluster-table-sizes: {exc}", file=sys.stderr)
        up = 0
    lines = pgcluster_textfile.gauge("pgcluster_table_sizes_up", "1 when the table sizes were read", [({}, up)])
    lines += pgcluster_textfile.gauge("pgcluster_table_size_bytes", "size of a table with its indexes and TOAST",
                                      samples)  # fmt: skip
    pgcluster_textfile.write_textfile(out, "\n".join(lines) + "\n")
    return 0 if up else 1


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit("usage: pgcluster-table-sizes ROLE SOCKET_DIR PORT TOP OUT")
    sys.exit(main(*sys.argv[1:]))
