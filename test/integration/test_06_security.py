"""Secure by default: each host receives only the secrets its roles need, and no secret shows in
state data, process lists, logs or world-readable files on any host."""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile

import pytest
import yaml
from labtools import ADDRESS, MEMBERS, REPO, cluster, lab, sh, wait_healthy

MODEL = yaml.safe_load((REPO / "pillar/pgcluster/lab_model.yaml").read_text())["pgcluster"]
MAIN = MODEL["clusters"]["main"]
SECRETS = {
    **{f"password:{k}": v for k, v in MAIN["passwords"].items()},
    "password:app": MAIN["roles"]["app"]["password"],
    "cipher_pass": MAIN["pgbackrest"]["cipher_pass"],
}
PASSWORDS = {"password:superuser", "password:replication", "password:rewind", "password:restapi"}
# Who receives which secret: pillar/pillar.example's table.
EXPECTED = {"pg1": PASSWORDS, "pg2": PASSWORDS, "pg3": PASSWORDS, "app1": {"password:app"},
            "backup": {"cipher_pass"}, "salt": set(), "legacy": set()}  # fmt: skip
HOSTS = sorted(EXPECTED)
HOSTS_DIR = "/var/lib/pgcluster-lab/hosts"


def found(text: str) -> set[str]:
    return {name for name, secret in SECRETS.items() if secret in text}


# A minion's pillar as the master compiles it, printed with no job (a job's return, with the
# secrets in it, would stay in the minion's log and the master's job cache).
PILLAR_OF = """
import json, sys
import salt.cache, salt.config, salt.pillar
opts = salt.config.master_config("/etc/salt/master")
grains = salt.cache.factory(opts).fetch("grains", sys.argv[1]) or {}
pillar = salt.pillar.get_pillar(opts, grains, sys.argv[1], saltenv="base").compile_pillar()
def plain(v):
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v if v is None or isinstance(v, (bool, int, float)) else str(getattr(v, "unmasked", v))
print(json.dumps(plain(pillar)))
"""


def test_each_host_receives_exactly_the_secrets_its_roles_need(deployed):
    pillars = {h: sh("salt", f"/opt/pgcluster-lab/venv/bin/python - {h}", stdin=PILLAR_OF).stdout for h in HOSTS}
    assert all('"pgcluster"' in p for p in pillars.values())
    assert {h: found(p) for h, p in pillars.items()} == EXPECTED


# What listens on TCP on each host that is not a member (members run every component): the
# programs its roles need, nothing else (no PostgreSQL, etcd or PgBouncer where none is wanted).
LISTENERS = {
    # The Salt master runs on the lab venv's python: ss shows the interpreter's path, cut short.
    "salt": {"/opt/pgcluster-", "prometheus-node"},
    "app1": {"pgbouncer", "pgcluster-pgbou", "prometheus-node"},
    "backup": {"pgbackrest", "prometheus", "prometheus-aler", "prometheus-node"},
    # A standalone PostgreSQL the formula does not manage (a migration source): its own server.
    "legacy": {"postgres", "prometheus-node"},
}


@pytest.mark.parametrize("host", sorted(LISTENERS))
def test_a_host_listens_only_for_its_roles(deployed, host):
    out = sh(host, "ss -Hltnp").stdout
    programs = set(re.findall(r'users:\(\("([^"]+)"', out))
    assert programs == LISTENERS[host], out


@pytest.mark.parametrize("host", HOSTS)
def test_no_secret_in_state_data_or_process_lists(deployed, host):
    shown = lab("salt", host, "state.show_sls", "pgcluster", "--out=json", "--static", check=False).stdout
    assert found(shown) == set()
    assert found(sh(host, "ps -eww -o args").stdout) == set()


@pytest.mark.parametrize("host", HOSTS)
def test_no_secret_in_logs_or_world_readable_files(deployed, host):
    logs = sh(host, "journalctl --no-pager -q -o cat; cat /var/log/salt/minion /var/log/postgresql/*.log "
                    "/var/log/pgbackrest/*.log 2>/dev/null; true", timeout=300).stdout  # fmt: skip
    assert found(logs) == set()
    # The host's own disk (its overlay's upper directory): every world-readable file it wrote.
    upper = f"{HOSTS_DIR}/{host}/upper"
    pattern = "\n".join(SECRETS.values())
    leaks = lab_grep(upper, pattern)
    assert leaks == []


def lab_grep(root: str, pattern: str, world_readable: bool = True) -> list[str]:
    """Regular files under ROOT (on the machine), world-readable ones only by default, holding one
    of PATTERN's lines."""
    perm = "-perm -o+r" if world_readable else ""
    with tempfile.NamedTemporaryFile("w", suffix=".patterns") as f:
        f.write(pattern + "\n")
        f.flush()
        # xargs gives grep /dev/null as its input: the patterns come from a file.
        cmd = f"find {shlex.quote(root)} -xdev -type f {perm} -print0 | xargs -0 -r grep -l -F -f {f.name}"
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    return [line for line in res.stdout.splitlines() if line]


def test_the_file_scan_finds_what_it_looks_for(deployed):
    # The scan above must be able to fail: a secret planted in a world-readable file is found.
    planted = f"{HOSTS_DIR}/app1/upper/var/tmp/planted"
    with open(planted, "w") as f:
        f.write(f"x {SECRETS['password:app']} y\n")
    try:
        assert lab_grep(f"{HOSTS_DIR}/app1/upper", "\n".join(SECRETS.values())) == [planted]
    finally:
        subprocess.run(["rm", "-f", planted], check=True)


def test_pgbackrest_info_as_users_type_it(deployed):
    out = sh("backup", "cd / && pgbackrest info").stdout
    assert "stanza: main\n    status: ok" in out, out
    assert "error" not in out


# ---- TLS from the CA run by Salt ---------------------------------------------------------------
PKI = "/etc/pgcluster/pki"
WITH_ROLE = ["pg1", "pg2", "pg3", "backup", "app1"]


def key_body(host: str) -> str:
    """The base64 body of HOST's private key (enough to recognise it anywhere)."""
    return sh(host, f"grep -v -- ----- {PKI}/host.key | head -1").stdout.strip()


def test_each_host_key_is_its_own_and_the_ca_key_lives_on_the_ca_minion_only(deployed):
    for host in WITH_ROLE:
        assert sh(host, f"stat -c '%U %G %a' {PKI}/host.key").stdout.split() == ["root", "pgcluster-tls", "640"]
        subject = sh(host, f"openssl x509 -noout -subject -ext subjectAltName -in {PKI}/host.crt").stdout
        assert f"CN = {host}" in subject and f"DNS:{host}" in subject
        assert sh(host, f"openssl verify -CAfile {PKI}/ca.crt {PKI}/host.crt").stdout.strip().endswith(": OK")
    assert sh("salt", f"stat -c '%U %a' {PKI}/ca.key").stdout.split() == ["root", "400"]
    for host in WITH_ROLE:
        assert sh(host, f"test -e {PKI}/ca.key", check=False).returncode != 0
    # No host's key is anywhere but on its own disk (nor the CA's key anywhere but the CA's).
    bodies = {h: key_body(h) for h in WITH_ROLE}
    bodies["salt"] = sh("salt", f"grep -v -- ----- {PKI}/ca.key | head -1").stdout.strip()
    for owner, body in bodies.items():
        holders = [h for h in HOSTS if lab_grep(f"{HOSTS_DIR}/{h}/upper", body, world_readable=False)]
        assert holders == [owner], (owner, holders)


ETCD_TLS = f"--cacert {PKI}/ca.crt --cert {PKI}/host.crt --key {PKI}/host.key"


@pytest.mark.parametrize(
    "command, accepted, refused",
    [
        # etcd: only TLS with a client certificate from the cluster's CA.
        (f"curl -sS --max-time 5 {ETCD_TLS} https://pg1:2379/health", '"health":"true"', None),
        (f"curl -sS --max-time 5 --cacert {PKI}/ca.crt https://pg1:2379/health", None, r"\(5[56]\)|\(35\)|alert"),
        ("curl -sS --max-time 5 http://pg1:2379/health", None, r"Empty reply|reset|\(52\)|\(56\)"),
        # Patroni's REST API: https only.
        (f"curl -sS --max-time 5 --cacert {PKI}/ca.crt https://pg1:8008/cluster", '"members"', None),
        ("curl -sS --max-time 5 http://pg1:8008/cluster", None, r"Empty reply|reset|\(52\)|\(56\)"),
        # Replication: TLS only.
        ("PGPASSWORD=$(cat) psql 'host=pg1 user=replicator dbname=postgres replication=true sslmode=require "
         "connect_timeout=5' -XAtc 'IDENTIFY_SYSTEM'", "|", None),
        ("PGPASSWORD=$(cat) psql 'host=pg1 user=replicator dbname=postgres replication=true sslmode=disable "
         "connect_timeout=5' -XAtc 'IDENTIFY_SYSTEM'", None, "no encryption"),
    ],
)  # fmt: skip
def test_plaintext_and_unauthenticated_clients_are_refused(deployed, command, accepted, refused):
    # The replication password on standard input, never on a command line.
    res = sh("pg2", f"{command} 2>&1", check=False, stdin=MAIN["passwords"]["replication"])
    if accepted:
        assert res.returncode == 0 and accepted in res.stdout, res.stdout
    else:
        assert res.returncode != 0 and re.search(refused, res.stdout), res.stdout


def test_pgbouncer_refuses_a_postgresql_whose_certificate_another_ca_signed(deployed):
    # app1's PgBouncer is told to trust another CA: the leader's certificate no longer verifies.
    other = "/run/other-ca.crt"
    sh("app1", f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "
               f"/CN=other -keyout /run/other-ca.key -out {other} 2>/dev/null && "
               f"sed -i 's|^server_tls_ca_file = .*|server_tls_ca_file = {other}|' /etc/pgbouncer/pgbouncer.ini && "
               "systemctl reload pgbouncer")  # fmt: skip
    try:
        # The client waits for a server connection PgBouncer cannot open: it fails, and says why.
        res = sh("app1", "timeout 10 psql service=app -XAtc 'select 1' </dev/null 2>&1", check=False)
        assert res.returncode != 0, res.stdout
        log = sh("app1", "tail -50 /var/log/postgresql/pgbouncer.log").stdout
        assert "certificate verify failed" in log, log
    finally:
        lab("salt", "app1", "state.apply", "pgcluster.pgbouncer", "--out=quiet", "-t", "300")  # the cluster's CA
    assert sh("app1", "psql service=app -XAtc 'select 1' </dev/null").stdout.strip() == "1"


def test_a_certificate_near_its_expiry_is_renewed_by_highstate_and_services_keep_working(deployed):
    lead = cluster()["leader"]
    host = next(m for m in MEMBERS if m != lead)
    address = ADDRESS[host]
    # A replica's certificate is replaced by one of its own key that expires in two days (signed by
    # the cluster's CA on the CA minion, from a CSR: the key stays on the replica).
    csr = sh(host, f"openssl req -new -key {PKI}/host.key -subj /CN={host}").stdout
    ext = (
        f"subjectAltName=DNS:{host},IP:{address}\\nextendedKeyUsage=serverAuth,clientAuth\\n"
        "basicConstraints=critical,CA:false"
    )
    near = sh("salt", f"openssl x509 -req -days 2 -CA {PKI}/ca.crt -CAkey {PKI}/ca.key -set_serial 0x5eed "
                      f"-extfile <(printf '{ext}') 2>/dev/null", stdin=csr).stdout  # fmt: skip
    sh(host, f"cat > {PKI}/host.crt", stdin=near)
    assert sh(host, f"openssl x509 -noout -serial -in {PKI}/host.crt").stdout.strip() == "serial=5EED"
    # -t: a loaded minion may answer the CLI's job lookups late during a long highstate.
    ret = lab("salt", host, "state.apply", "--out=json", "--static", "-t", "900", timeout=1000).stdout
    assert '"pgcluster-pki-host-certificate-present"' in ret
    serial = sh(host, f"openssl x509 -noout -serial -in {PKI}/host.crt").stdout.strip()
    assert serial != "serial=5EED"
    assert sh(host, f"openssl x509 -noout -checkend {300 * 86400} -in {PKI}/host.crt", check=False).returncode == 0
    # The services took the new certificate and work: a switchover to it, then a backup from it.
    wait_healthy(2, timeout=120)
    res = lab("run", "pgcluster.switchover", "main", f"candidate={host}", "--out=json", check=False)
    assert res.returncode == 0, res.stdout
    assert lab("salt", "backup", "pgbackrest.backup", "main", "kind=incr", "-t", "600", check=False).returncode == 0
