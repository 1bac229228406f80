"""The lab itself: names, isolation, crash/boot, idempotent up, clean down, bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from labtools import LAB, lab, lab_status, sh, wait_for

pytestmark = pytest.mark.usefixtures("lab_up")

HOSTS = {"salt": "198.18.0.10", "pg1": "198.18.0.11", "pg2": "198.18.0.12",
         "pg3": "198.18.0.13", "backup": "198.18.0.20", "app1": "198.18.0.30",
         "legacy": "198.18.0.40"}  # fmt: skip
STATE_DIR = Path("/var/lib/pgcluster-lab")


def status() -> dict[str, str]:
    """{host: state} of the hosts 'lab up' boots (the topology's spare pg4 is left off)."""
    return {host: state.split()[0] for host, state in lab_status().items() if host in HOSTS}


def test_status_names_the_spare_as_not_booted():
    lines = lab_status()
    assert lines["pg4"] == "spare, not booted (lab boot pg4)", lines


def init_pid(host: str) -> int:
    nspawn = int((STATE_DIR / "hosts" / host / "nspawn.pid").read_text())
    return int(Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0])


def pids_in_pidns(ns: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "ns" / "pid") == ns:
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def can_ping(src: str, dst: str) -> bool:
    return sh(src, f"ping -c1 -W1 {dst}", check=False).returncode == 0


def test_hosts_reach_each_other_by_name():
    for src in HOSTS:
        loop = "; ".join(f"getent hosts {d} && ping -c1 -W2 {d} >/dev/null" for d in HOSTS if d != src)
        out = sh(src, f"set -e; {loop}; hostname").stdout.split()
        assert out[-1] == src
        resolved = dict(zip(out[1:-1:2], out[0:-1:2], strict=True))
        assert resolved == {d: a for d, a in HOSTS.items() if d != src}


def test_every_minion_answers_with_its_own_id():
    ret = json.loads(lab("salt", "*", "grains.item", "id", "ipv4", "--out=json", "--static").stdout)
    assert set(ret) == set(HOSTS)
    for name, grains in ret.items():
        assert grains["id"] == name
        assert HOSTS[name] in grains["ipv4"]


def test_hosts_have_distinct_machine_ids():
    ids = {h: sh(h, "cat /etc/machine-id").stdout.strip() for h in HOSTS}
    assert len(set(ids.values())) == len(HOSTS)
    assert Path("/etc/machine-id").read_text().strip() not in ids.values()


def test_isolate_cuts_both_ways_and_heal_restores():
    assert can_ping("pg1", "pg2") and can_ping("pg2", "pg1")
    lab("isolate", "pg2")
    try:
        assert status()["pg2"] == "isolated"
        assert not can_ping("pg1", "pg2")
        assert not can_ping("pg2", "pg1")
        assert not can_ping("pg2", "salt")
        assert can_ping("pg1", "pg3")  # the others still talk
    finally:
        lab("heal", "pg2")
    assert status()["pg2"] == "running"
    wait_for("pg1 -> pg2 after heal", lambda: can_ping("pg1", "pg2"), 10)
    wait_for("pg2 -> pg1 after heal", lambda: can_ping("pg2", "pg1"), 10)


def test_crash_kills_every_process_and_boot_keeps_files():
    sh("app1", "echo survived-$$ > /root/crash-marker")
    marker = sh("app1", "cat /root/crash-marker").stdout
    pidns = os.readlink(f"/proc/{init_pid('app1')}/ns/pid")
    assert len(pids_in_pidns(pidns)) > 3  # systemd, journald, networkd, salt-minion...
    lab("crash", "app1")
    assert pids_in_pidns(pidns) == []
    assert status()["app1"] == "crashed"
    lab("boot", "app1")
    assert status()["app1"] == "running"
    assert sh("app1", "cat /root/crash-marker").stdout == marker

    def minion_back() -> bool:
        res = lab("salt", "app1", "test.ping", "--out=json", "--static", "-t", "5", check=False)
        return res.returncode == 0 and json.loads(res.stdout or "{}").get("app1") is True

    wait_for("app1 minion after boot", minion_back, 60)


def test_stop_is_a_clean_shutdown():
    lab("stop", "app1")
    assert status()["app1"] == "stopped"
    lab("boot", "app1")
    # A clean shutdown lets journald flush and mark the boot as ended: a new boot id.
    boots = sh("app1", "journalctl --list-boots --no-pager | wc -l").stdout.strip()
    assert int(boots) >= 2


def test_up_twice_is_idempotent():
    before = {h: init_pid(h) for h in HOSTS}
    ids = {h: sh(h, "cat /etc/machine-id").stdout for h in HOSTS}
    lab("up")
    assert {h: init_pid(h) for h in HOSTS} == before
    assert {h: sh(h, "cat /etc/machine-id").stdout for h in HOSTS} == ids
    assert set(status().values()) == {"running"}


def lab_leftovers() -> list[str]:
    left = []
    ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    left += [line for line in ps.splitlines() if "systemd-nspawn" in line and not line.startswith("Z")]
    left += [line for line in Path("/proc/mounts").read_text().splitlines() if "pgcluster-lab" in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    left += [line for line in links.splitlines() if "pgclab0" in line or ": vb-" in line]
    if STATE_DIR.exists():
        left.append(f"{STATE_DIR} exists")
    return left


def test_down_leaves_nothing_and_up_again_works():
    lab("down")
    assert lab_leftovers() == []
    # A salt-call run on the machine leaves Salt files there: no host may inherit them.
    marker = Path("/var/cache/salt/minion/extmods/modules/machine_only.py")
    created = not marker.exists()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("# written on the machine\n")
    try:
        lab("up")
        assert set(status().values()) == {"running"}
        assert sh("pg1", f"test -e {marker}", check=False).returncode != 0
    finally:
        if created:
            marker.unlink()


@pytest.mark.parametrize(
    "args",
    [["exec", "nosuchhost", "--", "true"], ["crash", "nosuchhost"], ["isolate", "db9"]],
)
def test_unknown_host_is_refused(args):
    res = lab(*args, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "unknown host" in res.stderr


def test_fault_on_a_host_that_is_not_running_is_refused():
    lab("stop", "app1")
    try:
        for verb in ("crash", "stop", "isolate", "heal"):
            res = lab(verb, "app1", check=False)
            assert res.returncode == 2, verb
            assert res.stderr.strip() == "lab: app1 is not running"
        assert status()["app1"] == "stopped"
    finally:
        lab("boot", "app1")


@pytest.mark.parametrize(
    "body, problem",
    [
        ('[[hosts]]\nname="salt"\naddress="198.18.0.10"\nmaster=true\n'
         '[[hosts]]\nname="salt"\naddress="198.18.0.11"\n', "duplicate host name 'salt'"),
        ('[[hosts]]\nname="salt"\naddress="198.18.0.10"\nmaster=true\n'
         '[[hosts]]\nname="db"\naddress="198.18.0.10"\n', "duplicate address 198.18.0.10"),
        ('[[hosts]]\nname="salt"\naddress="10.0.0.5"\nmaster=true\n', "not a host address in the lab network"),
    ],
)  # fmt: skip
def test_bad_topology_is_refused_and_changes_nothing(tmp_path, body, problem):
    before = {h: init_pid(h) for h in HOSTS}
    bad = tmp_path / "topology.toml"
    bad.write_text(body)
    res = lab("up", "--topology", str(bad), check=False)
    assert res.returncode == 2
    assert problem in res.stderr and res.stderr.count("\n") == 1
    assert {h: init_pid(h) for h in HOSTS} == before


def test_up_without_root_is_refused():
    res = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(LAB), "up"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert res.stderr == "lab: this command must run as root (it manages containers, mounts and a bridge)\n"
