"""One lab host: an overlay disk, a systemd-nspawn container booting full systemd, faults."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from .base import VENV
from .topology import SETUP_DIR, Host, Topology

STATE_DIR = Path("/var/lib/pgcluster-lab")
HOSTS_DIR = STATE_DIR / "hosts"
# Units every host has enabled by the machine image that only add noise to a lab host.
MASKED_UNITS = (
    "console-getty.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "systemd-timesyncd.service",
)
# Directories of the machine that a host must not inherit through the overlay's lower layer.
OPAQUE_DIRS = ("/etc/salt", "/var/cache/salt", "/var/cache/pgcluster-local")
PATH_IN_HOST = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HostError(RuntimeError):
    """A host operation cannot be carried out; the message says why."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class LabHost:
    """Files and processes of one host under STATE_DIR/hosts/NAME."""

    def __init__(self, topo: Topology, host: Host, repo: Path) -> None:
        self.topo = topo
        self.host = host
        self.repo = repo
        self.dir = HOSTS_DIR / host.name
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.pidfile = self.dir / "nspawn.pid"
        self.console = self.dir / "console.log"
        self.crashed_flag = self.dir / "crashed"
        self.isolated_flag = self.dir / "isolated"

    # ----- disk -------------------------------------------------------------------------
    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        """Write a file onto the host's disk (before it boots)."""
        path = self.upper / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def link(self, rel: str, target: str) -> None:
        """Create a symlink on the host's disk (before it boots)."""
        path = self.upper / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)

    def provision(self) -> None:
        """Lay out the host's own disk once: identity, network, masked noise."""
        if (self.dir / "provisioned").exists():
            return
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        h = self.host
        self.write("/etc/hostname", f"{h.name}\n")
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += "".join(f"{x.address}\t{x.name}\n" for x in self.topo.hosts)
        self.write("/etc/hosts", hosts)
        self.write("/etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
        # No name server: lab hosts resolve only lab names and have no route out.
        self.write("/etc/resolv.conf", "# lab host: names come from /etc/hosts\n")
        self.write(
            "/etc/systemd/network/10-lab.network",
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={h.address}/24\nConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\nLinkLocalAddressing=no\n",
        )
        self.link(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            "/lib/systemd/system/systemd-networkd.service",
        )
        for unit in MASKED_UNITS:
            self.link(f"/etc/systemd/system/{unit}", "/dev/null")
        for unit in h.services:
            self.link(f"/etc/systemd/system/multi-user.target.wants/{unit}", f"/lib/systemd/system/{unit}")
        # The machine's own Salt files (a salt-call run on the machine) must not show through the
        # overlay: opaque directories hide the lower layer's content.
        for d in OPAQUE_DIRS:
            path = self.upper / d.lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            os.setxattr(path, "trusted.overlay.opaque", b"y")
        for tool in ("salt", "salt-call", "salt-key", "salt-run", "salt-master", "salt-minion"):
            self.link(f"/usr/local/bin/{tool}", str(VENV / "bin" / tool))
        (self.dir / "provisioned").write_text("")

    def set_up(self) -> bool:
        """Run the host's setup script once (it must be running); True when it ran now."""
        stamp = self.dir / "set-up"
        if not self.host.setup or stamp.exists():
            return False
        script = (SETUP_DIR / self.host.setup).read_text()
        res = subprocess.run(self.nsenter(["bash", "-euo", "pipefail", "-s"]), input=script, text=True,
                             capture_output=True, timeout=600)  # fmt: skip
        if res.returncode != 0:
            why = f"{res.stdout}{res.stderr}"
            raise HostError(f"{self.host.name}: setup {self.host.setup} exited {res.returncode}\n{why}")
        stamp.write_text("")
        return True

    def is_mounted(self) -> bool:
        return _run("mountpoint", "-q", str(self.root), check=False).returncode == 0

    def mount(self) -> None:
        if self.is_mounted():
            return
        _run(
            "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir=/,upperdir={self.upper},workdir={self.work}",
            str(self.root),
        )  # fmt: skip

    def unmount(self) -> None:
        if self.is_mounted():
            _run("umount", "-l", str(self.root))

    # ----- processes --------------------------------------------------------------------
    def nspawn_pid(self) -> int | None:
        """PID of this host's systemd-nspawn, or None when the host is not running."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            return None
        if state == "Z" or f"--machine={self.host.name}".encode() not in cmdline:
            return None
        return pid

    def init_pid(self) -> int | None:
        """PID (on the machine) of the container's systemd, or None."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            # Early in a boot the child is nspawn's own helper, gone a moment later: only the
            # container's systemd counts (seen under load: nsenter into a vanished helper).
            if not children or Path(f"/proc/{children[0]}/comm").read_text().strip() != "systemd":
                return None
        except OSError:
            return None
        return int(children[0])

    def bound_repo(self) -> str | None:
        """The checkout this running host has at /srv/pgcluster (from its nspawn command line)."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0"):
            if arg.startswith("--bind-ro=") and arg.endswith(":/srv/pgcluster"):
                return arg.removeprefix("--bind-ro=").rsplit(":", 1)[0]
        return None

    def running(self) -> bool:
        return self.init_pid() is not None

    def state(self) -> str:
        if self.running():
            return "isolated" if self.isolated_flag.exists() else "running"
        return "crashed" if self.crashed_flag.exists() else "stopped"

    def boot(self, extra_binds: list[str] | None = None) -> None:
        """Boot the container from its disk; returns once its systemd runs. EXTRA_BINDS: more
        read-only bind mounts (SRC:DEST), e.g. the repository for a masterless kitchen host."""
        if self.running():
            return
        self.provision()
        self.mount()
        _run("ip", "link", "delete", self.host.veth, check=False)  # a stale veth blocks nspawn
        self.crashed_flag.unlink(missing_ok=True)
        self.isolated_flag.unlink(missing_ok=True)  # a new veth comes up linked
        cmd = [
            "systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
            f"--directory={self.root}", f"--machine={self.host.name}",
            f"--network-bridge={self.topo.bridge}", "--resolv-conf=off", "--timezone=off",
            "--link-journal=no", "--console=read-only",
        ]  # fmt: skip
        if self.host.master:
            cmd.append(f"--bind-ro={self.repo}:/srv/pgcluster")
        cmd += [f"--bind-ro={b}" for b in extra_binds or []]
        with open(self.console, "ab") as log:
            # A new session: the container outlives this command; the machine's init reaps it.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.init_pid() and Path(f"/proc/{self.init_pid()}/root/run/systemd").exists():
                return
            if proc.poll() is not None:
                raise HostError(f"{self.host.name}: systemd-nspawn exited; see {self.console}")
            time.sleep(0.1)
        raise HostError(f"{self.host.name}: container did not start within 30 s; see {self.console}")

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nspawn_pid() is None:
                return True
            time.sleep(0.1)
        return False

    def crash(self) -> None:
        """kill -9 of the container's init: every process of the host dies at once."""
        init = self.init_pid()
        if init is None:
            raise HostError(f"{self.host.name} is not running")
        self.crashed_flag.write_text(str(time.time()))
        os.kill(init, signal.SIGKILL)
        if not self._wait_gone(30):
            raise HostError(f"{self.host.name}: container did not go away after SIGKILL")

    def stop(self) -> None:
        """Clean shutdown through systemd (SIGRTMIN+4 asks it to power off)."""
        init = self.init_pid()
        if init is None:
            raise HostError(f"{self.host.name} is not running")
        os.kill(init, signal.SIGRTMIN + 4)
        if not self._wait_gone(90):
            self.kill()
            raise HostError(f"{self.host.name}: clean shutdown took over 90 s; killed")

    def kill(self) -> None:
        """Stop the container at once, whatever its state (used by down)."""
        init = self.init_pid()
        if init is not None:
            os.kill(init, signal.SIGKILL)
        pid = self.nspawn_pid()
        if pid is not None and not self._wait_gone(15):
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(5)

    def isolate(self) -> None:
        if not self.running():
            raise HostError(f"{self.host.name} is not running")
        _run("ip", "link", "set", "dev", self.host.veth, "down")
        self.isolated_flag.write_text("")

    def heal(self) -> None:
        if not self.running():
            raise HostError(f"{self.host.name} is not running")
        _run("ip", "link", "set", "dev", self.host.veth, "up")
        self.isolated_flag.unlink(missing_ok=True)

    def nsenter(self, argv: list[str], interactive: bool = False) -> list[str]:
        """Return the command line that runs ARGV inside the host as root."""
        init = self.init_pid()
        if init is None:
            raise HostError(f"{self.host.name} is not running")
        env = ["env", "-i", f"PATH={PATH_IN_HOST}", "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root"]
        if interactive:
            env.append(f"TERM={os.environ.get('TERM', 'xterm')}")
        return ["nsenter", "-t", str(init), "-a", "--wdns=/root", "--", *env, *argv]
