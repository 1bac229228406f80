"""Prepare the machine once: OS packages, the Salt virtualenv and the offline wheelhouse.

Every lab host is an overlay on the machine's root filesystem, so whatever is
installed here before the hosts boot is installed in every host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent.parent
BASE_DIR = Path("/opt/pgcluster-lab")
VENV = BASE_DIR / "venv"
WHEELS = BASE_DIR / "wheels"
PYTHON = "/usr/bin/python3"

# Debian packages the formulas manage, plus what the lab itself needs.
PACKAGES = (
    "systemd-container",
    "iproute2",
    "python3-venv",
    "postgresql-15",
    "postgresql-contrib",
    "etcd-server",
    "etcd-client",
    "pgbouncer",
    "pgbackrest",
    "haproxy",
    "iputils-ping",
    "nftables",
    # Monitoring (pgcluster.monitoring): installed, but enabled on no host until the formula says so.
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "python3-psycopg2",
)
# Units the packages above enable that a lab host must not run unless the formula enables them
# (every host inherits the machine's unit links): Prometheus on every host would load the lab.
# Daemons of those packages: lab hosts inherit the machine's unit links through the overlay, so a
# unit enabled on the machine would run on every host (a stray PostgreSQL, etcd, PgBouncer and
# HAProxy on each). Nothing runs on a host unless the formula (or a benchmark) starts it.
DISABLED_UNITS = (
    "postgresql.service",
    "etcd.service",
    "pgbouncer.service",
    "haproxy.service",
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "prometheus-postgres-exporter.service",
)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def say(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def _missing_packages() -> list[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *PACKAGES],
        capture_output=True,
        text=True,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in PACKAGES if p not in installed]


def install_packages() -> None:
    """Install missing Debian packages without starting their services on the machine."""
    missing = _missing_packages()
    if not missing:
        say("OS packages: present")
        _disable_units()
        return
    say(f"OS packages: installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The machine is not a database server: keep package scripts from starting services here.
    had_policy = POLICY_RC_D.exists()
    if not had_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if not had_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    _disable_units()


def _disable_units() -> None:
    """Remove the machine's links of DISABLED_UNITS (offline, --root: the machine may run no systemd)."""
    subprocess.run(["systemctl", "--root=/", "disable", "--quiet", *DISABLED_UNITS], check=True)


def _pip(*args: str) -> None:
    """Run the venv's pip quietly; show its output only when it fails."""
    res = subprocess.run([str(VENV / "bin" / "pip"), *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise subprocess.CalledProcessError(res.returncode, res.args)


def _pip_once(what: str, reqfile: str, stamp: Path, *pip_args: str) -> None:
    """Run pip with REQFILE unless STAMP says it already ran with this very file."""
    reqs = (LAB_DIR / reqfile).read_text()
    if stamp.exists() and stamp.read_text() == reqs:
        say(f"{what}: present")
        return
    say(f"{what}: installing")
    _pip(*pip_args, "-r", str(LAB_DIR / reqfile))
    stamp.write_text(reqs)


def install_venv() -> None:
    """Create the shared virtualenv with the pinned Salt and the test tools."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([PYTHON, "-m", "venv", str(VENV)], check=True)
    _pip_once(f"virtualenv {VENV}", "requirements.txt", VENV / ".pgcluster-lab-requirements", "install", "-q")


def build_wheelhouse() -> None:
    """Download/build the wheels the hosts install from (they reach no package index)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    _pip_once(f"wheelhouse {WHEELS}", "wheels.txt", WHEELS / ".pgcluster-lab-wheels", "wheel", "-q", "-w", str(WHEELS))
    # A second Patroni version beside it (one pip run cannot resolve two): the rolling version change.
    stamp = WHEELS / ".pgcluster-lab-wheels-previous"
    _pip_once(f"wheelhouse {WHEELS} (previous Patroni)", "wheels-previous.txt", stamp, "wheel", "-q", "-w", str(WHEELS))


TOOLS_DIR = BASE_DIR / "bin"
# Test tools from Debian packages, unpacked, not installed (the machine runs no Prometheus, and
# the hosts, which see the machine's packages, none either): {tool: (package, path in it)}.
TOOLS = {
    "promtool": ("prometheus", "usr/bin/promtool"),
    "postgres_exporter": ("prometheus-postgres-exporter", "usr/bin/prometheus-postgres-exporter"),
    "amtool": ("prometheus-alertmanager", "usr/bin/amtool"),
}


def install_tools() -> None:
    """promtool (rule and configuration checks), amtool (Alertmanager's configuration) and the
    PostgreSQL exporter (its queries run against a real PostgreSQL in the functional tests), in
    TOOLS_DIR."""
    missing = {t: v for t, v in TOOLS.items() if not (TOOLS_DIR / t).exists()}
    if not missing:
        say(f"test tools {TOOLS_DIR}: present")
        return
    say(f"test tools {TOOLS_DIR}: unpacking {' '.join(sorted({p for p, _ in missing.values()}))}")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for tool, (package, inside) in missing.items():
            download = ["apt-get", "download", "-qq", package]
            if subprocess.run(download, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                subprocess.run(["apt-get", "update", "-qq"], check=True)  # no package lists yet
                subprocess.run(download, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
            deb = next(Path(tmp).glob(f"{package}_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/{package}"], check=True)
            shutil.copy2(f"{tmp}/{package}/{inside}", TOOLS_DIR / tool)


# A PostgreSQL minor upgrade for the lab to roll through (test_03f): the packages of the newest
# postgresql-15 the machine's apt knows, when newer than the one installed, downloaded into apt's
# cache, where every host (an overlay of this machine, with no route out) installs them from
# (apt brings the libpq5 they need along).
MINOR_PACKAGES = ("postgresql-15", "postgresql-client-15")


def postgres_minor() -> tuple[str, str]:
    """(installed, candidate) Debian versions of postgresql-15 on this machine."""
    out = subprocess.run(["apt-cache", "policy", MINOR_PACKAGES[0]], capture_output=True, text=True).stdout
    lines = [line.strip().split(": ", 1) for line in out.splitlines()]
    found = {k: v for k, *rest in lines if k in ("Installed", "Candidate") for v in rest}
    return found.get("Installed", ""), found.get("Candidate", "")


def cache_minor() -> None:
    """The newer minor's packages (and what apt pulls with them) in apt's cache, when there is
    one. Best effort: without network or a newer minor, the rolling upgrade test says so."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    installed, candidate = postgres_minor()
    if candidate == installed:  # maybe no security updates listed yet
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        installed, candidate = postgres_minor()
    if candidate == installed:
        say(f"PostgreSQL minor upgrade: none newer than {installed} offered")
        return
    pins = [f"{p}={candidate}" for p in MINOR_PACKAGES]
    download = ["apt-get", "install", "--download-only", "-y", "-qq", "--no-install-recommends", *pins]
    if subprocess.run(download, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        say(f"PostgreSQL minor upgrade: {candidate} could not be downloaded (no network?)")
        return
    say(f"PostgreSQL minor upgrade: {installed} -> {candidate} in apt's cache")


def prepare() -> None:
    """Prepare the base idempotently. Raises CalledProcessError when an install fails."""
    if not shutil.which("apt-get"):
        sys.exit("lab: apt-get not found: the lab needs Debian 12")
    install_packages()
    install_venv()
    build_wheelhouse()
    install_tools()
    cache_minor()
