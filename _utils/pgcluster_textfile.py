"""pgBackRest's facts as Prometheus metrics, for the node exporter's textfile collector.

The backup host's timer runs a small script that imports this file (standard library only, like
pgcluster_routing for PgBouncer's start-up hook): ``pgbackrest info --output=json`` in,
a ``.prom`` file out, written atomically. Salt loads it as a custom util too, so the unit tests
and the runners use the same code (``__utils__["pgcluster_textfile.pgbackrest_metrics"]``).

Metrics (gauges; labels ``stanza`` and, per backup type, ``type``):

- ``pgcluster_pgbackrest_up``: 1 when ``pgbackrest info`` answered, else 0 (then nothing else);
- ``pgcluster_pgbackrest_stanza_status``: pgBackRest's status code (0 ok, 2 no valid backup...);
- ``pgcluster_pgbackrest_last_backup_timestamp_seconds``, ``..._duration_seconds``,
  ``..._size_bytes`` (the database at that backup), ``..._repo_bytes`` (what it added to the
  repository): the newest good backup of each type;
- ``pgcluster_pgbackrest_backups``: good backups kept, per type;
- ``pgcluster_pgbackrest_repository_bytes``: the repository's size on disk (backups and WAL).

``gauge`` also writes the members' largest tables (``pgcluster_table_size_bytes{datname,table}``,
files/table-sizes.py).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

__virtualname__ = "pgcluster_textfile"
PREFIX = "pgcluster_pgbackrest_"
HELP = {
    "up": "1 when pgbackrest info answered",
    "stanza_status": "pgBackRest's status code of the stanza (0: ok)",
    "last_backup_timestamp_seconds": "end of the newest good backup of this type (unix time)",
    "last_backup_duration_seconds": "duration of the newest good backup of this type",
    "last_backup_size_bytes": "size of the database at the newest good backup of this type",
    "last_backup_repo_bytes": "what the newest good backup of this type added to the repository",
    "backups": "good backups of this type kept in the repository",
    "repository_bytes": "size of the repository on disk, backups and WAL",
}


def __virtual__():
    return __virtualname__


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def gauge(name: str, doc: str, samples: list[tuple[dict, float]]) -> list[str]:
    """The exposition lines of gauge NAME (HELP DOC) with SAMPLES [(labels, value)...]; none
    without samples."""
    if not samples:
        return []
    out = [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = str(value) if isinstance(value, int) else repr(float(value))
        out.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return out


def _lines(name: str, samples: list[tuple[dict, float]]) -> list[str]:
    return gauge(PREFIX + name, HELP[name], samples)


def pgbackrest_metrics(raw: list | None, repository_bytes: int | None = None) -> str:
    """The text exposition of RAW (``pgbackrest info --output=json``, parsed; None: it failed)."""
    samples: dict[str, list[tuple[dict, float]]] = {name: [] for name in HELP}
    samples["up"].append(({}, 0 if raw is None else 1))
    for s in raw or []:
        stanza = s.get("name")
        samples["stanza_status"].append(({"stanza": stanza}, (s.get("status") or {}).get("code", -1)))
        newest: dict[str, dict] = {}
        kept: dict[str, int] = {}
        for b in s.get("backup") or []:
            if b.get("error"):
                continue
            kind = b.get("type")
            kept[kind] = kept.get(kind, 0) + 1
            stop = (b.get("timestamp") or {}).get("stop", 0)
            if stop >= (newest.get(kind, {}).get("timestamp") or {}).get("stop", 0):
                newest[kind] = b
        for kind, b in sorted(newest.items()):
            labels = {"stanza": stanza, "type": kind}
            ts, info = b.get("timestamp") or {}, b.get("info") or {}
            samples["last_backup_timestamp_seconds"].append((labels, ts.get("stop", 0)))
            samples["last_backup_duration_seconds"].append((labels, ts.get("stop", 0) - ts.get("start", 0)))
            samples["last_backup_size_bytes"].append((labels, info.get("size", 0)))
            samples["last_backup_repo_bytes"].append((labels, (info.get("repository") or {}).get("delta", 0)))
        for kind, count in sorted(kept.items()):
            samples["backups"].append(({"stanza": stanza, "type": kind}, count))
    if repository_bytes is not None:
        samples["repository_bytes"].append(({}, repository_bytes))
    lines = [line for name in HELP for line in _lines(name, samples[name])]
    return "\n".join(lines) + "\n"


def tree_bytes(path: str) -> int:
    """Bytes of the regular files under PATH (not following links)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
    return total


def write_textfile(path: str, text: str) -> None:
    """Write TEXT to PATH atomically (the collector never reads half a file), mode 0644."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".pgcluster-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
