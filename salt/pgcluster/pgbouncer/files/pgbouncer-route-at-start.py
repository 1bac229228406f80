#!/usr/bin/python3 -I
"""Before PgBouncer starts (systemd ExecStartPre): route each cluster to the leader Patroni
reports now, so that a host coming back from a crash never serves a stale route, for
instance to its own PostgreSQL that was the leader before the crash.

Usage: pgbouncer-route-at-start CONF_DIR. Reads CONF_DIR/routing-<cluster>.json (written by
Salt, no secret) and rewrites the routing file it names through pgcluster_routing, the
formula's one leader finder, installed beside this script. With no leader found, the
databases point at no server: clients get an error, never a write on a former leader; the
reactor repoints it soon after.
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster_routing  # noqa: E402


def main(conf_dir: str) -> int:
    for path in sorted(glob.glob(os.path.join(conf_dir, "routing-*.json"))):
        with open(path) as f:
            spec = json.load(f)
        pgcluster_routing.route_to_leader(spec, timeout=1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
