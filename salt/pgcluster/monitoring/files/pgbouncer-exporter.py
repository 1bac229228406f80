#!/usr/bin/python3 -I
"""PgBouncer's pools and statistics for Prometheus, over TLS (pgcluster's own: Debian 12's
prometheus-pgbouncer-exporter 1.7 fails on PgBouncer 1.18's SHOW STATS, and serves no TLS).

Usage: pgcluster-pgbouncer-exporter LISTEN_ADDR PORT CERT KEY SOCKET_DIR PGBOUNCER_PORT

Runs as the OS user postgres: the admin console's peer user (stats_users). One connection to the
console, kept open and reopened when it breaks; each scrape runs SHOW POOLS and SHOW STATS.
Metrics (labels database, user): pgbouncer_up, pgbouncer_active_clients,
pgbouncer_waiting_clients, pgbouncer_active_servers, pgbouncer_idle_servers,
pgbouncer_max_wait_seconds; per database: pgbouncer_transactions_total, pgbouncer_queries_total,
pgbouncer_wait_seconds_total.
"""

import http.server
import ssl
import sys
import threading

import psycopg2

POOLS = {  # SHOW POOLS column: (metric, help)
    "cl_active": ("active_clients", "client connections linked to a server connection"),
    "cl_waiting": ("waiting_clients", "client connections waiting for a server connection"),
    "sv_active": ("active_servers", "server connections linked to a client"),
    "sv_idle": ("idle_servers", "server connections idle and ready"),
}
STATS = {  # SHOW STATS column: (metric, help, scale)
    "total_xact_count": ("transactions_total", "transactions pooled", 1),
    "total_query_count": ("queries_total", "queries pooled", 1),
    "total_wait_time": ("wait_seconds_total", "time clients waited for a server", 1e-6),
}


class Console:
    def __init__(self, socket_dir: str, port: int) -> None:
        self.args = {"host": socket_dir, "port": port, "user": "postgres", "dbname": "pgbouncer"}
        self.conn = None
        self.lock = threading.Lock()

    def show(self, what: str) -> list[dict]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(connect_timeout=3, **self.args)
            self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def metrics(self) -> str:
        with self.lock:
            try:
                pools, stats = self.show("POOLS"), self.show("STATS")
            except psycopg2.Error:
                if self.conn is not None:
                    self.conn.close()
                return "# TYPE pgbouncer_up gauge\npgbouncer_up 0\n"
        out = ["# TYPE pgbouncer_up gauge", "pgbouncer_up 1"]
        for col, (name, doc) in POOLS.items():
            out += [f"# HELP pgbouncer_{name} {doc}", f"# TYPE pgbouncer_{name} gauge"]
            out += [f'pgbouncer_{name}{{database="{p["database"]}",user="{p["user"]}"}} {int(p[col])}' for p in pools]
        out += [
            "# HELP pgbouncer_max_wait_seconds longest wait of a waiting client",
            "# TYPE pgbouncer_max_wait_seconds gauge",
        ]
        out += [f'pgbouncer_max_wait_seconds{{database="{p["database"]}",user="{p["user"]}"}} '
                f'{int(p["maxwait"]) + int(p.get("maxwait_us", 0)) / 1e6}' for p in pools]  # fmt: skip
        for col, (name, doc, scale) in STATS.items():
            out += [f"# HELP pgbouncer_{name} {doc}", f"# TYPE pgbouncer_{name} counter"]
            out += [f'pgbouncer_{name}{{database="{s["database"]}"}} {int(s[col]) * scale:g}' for s in stats]
        return "\n".join(out) + "\n"


def serve(listen: str, port: int, cert: str, key: str, console: Console) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = console.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # no line per scrape in the journal
            pass

    server = http.server.ThreadingHTTPServer((listen, port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit("usage: pgcluster-pgbouncer-exporter LISTEN_ADDR PORT CERT KEY SOCKET_DIR PGBOUNCER_PORT")
    addr, port, cert, key, socket_dir, pgb_port = sys.argv[1:]
    serve(addr, int(port), cert, key, Console(socket_dir, int(pgb_port)))
