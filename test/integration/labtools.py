"""Helpers of the integration tests: drive the lab CLI and poll for conditions."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "test" / "lab" / "lab"


def lab(*args: str, check: bool = True, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the lab CLI (STDIN, if given, is its input); returns the completed process (text output
    captured; bytes that are not UTF-8, e.g. in a host's logs, decoded as U+FFFD)."""
    res = subprocess.run(
        [str(LAB), *args], capture_output=True, text=True, errors="replace", timeout=timeout, input=stdin
    )
    if check and res.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def sh(
    host: str, script: str, check: bool = True, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run a shell script inside a lab host (STDIN: its input, e.g. a secret kept off command lines)."""
    return lab("exec", host, "--", "bash", "-c", script, check=check, timeout=timeout, stdin=stdin)


def wait_for(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    """Poll PROBE until it is true; returns seconds waited; fails the test after TIMEOUT."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- the cluster ---------------------------------------------------------------------------
MEMBERS = ("pg1", "pg2", "pg3")
CA = "/etc/pgcluster/pki/ca.crt"  # the cluster's CA certificate, on every host (pgcluster.pki)
ADDRESS = {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"}
PGBOUNCERS = ("pg1", "pg2", "pg3", "app1")
APP_PASSWORD = "lab-app-pw-5e6b"  # the lab pillar's role 'app' (pillar/pgcluster/lab_model.yaml)


def salt_json(*args: str, check: bool = True) -> dict:
    """`salt ARGS --out=json --static` on the master; returns the parsed return."""
    res = lab("salt", *args, "--out=json", "--static", check=False)
    try:
        data = json.loads(res.stdout or "{}")
    except json.JSONDecodeError:
        data = {}
    if check and res.returncode != 0:
        raise AssertionError(f"salt {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return data


# A race in Salt 3008 itself, not pgcluster's: a state that opens a file client (x509's
# certificate_managed, through state.single) builds a tornado IOLoop, which copies tornado's
# loop registry (a WeakKeyDictionary) while the garbage collector drops a loop. Seen in stop 27's
# clean-clone run (pg2's host certificate state, its dependants failing with it); the state run
# again is clean, so a highstate that failed only that way is run once more.
SALT_RACE = "RuntimeError: dictionary keys changed during iteration"


def highstate(*extra: str, targets: list[str] | None = None) -> dict:
    """state.apply on every minion (or on TARGETS); returns {minion: {state_id: ret}} (or a list
    of errors). Once more when it failed by SALT_RACE."""
    cmd = ["salt", *([",".join(targets), "-L"] if targets else ["*"]), "state.apply", "--out=json", "--static",
           "-t", "900", *extra]  # fmt: skip
    res = lab(*cmd, check=False, timeout=1200)
    if SALT_RACE in res.stdout:
        print(f"highstate: Salt's own race ({SALT_RACE}): once more", flush=True)
        res = lab(*cmd, check=False, timeout=1200)
    return json.loads(res.stdout)


LOCAL_PILLAR = "/srv/lab-pillar/pgcluster/local.sls"


def local_pillar(block: dict | str | None) -> None:
    """The lab run's pillar overrides on the master's disk (pgcluster/local.sls), then every
    minion's pillar refreshed: BLOCK is what goes under ``pgcluster`` (or the file's YAML text);
    None removes the overrides. A highstate applies them."""
    if block is None:
        sh("salt", f"rm -f {LOCAL_PILLAR}")
    else:
        text = block if isinstance(block, str) else json.dumps({"pgcluster": block})
        sh("salt", f"mkdir -p {LOCAL_PILLAR.rsplit('/', 1)[0]} && cat > {LOCAL_PILLAR}", stdin=text)
    lab("salt", "*", "saltutil.refresh_pillar", "wait=True", "--out=json")


def lab_status() -> dict[str, str]:
    """{host: its state as `lab status` says it ("running", "spare, not booted (lab boot pg4)"...)}."""
    return {line.split()[0]: line.split(None, 2)[2] for line in lab("status").stdout.splitlines()[1:]}


def fresh_lab() -> None:
    """A lab of bare hosts: every host of the topology running and answering but the spares (not
    booted, their keys not accepted), nothing of the formula on any host, no run overrides. The
    lab that is up when it is so already (test_01 leaves one; a down and up again costs about
    50 s), else the lab down and up again."""
    if not _bare():
        lab("down")
        lab("up")


def _bare() -> bool:
    hosts = tomllib.loads((REPO / "test/lab/topology.toml").read_text())["hosts"]
    spares = {h["name"] for h in hosts if h.get("spare")}
    booted = sorted(h["name"] for h in hosts if not h.get("spare"))
    states = lab_status()
    if any(states.get(h) != "running" for h in booted):
        return False
    if any(not states.get(h, "").startswith("spare") for h in spares):
        return False
    keys = sh("salt", "ls /etc/salt/pki/master/minions", check=False)
    if keys.returncode != 0 or sorted(keys.stdout.split()) != booted:
        return False
    # Each probe must say "absent" (exit 0): a probe that fails says nothing.
    if any(sh(h, "test ! -e /etc/pgcluster", check=False).returncode != 0 for h in booted):
        return False
    if sh("salt", f"test ! -e {LOCAL_PILLAR}", check=False).returncode != 0:
        return False
    answered = salt_json("*", "test.ping", "-t", "10", check=False)
    return sorted(m for m, v in answered.items() if v is True) == booted


def failed_states(ret: dict) -> dict[str, list[str]]:
    """{minion: ["state id: comment" of each state that failed]} of a highstate return."""
    return {m: [f"{s['__id__']}: {s['comment']}" for s in states.values() if s["result"] is False]
            for m, states in ret.items()}  # fmt: skip


def changed_states(ret: dict) -> dict[str, list[str]]:
    """{minion: [ids of states that reported changes]} of a highstate return."""
    return {m: [s["__id__"] for s in states.values() if s.get("changes")] for m, states in ret.items()}


# PostgreSQL's port in the lab's pillar (test_07_ports deploys with another one).
PG_PORT = {"port": 5432}


def psql(host: str, sql: str, db: str = "app", check: bool = True) -> subprocess.CompletedProcess:
    """Run SQL as the postgres OS user on HOST's local socket."""
    cmd = f"cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -p {PG_PORT['port']} -d {db}"
    return sh(host, f"{cmd} -c {shlex.quote(sql)}", check)


_ANSWERED: list[str] = []  # the member that last answered patroni.cluster, asked first next time


def cluster(via: str | None = None) -> dict:
    """patroni.cluster as seen from VIA (default: the first member that answers, starting with the
    one that answered last: a crashed member costs Salt's timeout once, not on every call)."""
    for host in [via] if via else sorted(MEMBERS, key=lambda m: m not in _ANSWERED):
        ret = salt_json(host, "patroni.cluster", check=False).get(host)
        if isinstance(ret, dict):
            _ANSWERED[:] = [host]
            return ret
    raise AssertionError("no member answers patroni.cluster")


def leader(via: str | None = None) -> str | None:
    return cluster(via)["leader"]


def streaming_replicas(c: dict) -> list[str]:
    """The members of C (``cluster()``) that stream from the leader as replicas."""
    return [m["name"] for m in c["members"] if m["role"] != "leader" and m["state"] == "streaming"]


def wait_healthy(replicas: int = 2, timeout: float = 180, via: str | None = None) -> dict:
    """Wait until the cluster has a leader and REPLICAS streaming replicas; returns the cluster."""
    found: dict = {}

    def ok() -> bool:
        nonlocal found
        try:
            found = cluster(via)
        except AssertionError:
            return False
        return bool(found["leader"]) and len(streaming_replicas(found)) >= replicas

    wait_for(f"a leader and {replicas} streaming replicas", ok, timeout, interval=1)
    return found


def ensure_probe_table() -> None:
    """The table the writers of the failover tests and benchmarks insert into, writable by role app."""
    psql(leader(), "CREATE TABLE IF NOT EXISTS failover_probe(id bigserial, note text, at timestamptz DEFAULT now());"
                   "GRANT INSERT, SELECT ON failover_probe TO app;"
                   "GRANT USAGE ON SEQUENCE failover_probe_id_seq TO app")  # fmt: skip


def switchover_by_hand(old: str, new: str) -> None:
    """``patronictl switchover`` from OLD to NEW, waited for on Patroni's API (no Salt: it works
    while the master is down)."""
    sh(new, f"patronictl switchover main --leader {old} --candidate {new} --force")
    primary = f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA} https://{ADDRESS[new]}:8008/primary"
    wait_for(f"{new} to lead", lambda: sh(new, primary).stdout == "200", 60)


# ---- PgBouncer ---------------------------------------------------------------------------------
def admin_databases(host: str) -> list[dict[str, str]]:
    """SHOW DATABASES on HOST's PgBouncer admin console, rows by column name (no Salt job: read
    at once, and while the master is down)."""
    out = sh(host, "cd / && runuser -u postgres -- psql -XA -h /var/run/postgresql -p 6432 -d pgbouncer "
                   "-c 'SHOW DATABASES' </dev/null", check=False).stdout.splitlines()  # fmt: skip
    return [dict(zip(out[0].split("|"), line.split("|"), strict=False)) for line in out[1:] if "|" in line]


def all_route_to_by_console(member: str, hosts: tuple[str, ...] = PGBOUNCERS) -> bool:
    """Whether the PgBouncers on HOSTS (default: every one) send app to MEMBER, read on each host's
    admin console (no Salt: just after the master starts, Salt calls wait for the minions to reconnect)."""
    return all(any(r.get("name") == "app" and r.get("host") == ADDRESS[member] for r in admin_databases(h))
               for h in hosts)  # fmt: skip


def routes() -> dict[str, str | None]:
    """{pgbouncer host: address it routes database app to} (None when it does not answer)."""
    ret = salt_json(",".join(PGBOUNCERS), "-L", "pgbouncer.targets", "main", check=False)
    return {h: (ret.get(h) or {}).get("app") if isinstance(ret.get(h), dict) else None for h in PGBOUNCERS}


def all_route_to(member: str, down: tuple[str, ...] = ()) -> bool:
    """True when every PgBouncer (but those on hosts DOWN) routes to MEMBER."""
    return {a for h, a in routes().items() if h not in down} == {ADDRESS[member]}


def runner_switchover_under_pgbench(seconds: int = 30, settle: float = 8) -> tuple[subprocess.CompletedProcess, str]:
    """salt-run pgcluster.switchover while pgbench writes through app1's PgBouncer for SECONDS;
    returns (the runner's process, pgbench's output); fails when pgbench itself fails."""
    sh("app1", "pgbench -i -s 1 -q service=app </dev/null")
    bench = subprocess.Popen(
        [str(LAB), "exec", "app1", "--", "bash", "-c", f"pgbench -n -T {seconds} -c 4 -j 2 service=app </dev/null"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(settle)
    res = lab("run", "pgcluster.switchover", "main", "--out=json", check=False)
    out, _ = bench.communicate(timeout=seconds + 90)
    assert bench.returncode == 0, out
    return res, out


class PgbenchLoop:
    """pgbench through app1's PgBouncer (``service=app``) in 10 s runs, from now until ``stop()``
    (at most 15 minutes), for operations of unknown length; ``stop()`` returns (exit code, output)
    and ``failed()`` says what went wrong (None: every run committed with 0 failed)."""

    def __init__(self) -> None:
        sh("app1", "rm -f /tmp/stop-bench && pgbench -i -s 1 -q service=app </dev/null")
        self.proc = subprocess.Popen(
            [str(LAB), "exec", "app1", "--", "bash", "-c",
             "for i in $(seq 90); do pgbench -n -T 10 -c 4 -j 2 service=app </dev/null || exit 1; "
             "[ -e /tmp/stop-bench ] && exit 0; done; exit 2"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.out = ""

    def stop(self) -> tuple[int, str]:
        sh("app1", "touch /tmp/stop-bench")
        self.out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, self.out

    def failed(self) -> str | None:
        runs = self.out.count("number of transactions actually processed")
        clean = self.out.count("number of failed transactions: 0 (0.000%)")
        if self.proc.returncode != 0 or runs < 2 or clean != runs:
            return f"pgbench exit {self.proc.returncode}, {runs} runs, {clean} with 0 failed: {self.out[-3000:]}"
        return None


def events(seconds: int) -> subprocess.Popen:
    """pgcluster events on the master's bus for SECONDS, one line each (bounded inside the host)."""
    return subprocess.Popen(
        [str(LAB), "exec", "salt", "--", "timeout", str(seconds), "salt-run", "state.event",
         "tagmatch=pgcluster/*", "--out=quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


# ---- a writer that logs acknowledged commits -------------------------------------------------------
class AckWriter:
    """ackwriter.py running in a lab host (its source passed on the command line, PASSWORD on its
    input, never in a process list): inserts ids into TABLE through DSN until ``stop()``, which
    returns its report (``acked``, ``failed``, ``longest_s``); ``missing_on`` checks a server."""

    def __init__(self, host: str, dsn: str, table: str, password: str = "", seconds: int = 600, start: int = 1):
        self.host, self.table = host, table
        self.stop_file = f"/run/ackwriter-{table}-{start}.stop"
        sh(host, f"rm -f {self.stop_file}")
        code = (REPO / "test" / "integration" / "ackwriter.py").read_text()
        run = 'read -r PGPASSWORD; export PGPASSWORD; exec python3 -c "$0" "$@"'
        self.proc = subprocess.Popen(
            [str(LAB), "exec", host, "--", "bash", "-c", run, code, dsn, table, str(seconds), str(start),
             self.stop_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.proc.stdin.write(password + "\n")
        self.proc.stdin.close()
        self.result: dict = {}

    def stop(self, timeout: float = 120) -> dict:
        sh(self.host, f"touch {self.stop_file}")
        out, err = self.proc.stdout.read(), self.proc.stderr.read()
        self.proc.wait(timeout=timeout)
        sh(self.host, f"rm -f {self.stop_file}")
        if self.proc.returncode != 0:
            raise AssertionError(f"ackwriter on {self.host} exited {self.proc.returncode}: {err[-2000:]}")
        self.result = json.loads(out.strip().splitlines()[-1])
        return self.result

    def missing_on(self, host: str, db: str, user_sql: str | None = None) -> list[int]:
        """The acknowledged ids that the server on HOST does not hold in DB."""
        got = psql(host, user_sql or f"SELECT id FROM {self.table}", db=db).stdout.split()
        return sorted(set(self.result["acked"]) - {int(x) for x in got})
