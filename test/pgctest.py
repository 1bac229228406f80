"""Shared test helpers: load the project's Salt modules outside Salt, recorded fixtures."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import importlib.util
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import ModuleType

import requests

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures"


def load_module(kind: str, name: str, **dunders: object) -> ModuleType:
    """Import REPO/_KIND/NAME.py as a fresh module with Salt's dunders set (unit tests); modules
    other than utils get ``__utils__`` as Salt's loader builds it (every custom util)."""
    spec = importlib.util.spec_from_file_location(f"pgc_{kind}_{name}", REPO / f"_{kind}" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for key in ("__salt__", "__opts__", "__pillar__", "__grains__", "__context__"):
        setattr(mod, key, dunders.get(key.strip("_"), {}))
    if kind != "utils":
        mod.__utils__ = dunders.get("utils", utils())
    return mod


def utils() -> dict:
    """The project's custom utils as Salt's ``__utils__`` maps them: {"<virtualname>.<function>": function}."""
    out = {}
    for path in sorted((REPO / "_utils").glob("*.py")):
        mod = load_module("utils", path.stem)
        for attr, value in vars(mod).items():
            if callable(value) and not attr.startswith("_") and getattr(value, "__module__", None) == mod.__name__:
                out[f"{mod.__virtualname__}.{attr}"] = value
    return out


def recorded(name: str) -> requests.Response:
    """A requests.Response rebuilt from a response recorded from the lab's real Patroni."""
    rec = json.loads((FIXTURES / "patroni" / f"{name}.json").read_text())
    resp = requests.Response()
    resp.status_code = rec["status"]
    resp._content = rec["body"].encode()
    resp.url = "http://198.18.0.11:8008" + rec["path"]
    resp.request = requests.Request(rec["method"], resp.url).prepare()
    return resp


class _Replay(http.server.BaseHTTPRequestHandler):
    routes: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.routes.get(self.path.split("?")[0])
        if name is None:
            self.send_error(404)
            return
        rec = json.loads((FIXTURES / "patroni" / f"{name}.json").read_text())
        body = rec["body"]
        for member, url in self.server.urls.items():  # the recorded lab addresses -> these servers
            body = body.replace(f"http://{LAB_ADDRESSES[member]}:8008", url)
        self.send_response(rec["status"])
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


LAB_ADDRESSES = {"pg1": "198.18.0.11", "pg2": "198.18.0.12", "pg3": "198.18.0.13"}


def make_pki(directory: Path, addresses: list[str]) -> Path:
    """A throwaway CA (DIRECTORY/ca.crt) and a certificate for ADDRESSES (DIRECTORY/host.crt, .key),
    as the CA run by Salt would issue: IP subjectAltNames, serverAuth."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgcluster test CA")])

    def build(subject, public_key, issuer_key, extensions):
        b = x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
        b = b.serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        b = b.not_valid_after(now + datetime.timedelta(days=30))
        for ext, critical in extensions:
            b = b.add_extension(ext, critical=critical)
        return b.sign(issuer_key, hashes.SHA256())

    ca = build(ca_name, ca_key.public_key(), ca_key, [(x509.BasicConstraints(ca=True, path_length=0), True)])
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    leaf = [(x509.BasicConstraints(ca=False, path_length=None), True), (x509.SubjectAlternativeName(sans), False)]
    cert = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "replay")]), key.public_key(), ca_key, leaf)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "host.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "host.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return directory


@contextlib.contextmanager
def patroni_replay(members: dict[str, dict[str, str] | None], tls: Path | None = None):
    """A local HTTP server per member answering GET PATH with the response recorded from the lab's
    real Patroni, {member: {path: fixture}}; a member given None does not answer (refused). The
    members listen on 127.0.0.11, .12, ... (loopback only), all on one port, as Patroni's REST API
    does on the lab's hosts; with TLS (a directory made by make_pki), over https. Yields {member:
    base URL}; recorded api_urls point at these servers. ``patroni_replay.hosts``/``.port`` give
    the addresses and port for a model."""
    servers, urls, hosts = [], {}, {}
    port = 0
    scheme = "https" if tls else "http"
    for i, (member, routes) in enumerate(members.items()):
        address = f"127.0.0.{11 + i}"
        hosts[member] = address
        if routes is None:
            continue
        handler = type(f"Replay_{member}", (_Replay,), {"routes": routes})
        srv = http.server.ThreadingHTTPServer((address, port), handler)
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls / "host.crt", tls / "host.key")
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        port = srv.server_address[1]
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    if not servers:  # nobody answers: any port will do
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    for member, address in hosts.items():
        urls[member] = f"{scheme}://{address}:{port}"
    for srv in servers:
        srv.urls = urls
    patroni_replay.hosts, patroni_replay.port = hosts, port
    try:
        yield urls
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def run_all(cmd, stdin=None, timeout=None, env=None, cwd=None, **kwargs) -> dict:
    """Salt's cmd.run_all as the module uses it: argv, standard input, environment, timeout."""
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env={**os.environ, **(env or {})})  # fmt: skip
    return {"retcode": res.returncode, "stdout": res.stdout.strip(), "stderr": res.stderr.strip()}


def run(cmd, **kwargs) -> str:
    """Salt's cmd.run: the command's output (standard output and error, stripped)."""
    res = run_all(cmd, **{k: v for k, v in kwargs.items() if k in ("stdin", "timeout", "env", "cwd")})
    return "\n".join(x for x in (res["stdout"], res["stderr"]) if x)
