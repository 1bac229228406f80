"""`lab` command line: bring the multi-host lab up and down, run things in it, inject faults."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import base, kitchen, saltcfg
from .host import HOSTS_DIR, STATE_DIR, HostError, LabHost
from .topology import Topology, TopologyError, load

REPO = Path(__file__).resolve().parents[3]
TOPOLOGY_LINK = STATE_DIR / "topology.toml"
USAGE_ERROR = 2


class LabError(RuntimeError):
    """A lab command cannot be carried out; the message is shown as is, exit 2."""


def _topology(path: str | None) -> Topology:
    """The topology of the lab that is up, else the one given, else the default."""
    if path is None and TOPOLOGY_LINK.exists():
        path = str(TOPOLOGY_LINK)
    return load(path)


def _hosts(topo: Topology) -> list[LabHost]:
    return [LabHost(topo, h, REPO) for h in topo.hosts]


def _host(topo: Topology, name: str) -> LabHost:
    return LabHost(topo, topo.host(name), REPO)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("this command must run as root (it manages containers, mounts and a bridge)")


def _bridge_up(topo: Topology) -> None:
    ip = ["ip", "link", "show", "dev", topo.bridge]
    if subprocess.run(ip, capture_output=True).returncode != 0:
        subprocess.run(
            ["ip", "link", "add", topo.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"], check=True
        )
        subprocess.run(["ip", "addr", "add", f"{topo.gateway}/24", "dev", topo.bridge], check=True)
    subprocess.run(["ip", "link", "set", "dev", topo.bridge, "up"], check=True)


def _salt(topo: Topology, args: list[str], capture: bool = False) -> subprocess.CompletedProcess:
    master = _host(topo, topo.master.name)
    return subprocess.run(master.nsenter(args), capture_output=capture, text=True)


def _in_service(topo: Topology) -> set[str]:
    """The hosts whose minions the master has accepted: every booted one, and the spares brought in."""
    keys = _salt(topo, ["ls", "/etc/salt/pki/master/minions"], capture=True).stdout.split()
    return {h.name for h in topo.hosts} & set(keys)


def _sync(topo: Topology, names: list[str]) -> None:
    """saltutil.sync_all on the minions NAMES (the lab's minions do not sync at each highstate)."""
    sync = _salt(topo, ["salt", "-L", ",".join(names), "saltutil.sync_all", "--out=json", "--static", "-t", "120"],
                 capture=True)  # fmt: skip
    if sync.returncode != 0:
        raise LabError(f"saltutil.sync_all failed: {(sync.stdout + sync.stderr)[-2000:]}")


def wait_minions(topo: Topology, timeout: float = 120, names: set[str] | None = None) -> float:
    """Wait until every minion (or NAMES) answers test.ping. Returns the seconds waited; raises LabError."""
    start = time.monotonic()
    names = names or {h.name for h in topo.booted}
    answered: set[str] = set()
    target = ["-L", ",".join(sorted(names))]
    while time.monotonic() - start < timeout:
        res = _salt(topo, ["salt", *target, "test.ping", "--out=json", "--static", "-t", "5"], capture=True)
        try:
            answered = {k for k, v in json.loads(res.stdout or "{}").items() if v is True}
        except json.JSONDecodeError:
            answered = set()
        if names <= answered:
            return time.monotonic() - start
        time.sleep(1)
    raise LabError(f"minions not answering after {timeout:.0f} s: {', '.join(sorted(names - answered))}")


def cmd_up(args: argparse.Namespace) -> int:
    _require_root()
    topo = load(args.topology) if args.topology else _topology(None)
    if TOPOLOGY_LINK.exists() and args.topology and load(TOPOLOGY_LINK).hosts != topo.hosts:
        raise LabError("a lab with another topology is up: run 'lab down' first")
    t0 = time.monotonic()
    base.prepare()
    t_base = time.monotonic()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if topo.path != TOPOLOGY_LINK:
        shutil.copyfile(topo.path, TOPOLOGY_LINK)
    every = _hosts(topo)
    hosts = [h for h in every if not h.host.spare]
    # A lab booted from another checkout would serve that checkout's code to every minion.
    for h in hosts:
        other = h.bound_repo()
        if other is not None and Path(other) != REPO:
            raise LabError(f"a lab booted from another checkout ({other}) is up: run 'lab down' first")
    for h in every:  # a spare's disk too: 'lab boot' brings it in later
        h.provision()
    saltcfg.configure(every)
    _bridge_up(topo)
    for h in hosts:
        state = "running" if h.running() else "booting"
        base.say(f"{h.host.name:8} {h.host.address:14} {state}")
        h.boot()
    base.say("waiting for every minion to answer test.ping")
    waited = wait_minions(topo)
    # The minions do not sync custom modules at each highstate (saltcfg.MINION_CONF): now, once.
    _sync(topo, [h.host.name for h in every if not h.host.spare or h.running()])  # not a spare left stopped
    for h in hosts:
        if h.set_up():
            base.say(f"{h.host.name}: set up ({h.host.setup})")
    base.say(
        f"up: {len(hosts)} hosts, every minion answers "
        f"(base {t_base - t0:.1f} s, hosts {time.monotonic() - t_base:.1f} s, ping wait {waited:.1f} s)"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    _require_root()
    base.prepare()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """The project's main job: the lab, the default cluster deployed by highstate, its status."""
    args.topology = None
    cmd_up(args)
    topo = _topology(None)
    cmd_status(args)
    base.say("deploying the default cluster: state.apply on every minion")
    args.argv = []
    t = time.monotonic()
    rc = cmd_highstate(args)
    base.say(f"highstate: {time.monotonic() - t:.1f} s")
    members = [h for h in topo.hosts if h.name.startswith("pg")]
    if members:
        print(flush=True)
        subprocess.run(_host(topo, members[0].name).nsenter(["patronictl", "list"]), check=False)
    return rc


def cmd_down(args: argparse.Namespace) -> int:
    _require_root()
    topo = _topology(None)
    for h in _hosts(topo):
        h.kill()
    # Also hosts of an older topology that are still on disk.
    for d in HOSTS_DIR.glob("*") if HOSTS_DIR.exists() else []:
        subprocess.run(["umount", "-l", str(d / "root")], capture_output=True)
    for h in _hosts(topo):
        h.unmount()
        subprocess.run(["ip", "link", "delete", h.host.veth], capture_output=True)
    subprocess.run(["ip", "link", "delete", topo.bridge], capture_output=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    base.say("down: no container, mount, bridge or state left")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    topo = _topology(None)
    print(f"{'HOST':8} {'ADDRESS':14} STATE")
    for h in _hosts(topo):
        state = h.state()
        if h.host.spare and state == "stopped":
            state = f"spare, not booted (lab boot {h.host.name})"
        print(f"{h.host.name:8} {h.host.address:14} {state}")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    _require_root()
    topo = _topology(None)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("exec: no command given (lab exec HOST -- CMD...)")
    return subprocess.run(_host(topo, args.host).nsenter(argv)).returncode


def cmd_shell(args: argparse.Namespace) -> int:
    _require_root()
    topo = _topology(None)
    return subprocess.run(_host(topo, args.host).nsenter(["bash", "-l"], interactive=True)).returncode


def cmd_salt(args: argparse.Namespace) -> int:
    _require_root()
    return _salt(_topology(None), ["salt", *args.argv]).returncode


def cmd_run(args: argparse.Namespace) -> int:
    _require_root()
    return _salt(_topology(None), ["salt-run", *args.argv]).returncode


def summarize_highstate(ret: dict) -> tuple[list[str], bool]:
    """Per-minion summary lines of a state.apply JSON return, and whether all succeeded."""
    lines, ok = [], True
    for minion in sorted(ret):
        states = ret[minion]
        if not isinstance(states, dict):
            lines.append(f"{minion:8} ERROR: {states}")
            ok = False
            continue
        failed = [s for s in states.values() if not s.get("result", False) and s.get("result") is not None]
        changed = [s for s in states.values() if s.get("changes")]
        succeeded = len(states) - len(failed)
        lines.append(f"{minion:8} succeeded {succeeded:3}  changed {len(changed):3}  failed {len(failed):3}")
        for s in failed:
            lines.append(f"         FAILED {s.get('__id__', '?')}: {str(s.get('comment', ''))[:300]}")
        ok = ok and not failed
    return lines, ok


def cmd_highstate(args: argparse.Namespace) -> int:
    _require_root()
    topo = _topology(None)
    res = _salt(topo, ["salt", "*", "state.apply", "--out=json", "--static", "-t", "900", *args.argv], capture=True)
    try:
        ret = json.loads(res.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(res.stdout + res.stderr)
        raise LabError("highstate: no JSON return from salt") from None
    missing = _in_service(topo) - set(ret)
    lines, ok = summarize_highstate(ret)
    print("\n".join(lines))
    for m in sorted(missing):
        print(f"{m:8} NO RETURN")
    return 0 if ok and not missing else 1


def cmd_kitchen(args: argparse.Namespace) -> int:
    """kitchen.yml's suites on fresh hosts (see pglab.kitchen); the lab must be down."""
    _require_root()
    suites = kitchen.load(REPO / "kitchen.yml")
    chosen = kitchen.batches(kitchen.groups(suites, args.suite))
    if TOPOLOGY_LINK.exists():
        raise LabError("kitchen converges fresh hosts: run 'lab down' first")
    topo = load(None)
    base.prepare()
    ok = True
    for group in chosen:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(topo.path, TOPOLOGY_LINK)
        _bridge_up(topo)
        try:
            ok = kitchen.run_group(topo, group, lambda host: LabHost(topo, host, REPO), REPO) and ok
        finally:
            if not args.keep:
                cmd_down(args)
        if args.keep:
            break
    for group in chosen:
        for s in group:
            r = s.results
            idem = r.get("idempotence") or {"changed": ["not run"]}
            verdict = "passed" if r.get("verify", {}).get("passed") and not idem["changed"] else "FAILED"
            base.say(f"kitchen {s.name:15} {verdict}")
    return 0 if ok else 1


def _accept(topo: Topology, h: LabHost) -> None:
    """The master accepts spare host H's minion key (laid on its disk by saltcfg)."""
    master = _host(topo, topo.master.name)
    accept = ["sh", "-c", f"cat > /etc/salt/pki/master/minions/{h.host.name}"]
    key = (saltcfg.KEYS_DIR / f"{h.host.name}.pub").read_text()
    subprocess.run(master.nsenter(accept), input=key, text=True, check=True)


def _bring_in(topo: Topology, h: LabHost) -> None:
    """A spare host just booted (its key accepted) joins the lab: it answers test.ping and has
    pgcluster's custom modules."""
    wait_minions(topo, names={h.host.name})
    _sync(topo, [h.host.name])


def _fault(verb: str):
    def run(args: argparse.Namespace) -> int:
        _require_root()
        topo = _topology(None)
        h = _host(topo, args.host)
        if verb == "boot":
            if h.running():
                raise LabError(f"boot: {args.host} is already running")
            _bridge_up(topo)
            if h.host.spare:  # a fresh disk after 'lab retire': Salt laid onto it again
                h.provision()
                saltcfg.configure(_hosts(topo))
                _accept(topo, h)  # before it boots: its minion's first try is accepted
            h.boot()
            if h.host.spare:
                _bring_in(topo, h)
        elif verb == "retire":
            if not h.host.spare:
                raise LabError(f"retire: {args.host} is not a spare host (only spares leave the lab)")
            h.kill()
            if h.running():
                raise LabError(f"retire: {args.host} is still running after kill -9")
            forget = _salt(topo, ["salt-key", "-y", "-d", args.host], capture=True)
            if forget.returncode != 0:
                raise LabError(f"retire: salt-key -d {args.host} failed: {(forget.stdout + forget.stderr)[-500:]}")
            h.unmount()  # its disk goes: booted again, it is a new server
            shutil.rmtree(h.dir, ignore_errors=True)
        else:
            getattr(h, verb)()
        base.say(f"{verb} {args.host}: {h.state()}")
        return 0

    return run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lab", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", help="prepare the base, boot every host, wait for every minion")
    up.add_argument("--topology", help="topology file (default: test/lab/topology.toml)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("prepare", help="prepare the base only (packages, venv, wheels)").set_defaults(func=cmd_prepare)
    sub.add_parser("deploy", help="up, deploy the default cluster, print its status").set_defaults(func=cmd_deploy)
    sub.add_parser("down", help="remove every container, mount, bridge and state").set_defaults(func=cmd_down)
    sub.add_parser("status", help="host, address, state").set_defaults(func=cmd_status)
    for verb, func in (("exec", cmd_exec), ("shell", cmd_shell)):
        sp = sub.add_parser(verb, help=f"{verb} in a host")
        sp.add_argument("host")
        if verb == "exec":
            sp.add_argument("argv", nargs=argparse.REMAINDER)
        sp.set_defaults(func=func)
    for verb, func in (("salt", cmd_salt), ("run", cmd_run), ("highstate", cmd_highstate)):
        sp = sub.add_parser(verb, help=f"{verb} on the master")
        sp.add_argument("argv", nargs=argparse.REMAINDER)
        sp.set_defaults(func=func)
    kp = sub.add_parser("kitchen", help="run kitchen.yml's suites (or one suite or group) on fresh hosts")
    kp.add_argument("suite", nargs="?", help="a suite (member) or a group (cluster: every cluster-* suite)")
    kp.add_argument("--keep", action="store_true", help="leave the first group's hosts up afterwards")
    kp.set_defaults(func=cmd_kitchen)
    what = {
        "boot": "boot a host (a spare: also accept its minion)",
        "retire": "kill a spare host, forget its minion and its disk",
    }
    for verb in ("crash", "boot", "stop", "isolate", "heal", "retire"):
        sp = sub.add_parser(verb, help=what.get(verb, f"fault: {verb} a host"))
        sp.add_argument("host")
        sp.set_defaults(func=_fault(verb))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (LabError, HostError, TopologyError, kitchen.KitchenError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except subprocess.CalledProcessError as exc:
        print(f"lab: command failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        if exc.stderr:
            print(exc.stderr, file=sys.stderr, end="")
        return 1
    except KeyboardInterrupt:
        return 130
