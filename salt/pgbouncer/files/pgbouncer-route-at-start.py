#!/usr/bin/python3 -I
"""Before PgBouncer starts (systemd ExecStartPre): route each cluster to the leader Patroni
reports now, so that a host coming back from a crash never serves a stale route, for
instance to its own PostgreSQL that was the leader before the crash.

Reads /etc/pgbouncer/routing-<cluster>.json (written by Salt); asks each member's REST API
for /cluster (1 s each); rewrites routing-<cluster>.ini in the format of the pgbouncer
execution module. With no leader found, the databases point at no server (port 1):
clients get an error, never a write on a former leader. The reactor repoints it soon after.
"""

import glob
import json
import os
import urllib.request

CONF_DIR = "/etc/pgbouncer"


def leader_address(spec: dict) -> str | None:
    for api in spec["apis"]:
        try:
            with urllib.request.urlopen(f"{api}/cluster", timeout=1) as resp:
                members = json.load(resp).get("members", [])
        except (OSError, ValueError):
            continue
        for m in members:
            if m.get("role") == "leader" and m.get("name") in spec["hosts"]:
                return spec["hosts"][m["name"]]
    return None


def main() -> int:
    for path in glob.glob(os.path.join(CONF_DIR, "routing-*.json")):
        with open(path) as f:
            spec = json.load(f)
        leader = leader_address(spec)
        port = spec["port"] if leader else 1
        text = spec["header"].format(leader=leader or "none") + "".join(
            spec["line"].format(name=db, db=db, leader=leader or "127.0.0.1", port=port) for db in spec["databases"]
        )
        tmp = path[:-5] + ".ini.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path[:-5] + ".ini")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
