#!/usr/bin/python3 -I
"""Patroni callback (on_role_change, on_start, on_stop): hand the event to the local
pgcluster-events relay and return at once. Patroni waits for nothing and a missing relay
never blocks it. Arguments: SOCKET (from the formula's callback command) then, from Patroni,
ACTION ROLE CLUSTER."""

import json
import socket
import sys


def main() -> int:
    if len(sys.argv) != 5:
        print("usage: patroni-callback SOCKET ACTION ROLE CLUSTER", file=sys.stderr)
        return 2
    sock, action, role, cluster = sys.argv[1:]
    msg = json.dumps({"action": action, "role": role, "cluster": cluster}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(sock)
            s.sendall(msg)
    except OSError as exc:
        print(f"patroni-callback: cannot reach {sock}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
