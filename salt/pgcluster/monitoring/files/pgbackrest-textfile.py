#!/usr/bin/python3 -I
"""pgBackRest's facts for the node exporter's textfile collector (run by a systemd timer on the
backup host): ``pgbackrest info --output=json`` as the repository's owner, then the metrics of
pgcluster_textfile (installed beside this script; the unit tests use the same code) written
atomically to OUT.

Usage: pgbackrest-textfile REPO_USER REPO_PATH OUT
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgcluster_textfile  # noqa: E402


def info(user: str) -> list | None:
    """pgBackRest's view of every stanza, or None when it did not answer."""
    try:
        res = subprocess.run(["runuser", "-u", user, "--", "pgbackrest", "--output=json", "info"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        return json.loads(res.stdout) if res.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def main(user: str, repo: str, out: str) -> int:
    raw = info(user)
    text = pgcluster_textfile.pgbackrest_metrics(raw, pgcluster_textfile.tree_bytes(repo))
    pgcluster_textfile.write_textfile(out, text)
    return 0 if raw is not None else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: pgbackrest-textfile REPO_USER REPO_PATH OUT")
    sys.exit(main(*sys.argv[1:]))
