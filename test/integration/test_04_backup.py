"""pgBackRest: the repository on the backup host, WAL archiving from the leader, backups across a
switchover, a destroyed member rebuilt from the repository."""

from __future__ import annotations

import json

import pytest
from labtools import MEMBERS, lab, leader, salt_json, sh, wait_for, wait_healthy

CIPHER_PASS = "lab-repo-cipher-pass-0d94c1e7"  # pillar/pgcluster/lab_model.yaml


def info() -> dict:
    ret = salt_json("backup", "pgbackrest.info", "main")["backup"]
    assert isinstance(ret, dict), ret
    return ret


def test_after_highstate_an_encrypted_full_backup_exists_and_check_passes(deployed):
    i = info()
    assert i["status"] == "ok" and i["cipher"] == "aes-256-cbc"
    assert [b for b in i["backups"] if b["type"] == "full" and not b["error"]]
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True


def test_passphrase_and_keys_are_only_where_needed_with_tight_modes(deployed):
    out = sh("backup", "stat -c '%U:%G %a %n' /etc/pgbackrest/pgbackrest.conf /etc/pgcluster/pki/host.key").stdout
    assert out.split("\n")[:2] == [
        "root:pgbackrest 640 /etc/pgbackrest/pgbackrest.conf",
        "root:pgcluster-tls 640 /etc/pgcluster/pki/host.key",  # the host's key (pgcluster.pki)
    ]
    assert "pgbackrest" in sh("backup", "getent group pgcluster-tls").stdout
    for m in MEMBERS:
        key = sh(m, "stat -c '%U:%G %a' /etc/pgcluster/pki/host.key").stdout.strip()
        assert key == "root:pgcluster-tls 640"
        # Database servers never hold the repository passphrase: the repository host encrypts.
        assert sh(m, f"grep -rl {CIPHER_PASS} /etc /var/log/pgbackrest", check=False).stdout == ""
    # The repository is encrypted: its manifest is not text, and a wrong passphrase cannot read it.
    head = sh(
        "backup",
        "head -c 8 /var/lib/pgbackrest/backup/main/backup.info; echo; "
        "grep -c db-system-id /var/lib/pgbackrest/backup/main/backup.info",
        check=False,
    ).stdout
    assert head.split() == ["Salted__", "0"]  # OpenSSL's encrypted-file header, no plaintext key
    printable = "LC_ALL=C tr -cd '\\11\\12\\40-\\176'"  # pgBackRest quotes the undecryptable bytes
    wrong = sh("backup", "cd / && PGBACKREST_REPO1_CIPHER_PASS=not-the-passphrase-at-all runuser -u pgbackrest "
                         f"-- pgbackrest --stanza=main --output=json info | {printable}").stdout  # fmt: skip
    assert json.loads(wrong)[0]["status"]["message"] == "other"


def test_database_servers_accept_only_the_backup_hosts_certificate(deployed):
    """A certificate of the same CA with another name (pg2's, copied to the backup host for the
    test) is refused by every member's pgBackRest server: tls-server-auth names the backup host."""
    foreign = "/var/tmp/foreign-cert"
    pem = sh("pg2", "cat /etc/pgcluster/pki/host.crt /etc/pgcluster/pki/host.key").stdout
    sh("backup", f"install -d -m 0700 -o pgbackrest {foreign} && cd {foreign} && umask 077 && cat > host.pem && "
                 "csplit -s -f part host.pem '/-----BEGIN .*PRIVATE KEY-----/' && mv part00 host.crt && "
                 "mv part01 host.key && chown pgbackrest host.crt host.key", stdin=pem)  # fmt: skip
    options = " ".join(f"--pg{i}-host-cert-file={foreign}/host.crt --pg{i}-host-key-file={foreign}/host.key"
                       for i in (1, 2, 3))  # fmt: skip
    try:
        res = sh("backup", f"cd / && runuser -u pgbackrest -- pgbackrest --stanza=main {options} --io-timeout=5 "
                           "--log-level-console=warn check 2>&1", check=False)  # fmt: skip
    finally:
        sh("backup", f"rm -rf {foreign}")
    assert res.returncode != 0
    for m in MEMBERS:
        assert (
            f"unable to check {m}: [AccessError] raised from remote-0 tls protocol on '{m}': access denied"
            in res.stdout
        )


def test_after_a_switchover_archiving_continues_and_a_new_backup_succeeds(deployed):
    old = leader()
    ret = lab("run", "pgcluster.switchover", "main", "--out=json", timeout=180)
    assert json.loads(ret.stdout)["to"] != old
    new = leader()
    assert new != old
    assert salt_json("backup", "pgbackrest.check", "main")["backup"] is True
    before = {b["label"] for b in info()["backups"]}
    new_backup = salt_json("backup", "pgbackrest.backup", "main", "kind=incr", "-t", "600")["backup"]
    assert new_backup["type"] == "incr" and new_backup["label"] not in before and not new_backup["error"]


def test_a_destroyed_member_is_rebuilt_from_the_repository(deployed):
    victim = next(m for m in MEMBERS if m != leader())
    sh(victim, "systemctl stop patroni && rm -rf /var/lib/postgresql/15/patroni-main "
               "&& rm -f /var/log/pgbackrest/main-restore.log && systemctl start patroni")  # fmt: skip
    wait_healthy(2, timeout=300)
    log = sh(victim, "cat /var/log/pgbackrest/main-restore.log", check=False).stdout
    assert "restore command end: completed successfully" in log


@pytest.mark.parametrize("role", ["replica", "leader"])
def test_with_one_database_server_down_check_and_the_scheduled_backup_work(deployed, role):
    current = leader()
    victim = current if role == "leader" else next(m for m in MEMBERS if m != current)
    lab("stop", victim)
    try:
        if role == "leader":
            wait_for("a new leader", lambda: leader() not in (None, victim), timeout=120, interval=2)
        # Bounded: without leaving the stopped server out, pgBackRest retries it for ~4 minutes.
        assert salt_json("backup", "pgbackrest.check", "main", "timeout=60")["backup"] is True
        before = {b["label"] for b in info()["backups"]}
        sh("backup", "systemctl start pgbackrest-main-incr.service", timeout=180)  # what the timer runs
        new = [b for b in info()["backups"] if b["label"] not in before]
        assert [b["type"] for b in new] == ["incr"] and not new[0]["error"]
    finally:
        lab("boot", victim)
        wait_healthy(2, timeout=300)


def test_pgbackrest_errors_are_one_clear_message(deployed):
    res = lab("salt", "backup", "pgbackrest.backup", "main", "kind=weekly", "--out=json", check=False)
    assert res.returncode != 0
    assert "backup kind 'weekly': must be full, diff or incr" in res.stdout
