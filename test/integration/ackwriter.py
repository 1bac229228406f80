"""An insert-only writer that logs the commits it saw acknowledged, to prove none is lost.

Runs inside a lab host (python3 and psycopg2 are there): inserts ids START, START+1, ... one per
autocommitted transaction into TABLE (which needs a column ``id``) through DSN, until SECONDS
have passed or the file STOP exists. An id is used once, whether its INSERT succeeded or not
(a failed one may still have committed: only acknowledged ids are promised). On an error it
reconnects and goes on. Prints one JSON line at the end:

    {"acked": [ids], "failed": [[seconds since start, first line of the error], ...],
     "attempts": n, "longest_s": the slowest acknowledged INSERT (a pause shows here)}

Usage: python3 ackwriter.py DSN TABLE SECONDS [START] [STOP]
``labtools.AckWriter`` starts it on a host and checks its ids against any server.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psycopg2

PAUSE_AFTER_ERROR = 0.05


def main(dsn: str, table: str, seconds: float, start: int = 1, stop: str = "") -> dict:
    acked: list[int] = []
    failed: list[list] = []
    longest = 0.0
    conn = None
    t0 = time.monotonic()
    i = start
    while time.monotonic() - t0 < seconds and not (stop and os.path.exists(stop)):
        t = time.monotonic()
        try:
            if conn is None:
                conn = psycopg2.connect(dsn, connect_timeout=5)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} (id) VALUES (%s)", (i,))  # noqa: S608 (a test's own table)
            acked.append(i)
            longest = max(longest, time.monotonic() - t)
        except psycopg2.Error as exc:
            failed.append([round(t - t0, 3), str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)])
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(PAUSE_AFTER_ERROR)
        i += 1
    if conn is not None:
        conn.close()
    return {"acked": acked, "failed": failed, "attempts": i - start, "longest_s": round(longest, 3)}


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], a[1], float(a[2]), int(a[3]) if len(a) > 3 else 1, a[4] if len(a) > 4 else "")))
