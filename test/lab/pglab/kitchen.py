"""`lab kitchen [SUITE]`: run kitchen.yml's suites on fresh lab hosts, as kitchen-salt would.

For each suite: a fresh host named by the suite's ``salt_minion_id`` boots (no Salt master, no
minion daemon), gets the repository read-only at /srv/pgcluster and, under /srv/kitchen, what
kitchen-salt lays out: ``srv/salt`` (the formula, the custom modules, a ``top.sls`` from
``state_top``), ``srv/pillar`` (``pillars`` and ``pillars_from_files``) and a minion
configuration. It is converged masterless (``salt-call --local state.highstate``), converged
again (that second run must change nothing), then the suite's testinfra tests run on the host
(``--hosts=local://``). Suites named ``NAME-*`` form one group, converged together (the
``cluster-*`` suites need each other); groups on hosts of their own run at the same time. The
hosts are removed afterwards.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import base
from .host import LabHost
from .topology import Topology

KITCHEN_DIR = "/srv/kitchen"  # on the host's own disk (its /tmp is a fresh tmpfs)
REPO_IN_HOST = "/srv/pgcluster"
CUSTOM = ("_modules", "_states", "_utils", "_runners")


class KitchenError(RuntimeError):
    """kitchen.yml cannot be run as asked; the message names what is wrong."""


@dataclass
class Suite:
    name: str
    minion: str
    state_top: dict
    pillars: dict
    pillars_from_files: dict
    formula: str
    verifier: str
    results: dict = field(default_factory=dict)


def _merge(base_: dict, over: dict) -> dict:
    out = dict(base_)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(path: Path) -> list[Suite]:
    """The suites of kitchen.yml (top-level provisioner and verifier merged under each suite's)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KitchenError(f"{path}: {exc}") from None
    suites = []
    for s in doc.get("suites") or []:
        prov = _merge(doc.get("provisioner") or {}, s.get("provisioner") or {})
        ver = _merge(doc.get("verifier") or {}, s.get("verifier") or {})
        if not prov.get("salt_minion_id"):
            raise KitchenError(f"{path}: suite {s.get('name')!r}: provisioner.salt_minion_id names no lab host")
        suites.append(Suite(s["name"], prov["salt_minion_id"], prov.get("state_top") or {}, prov.get("pillars") or {},
                            prov.get("pillars_from_files") or {}, prov.get("formula", ""),
                            " ".join(str(ver.get("command", "")).split())))  # fmt: skip
    return suites


def groups(suites: list[Suite], wanted: str | None) -> list[list[Suite]]:
    """The suites to run, grouped: NAME-* suites together. WANTED: a suite or a group name."""
    out: dict[str, list[Suite]] = {}
    for s in suites:
        out.setdefault(s.name.split("-", 1)[0], []).append(s)
    if wanted is None:
        return list(out.values())
    chosen = [g for key, g in out.items() if key == wanted] or [[s] for s in suites if s.name == wanted]
    if not chosen:
        raise KitchenError(f"no suite or group {wanted!r} in kitchen.yml (suites: {', '.join(s.name for s in suites)})")
    return chosen


def batches(chosen: list[list[Suite]]) -> list[list[Suite]]:
    """CHOSEN groups packed into batches run at once: groups whose hosts do not overlap share a
    batch (each suite is masterless on a host of its own), in kitchen.yml's order."""
    out: list[list[Suite]] = []
    for group in chosen:
        hosts = {s.minion for s in group}
        batch = next((b for b in out if not hosts & {s.minion for s in b}), None)
        if batch is None:
            out.append(list(group))
        else:
            batch.extend(group)
    return out


def _minion_conf(suite: Suite) -> str:
    root = KITCHEN_DIR
    return yaml.safe_dump({
        "local": True,
        "file_client": "local",
        "id": suite.minion,
        "root_dir": root,
        "state_top": "top.sls",
        "file_roots": {"base": [f"{root}/srv/salt"]},
        "pillar_roots": {"base": [f"{root}/srv/pillar"]},
    })  # fmt: skip


def lay_out(host: LabHost, suite: Suite, repo: Path) -> None:
    """Write kitchen-salt's layout onto the host's disk (before it boots)."""
    host.write(f"{KITCHEN_DIR}/etc/salt/minion", _minion_conf(suite))
    host.link(f"{KITCHEN_DIR}/srv/salt/{suite.formula}", f"{REPO_IN_HOST}/salt/{suite.formula}")
    for sub in CUSTOM:
        host.link(f"{KITCHEN_DIR}/srv/salt/{sub}", f"{REPO_IN_HOST}/{sub}")
    host.write(f"{KITCHEN_DIR}/srv/salt/top.sls", yaml.safe_dump(suite.state_top or {"base": {}}))
    for name, content in suite.pillars.items():
        host.write(f"{KITCHEN_DIR}/srv/pillar/{name}", yaml.safe_dump(content))
    for name, src in suite.pillars_from_files.items():
        host.write(f"{KITCHEN_DIR}/srv/pillar/{name}", (repo / src).read_text())


def _run(host: LabHost, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(host.nsenter(argv), capture_output=True, text=True, timeout=timeout)


def converge(host: LabHost, suite: Suite, timeout: float = 1200) -> dict:
    """salt-call --local state.highstate on the host; returns {seconds, changed, failed}."""
    t = time.monotonic()
    res = _run(host, ["salt-call", "--local", f"--config-dir={KITCHEN_DIR}/etc/salt", "--retcode-passthrough",
                      "--out=json", "state.highstate"], timeout)  # fmt: skip
    try:
        states = json.loads(res.stdout)["local"]
    except (ValueError, KeyError, TypeError):
        return {"seconds": round(time.monotonic() - t, 1), "changed": [], "failed": [res.stderr.strip()[-500:]]}
    if not isinstance(states, dict):
        return {"seconds": round(time.monotonic() - t, 1), "changed": [], "failed": [str(states)[:500]]}
    return {
        "seconds": round(time.monotonic() - t, 1),
        "changed": sorted(s["__id__"] for s in states.values() if s.get("changes")),
        "failed": sorted(f"{s['__id__']}: {str(s.get('comment'))[:300]}" for s in states.values()
                         if s.get("result") is False),
    }  # fmt: skip


def verify(host: LabHost, suite: Suite, timeout: float = 600) -> dict:
    """The suite's verifier command on the host, with testinfra's local backend."""
    words = shlex.split(suite.verifier.replace("${KITCHEN_SUITE}", suite.name))
    if not words or words[0] not in ("py.test", "pytest"):
        raise KitchenError(f"suite {suite.name}: verifier command must run py.test, got {suite.verifier!r}")
    args = [w for w in words[1:] if not w.startswith("--hosts")]
    argv = [str(base.VENV / "bin" / "python"), "-m", "pytest", "--hosts=local://", "-p", "no:cacheprovider",
            "--rootdir", REPO_IN_HOST, *[a if a.startswith("-") else f"{REPO_IN_HOST}/{a}" for a in args]]  # fmt: skip
    t = time.monotonic()
    res = _run(host, argv, timeout)
    summary = (re.findall(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$", res.stdout, re.M) or [res.stdout[-300:]])[-1]
    return {"seconds": round(time.monotonic() - t, 1), "passed": res.returncode == 0, "summary": summary,
            "output": "" if res.returncode == 0 else (res.stdout + res.stderr)[-3000:]}  # fmt: skip


def run_group(topo: Topology, group: list[Suite], make_host, repo: Path) -> bool:
    """Fresh hosts for GROUP, converged together twice, verified; True when every suite passed."""
    hosts = {}
    for s in group:
        h = make_host(topo.host(s.minion))
        lay_out(h, s, repo)
        hosts[s.name] = h
    for s in group:
        base.say(f"kitchen {s.name}: booting {s.minion}")
        hosts[s.name].boot(extra_binds=[f"{repo}:{REPO_IN_HOST}"])
    alive = list(group)  # a suite that failed a round goes no further; the others go on
    for round_ in ("converge", "idempotence"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(alive) or 1) as pool:
            done = dict(zip([s.name for s in alive], pool.map(lambda s: converge(hosts[s.name], s), alive),
                            strict=True))  # fmt: skip
        for s in list(alive):
            r = s.results[round_] = done[s.name]
            bad = r["failed"] or (round_ == "idempotence" and r["changed"])
            detail = f": {(r['failed'] or r['changed'])[:5]}" if bad else ""
            base.say(f"kitchen {s.name}: {round_} {r['seconds']} s, {len(r['changed'])} changed, "
                     f"{len(r['failed'])} failed{detail}")  # fmt: skip
            if bad:
                alive.remove(s)
    for s in alive:
        r = s.results["verify"] = verify(hosts[s.name], s)
        base.say(f"kitchen {s.name}: verify {r['summary']} ({r['seconds']} s)")
        if not r["passed"]:
            print(r["output"], flush=True)
    return all(s.results.get("verify", {}).get("passed") for s in group)
