"""Salt master and minions of the lab: units, configuration and pre-seeded keys.

Keys are generated on the machine and laid onto each host's disk before its first
boot: the master knows every minion key and every minion knows the master key, so no
key is ever auto-accepted and no minion trusts a master it was not given.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from .base import VENV
from .host import STATE_DIR, LabHost

KEYS_DIR = STATE_DIR / "keys"
REPO_IN_MASTER = "/srv/pgcluster"

UNIT = """[Unit]
Description=Salt {role} (pgcluster lab)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={venv}/bin/salt-{role}
KillMode=process
Restart=on-failure
RestartSec=2
LimitNOFILE=16384

[Install]
WantedBy=multi-user.target
"""

MASTER_CONF = f"""# Written by the pgcluster lab. The repository is bind-mounted read-only at {REPO_IN_MASTER};
# its conf/master.d/pgcluster.conf holds every setting pgcluster needs (file_roots, module_dirs,
# reactor, schedule); these are the lab's own.
interface: 0.0.0.0
# Seven minions asking for pillar and files at once at each highstate (the default is 5).
worker_threads: 10
pillar_roots:
  base:
    - {REPO_IN_MASTER}/pillar
    # Overrides of a lab run (pgcluster/local.sls), written by tests onto the master's disk.
    - /srv/lab-pillar
fileserver_list_cache_time: 0
file_recv: False
auto_accept: False
open_mode: False
log_level_logfile: info
include:
  - {REPO_IN_MASTER}/conf/master.d/*.conf
"""

MINION_CONF = """# Written by the pgcluster lab.
master: {master}
id: {name}
log_level_logfile: info
# Reconnect quickly after a master restart (the safety net needs the minions back): a
# lab-sized fleet needs no thundering-herd protection.
random_reauth_delay: 1
recon_default: 500
recon_max: 2000
recon_randomize: False
# `lab up` syncs the custom modules once every minion answers; a highstate then skips Salt's
# sync of every module type (about 10 s of each highstate on the lab's 2 cores). Run `lab up`
# again (or saltutil.sync_all) after changing _modules, _states or _utils.
autoload_dynamic_modules: False
"""


def _gen_key(name: str) -> None:
    if (KEYS_DIR / f"{name}.pem").exists():
        return
    KEYS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=KEYS_DIR) as tmp:
        subprocess.run(
            [str(VENV / "bin" / "salt-key"), f"--gen-keys={name}", f"--gen-keys-dir={tmp}", "--keysize=2048"],
            check=True,
            capture_output=True,
        )
        for ext in ("pub", "pem"):
            shutil.move(f"{tmp}/{name}.{ext}", KEYS_DIR / f"{name}.{ext}")


def configure(hosts: list[LabHost]) -> None:
    """Lay Salt onto every host's disk once (idempotent: keys are kept)."""
    master = next(h for h in hosts if h.host.master)
    _gen_key("master")
    master_pub = (KEYS_DIR / "master.pub").read_text()
    for h in hosts:
        if (h.dir / "salt-configured").exists():
            continue
        name = h.host.name
        _gen_key(name)
        h.write("/etc/salt/minion.d/lab.conf", MINION_CONF.format(master=master.host.name, name=name))
        h.write("/etc/salt/pki/minion/minion.pem", (KEYS_DIR / f"{name}.pem").read_text(), 0o400)
        h.write("/etc/salt/pki/minion/minion.pub", (KEYS_DIR / f"{name}.pub").read_text())
        h.write("/etc/salt/pki/minion/minion_master.pub", master_pub)
        h.write("/etc/systemd/system/salt-minion.service", UNIT.format(role="minion", venv=VENV))
        h.link("/etc/systemd/system/multi-user.target.wants/salt-minion.service", "../salt-minion.service")
        (h.dir / "salt-configured").write_text("")
    if not (master.dir / "master-configured").exists():
        master.write("/etc/salt/master.d/lab.conf", MASTER_CONF)
        master.write("/etc/salt/pki/master/master.pem", (KEYS_DIR / "master.pem").read_text(), 0o400)
        master.write("/etc/salt/pki/master/master.pub", master_pub)
        for h in (h for h in hosts if not h.host.spare):  # a spare's is accepted when it boots ('lab boot')
            master.write(f"/etc/salt/pki/master/minions/{h.host.name}", (KEYS_DIR / f"{h.host.name}.pub").read_text())
        for sub in ("_modules", "_states", "_utils", "_runners"):
            master.link(f"/srv/pgcluster-ext/{sub}", f"{REPO_IN_MASTER}/{sub}")
        master.write("/etc/systemd/system/salt-master.service", UNIT.format(role="master", venv=VENV))
        master.link("/etc/systemd/system/multi-user.target.wants/salt-master.service", "../salt-master.service")
        (master.dir / "master-configured").write_text("")
