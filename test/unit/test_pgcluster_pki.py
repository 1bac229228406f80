"""_modules/pgcluster_pki.py: the cheap checks the x509 states run first say True only for the
files the state would leave unchanged (keys and certificates made here by Salt's own x509
builder, with the formula's arguments from the model), and False for each way a file can
differ, so that the x509 state then runs."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import pytest
import salt.utils.x509 as x509util
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pgctest import load_module

model_util = load_module("utils", "pgcluster_model")
GROUP = grp.getgrgid(os.getgid()).gr_name
USER = pwd.getpwuid(os.getuid()).pw_name
CA_ARGS = {"CN": "pgcluster CA", "basicConstraints": "critical, CA:true, pathlen:0",
           "keyUsage": "critical, cRLSign, keyCertSign", "subjectKeyIdentifier": "hash",
           "authorityKeyIdentifier": "keyid:always", "days_valid": 3650}  # fmt: skip


def _key(path: Path, curve=None, mode=0o640):
    key = ec.generate_private_key(curve or ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(mode)
    return key


def _issue(path: Path, signing_key: Path, private_key: Path, signing_cert: Path | None = None, **args) -> None:
    """A certificate as Salt's x509 state makes it from ARGS."""
    args = {"days_valid": 365, **args}
    builder, signer, _, _ = x509util.build_crt(
        str(signing_key), signing_cert=str(signing_cert) if signing_cert else None, private_key=str(private_key),
        **args,
    )  # fmt: skip
    path.write_bytes(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


@pytest.fixture
def pki(tmp_path):
    """The CA and pg1's certificate as the formula makes them in /etc/pgcluster/pki (here TMP_PATH)."""
    model = {"hosts": {"pg1": "198.18.0.11"}, "pki": {"dir": str(tmp_path), "days_valid": 365}}
    _key(tmp_path / "ca.key", ec.SECP384R1(), 0o400)
    _issue(tmp_path / "ca.crt", tmp_path / "ca.key", tmp_path / "ca.key", **CA_ARGS)
    _key(tmp_path / "host.key")
    cert = model_util.host_certificate(model, "pg1")
    _issue(tmp_path / "host.crt", tmp_path / "ca.key", tmp_path / "host.key", **cert)
    return tmp_path, cert


@pytest.fixture
def mod():
    return load_module("modules", "pgcluster_pki")


def _remote(mod, d: Path, cert: dict, **over) -> bool:
    """The check as a host whose certificate the CA minion signs runs it (host.sls)."""
    policy = {"minions": "pg1", "signing_private_key": "/nonexistent/ca.key", **cert}  # as the CA's pillar has it
    args = {"ca_server": "salt", "signing_policy": "pgcluster-pg1", "CN": "pg1", "days_remaining": 30,
            "subjectAltName": cert["subjectAltName"], "private_key": str(d / "host.key"),
            "signing_policy_contents": policy}  # fmt: skip
    return mod.certificate_current(str(d / "host.crt"), **{**args, **over})


def test_the_files_the_formula_makes_are_current(mod, pki):
    d, cert = pki
    assert _remote(mod, d, cert) is True
    local = {**cert, "signing_private_key": str(d / "ca.key"), "private_key": str(d / "host.key")}
    assert mod.certificate_current(str(d / "host.crt"), 30, **local) is True  # the CA minion's own
    assert mod.certificate_current(str(d / "ca.crt"), 0, signing_private_key=str(d / "ca.key"), **CA_ARGS) is True
    assert mod.private_key_current(str(d / "host.key"), "secp256r1", "0640", user=USER, group=GROUP) is True
    assert mod.private_key_current(str(d / "ca.key"), "secp384r1", "0400") is True


@pytest.mark.parametrize(
    "policy, over",
    [({"CN": "pg2"}, {"CN": "pg2"}), ({"subjectAltName": "DNS:pg1, IP:198.18.0.12"}, {}),
     ({"keyUsage": "critical, digitalSignature"}, {}), ({"extendedKeyUsage": "serverAuth"}, {}),
     ({"basicConstraints": "critical, CA:true"}, {}), ({"O": "elsewhere"}, {}), ({}, {"days_remaining": 400}),
     ({}, {"private_key": "OTHER_KEY"}), ({"signing_cert": "OTHER_CA"}, {}), ({}, {"signing_policy_contents": None})],
    ids=["cn", "address", "key-usage", "extended-key-usage", "ca-flag", "subject-field",
         "expires-within-days_remaining", "other-key", "other-ca", "no-policy"],
)  # fmt: skip
def test_a_certificate_that_differs_from_its_policy_is_not_current(mod, pki, policy, over):
    d, cert = pki
    _key(d / "other.key")
    _key(d / "other-ca.key", ec.SECP384R1(), 0o400)
    _issue(d / "other-ca.crt", d / "other-ca.key", d / "other-ca.key", **CA_ARGS)
    files = {"OTHER_KEY": str(d / "other.key"), "OTHER_CA": str(d / "other-ca.crt")}
    policy = {k: files.get(v, v) for k, v in policy.items()}
    over = {k: files.get(v, v) if isinstance(v, str) else v for k, v in over.items()}
    if "signing_policy_contents" not in over:
        over["signing_policy_contents"] = {**cert, **policy}
    assert _remote(mod, d, cert, **over) is False


def test_a_certificate_file_that_differs_is_not_current(mod, pki):
    d, cert = pki
    (d / "host.crt").chmod(0o600)
    assert _remote(mod, d, cert) is False
    _issue(d / "host.crt", d / "host.key", d / "host.key", **{**cert, "signing_cert": None})
    assert _remote(mod, d, cert) is False  # self-signed
    _issue(d / "host.crt", d / "ca.key", d / "host.key", **{**cert, "issuerAltName": "DNS:elsewhere"})
    assert _remote(mod, d, cert) is False  # an extension more than the policy has
    (d / "host.crt").write_text("not a certificate")
    assert _remote(mod, d, cert) is False
    (d / "host.crt").unlink()
    assert _remote(mod, d, cert) is False


def test_a_key_that_differs_is_not_current(mod, pki):
    d, _ = pki
    key = str(d / "host.key")
    assert mod.private_key_current(key, "secp384r1", "0640") is False
    assert mod.private_key_current(key, "secp256r1", "0600") is False
    assert mod.private_key_current(key, "secp256r1", "0640", group="no-such-group-here") is False
    assert mod.private_key_current(key, "secp256r1", "0640", user="no-such-user-here") is False
    assert mod.private_key_current(str(d / "missing.key"), "secp256r1", "0640") is False
    (d / "host.key").write_text("garbage")
    assert mod.private_key_current(key, "secp256r1", "0640") is False


def test_the_policy_as_the_ca_pillar_holds_it_and_the_file_owner_are_read(mod, pki):
    d, cert = pki
    listed = [{"minions": "pg1"}, {"signing_private_key": "/nonexistent/ca.key"}, *({k: v} for k, v in cert.items())]
    assert _remote(mod, d, cert, signing_policy_contents=listed) is True
    assert _remote(mod, d, cert, user=USER, group=GROUP) is True
    assert _remote(mod, d, cert, group="no-such-group-here") is False
    assert _remote(mod, d, cert, signing_policy_contents="not a policy") is False
