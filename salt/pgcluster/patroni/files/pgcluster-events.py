"""pgcluster-events: relay Patroni callbacks to the Salt master as events.

Runs as root under the Python that runs the salt-minion, started by systemd with the
listening socket /run/pgcluster/events.sock (group postgres, 0660) passed as fd 3. Each
connection carries one JSON line {action, role, cluster} from patroni-callback; it is
checked (known action and role, this host's cluster) and sent to the master through the
running minion (no salt-call start-up, no second authentication):

    tag  pgcluster/patroni/<role_change|start|stop|restart|reload>
    data {cluster, member: <this minion id>, role, action, time}

The master never trusts this payload: its reactor checks the sender and reads the leader
from Patroni itself.
"""

import json
import logging
import os
import socket
import sys
import time

import salt.config
import salt.utils.event

log = logging.getLogger("pgcluster-events")
ACTIONS = {"on_role_change": "role_change", "on_start": "start", "on_stop": "stop",
           "on_restart": "restart", "on_reload": "reload"}  # fmt: skip
# Patroni 4 says primary, 3.x master; demoted and standby_leader come with role changes.
ROLES = {"primary", "master", "replica", "demoted", "standby_leader", "uninitialized"}


def parse(line: bytes, scope: str) -> dict:
    """The checked event of one callback line; raises ValueError naming what is wrong."""
    msg = json.loads(line.decode("utf-8", "strict"))
    if not isinstance(msg, dict):
        raise ValueError("not a JSON object")
    action, role, cluster = msg.get("action"), msg.get("role"), msg.get("cluster")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if cluster != scope:
        raise ValueError(f"cluster {cluster!r} is not this host's cluster {scope!r}")
    return {"action": action, "role": "primary" if role == "master" else role, "cluster": cluster}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    scope = sys.argv[1]
    opts = salt.config.minion_config("/etc/salt/minion")
    if os.environ.get("LISTEN_FDS") != "1":
        log.error("expects its listening socket from systemd (pgcluster-events.socket)")
        return 2
    server = socket.socket(fileno=3)
    bus = salt.utils.event.get_event("minion", opts=opts, listen=False)
    log.info("relaying Patroni callbacks of cluster %s as minion %s", scope, opts["id"])
    while True:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(2)
            try:
                event = parse(conn.recv(4096).split(b"\n", 1)[0], scope)
            except (ValueError, OSError) as exc:
                log.warning("ignored a callback message: %s", exc)
                continue
        data = dict(event, member=opts["id"], time=time.time())
        tag = f"pgcluster/patroni/{ACTIONS[event['action']]}"
        if not bus.fire_master(data, tag):
            log.warning("could not hand %s to the minion (is salt-minion running?)", tag)
        else:
            log.info("sent %s role=%s", tag, data["role"])


if __name__ == "__main__":
    sys.exit(main())
