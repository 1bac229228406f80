"""An insert-only writer that logs the commits it saw acknowledged, to prove none is lost.

Runs inside a lab host (python3 and psycopg2 are there): inserts ids START, START+1, ... one per
autocommitted transaction into TABLE (which needs a column ``id``) through DSN, until SECONDS
have passed or the file STOP exists. An id is used once, whether its INSERT succeeded or not
(a failed one may still have committed: only acknowledged ids are promised). On an error it
reconnects and goes on. Prints one JSON line at the end:

    {"acked": [ids], "failed": [[seconds since start, first line of the error], ...],
     "attempts": n, "longest_s": the slowest acknowledged INSERT (a pause shows here),
     "stuck": whether an INSERT still waited GRACE seconds after the stop}

Usage: python3 ackwriter.py DSN TABLE SECONDS [START] [STOP]
``labtools.AckWriter`` starts it on a host and checks its ids against any server.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import psycopg2

PAUSE_AFTER_ERROR = 0.05
# After the stop, an INSERT still waiting (e.g. in a paused PgBouncer) gets this long to finish.
GRACE = 15


class Writer(threading.Thread):
    def __init__(self, dsn: str, table: str, start: int):
        super().__init__(daemon=True)
        self.dsn, self.table, self.next = dsn, table, start
        self.acked: list[int] = []
        self.failed: list[list] = []
        self.longest = 0.0
        self.stopping = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        conn = None
        while not self.stopping.is_set():
            t, i = time.monotonic(), self.next
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=5)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (id) VALUES (%s)", (i,))  # noqa: S608 (a test's own table)
                self.acked.append(i)
                self.longest = max(self.longest, time.monotonic() - t)
            except psycopg2.Error as exc:
                text = str(exc).strip()
                self.failed.append([round(t - self.t0, 3), text.splitlines()[0] if text else repr(exc)])
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(PAUSE_AFTER_ERROR)
            self.next = i + 1
        if conn is not None:
            conn.close()


def main(dsn: str, table: str, seconds: float, start: int = 1, stop: str = "") -> dict:
    writer = Writer(dsn, table, start)
    writer.start()
    while time.monotonic() - writer.t0 < seconds and not (stop and os.path.exists(stop)) and writer.is_alive():
        time.sleep(0.1)
    writer.stopping.set()
    writer.join(GRACE)
    return {"acked": list(writer.acked), "failed": list(writer.failed), "attempts": writer.next - start,
            "longest_s": round(writer.longest, 3), "stuck": writer.is_alive()}  # fmt: skip


if __name__ == "__main__":
    a = sys.argv[1:]
    report = main(a[0], a[1], float(a[2]), int(a[3]) if len(a) > 3 else 1, a[4] if len(a) > 4 else "")
    print(json.dumps(report), flush=True)
    os._exit(0)  # an INSERT stuck past the grace must not hold the process
