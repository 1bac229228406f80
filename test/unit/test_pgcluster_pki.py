"""_modules/pgcluster_pki.py: the cheap checks the x509 states run first say True only for the
files the formula would make (real keys and certificates made here with cryptography), and
False for each way a file can differ, so that the x509 state then runs."""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import pwd
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pgctest import load_module

NOW = datetime.datetime.now(datetime.UTC)
ROOT_GROUP = grp.getgrgid(os.getgid()).gr_name
USER = pwd.getpwuid(os.getuid()).pw_name


def _key(path, curve=None, mode=0o640):
    key = ec.generate_private_key(curve or ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(mode)
    return key


def _cert(path, key, cn, signer, issuer_name, ca=False, dns=("pg1",), ips=("198.18.0.11",), days=365, mode=0o644):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    path.write_bytes(builder.sign(signer, hashes.SHA384()).public_bytes(serialization.Encoding.PEM))
    path.chmod(mode)


class Files(NamedTuple):
    dir: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_name: x509.Name
    host_key: ec.EllipticCurvePrivateKey

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture
def pki(tmp_path):
    ca_key = _key(tmp_path / "ca.key", ec.SECP384R1(), 0o400)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgcluster CA")])
    _cert(tmp_path / "ca.crt", ca_key, "pgcluster CA", ca_key, ca_name, ca=True, dns=(), ips=())
    host_key = _key(tmp_path / "host.key")
    _cert(tmp_path / "host.crt", host_key, "pg1", ca_key, ca_name)
    return Files(tmp_path, ca_key, ca_name, host_key)


@pytest.fixture
def mod():
    return load_module("modules", "pgcluster_pki")


def _host_current(mod, d, **over):
    args = {"name": str(d / "host.crt"), "ca": str(d / "ca.crt"), "private_key": str(d / "host.key"), "cn": "pg1",
            "dns": ["pg1"], "ips": ["198.18.0.11"], "days_remaining": 30} | over  # fmt: skip
    return mod.certificate_current(**args)


def test_the_files_the_formula_makes_are_current(mod, pki):
    assert _host_current(mod, pki) is True
    assert mod.certificate_current(str(pki / "ca.crt"), str(pki / "ca.crt"), str(pki / "ca.key"), "pgcluster CA", 0,
                                   is_ca=True) is True  # fmt: skip
    assert mod.private_key_current(str(pki / "host.key"), "secp256r1", "0640", user=USER, group=ROOT_GROUP) is True
    assert mod.private_key_current(str(pki / "ca.key"), "secp384r1", "0400") is True


@pytest.mark.parametrize(
    "over",
    [{"cn": "pg2"}, {"dns": ["pg2"]}, {"ips": ["198.18.0.12"]}, {"dns": ["pg1", "pg1.lab"]},
     {"days_remaining": 400}, {"ca": "OTHER"}, {"private_key": "OTHER_KEY"}, {"name": "MISSING"}],
    ids=["cn", "dns", "ip", "extra-name", "expires-within-days_remaining", "other-ca", "other-key", "missing"],
)  # fmt: skip
def test_a_certificate_that_differs_is_not_current(mod, pki, over):
    other_key = _key(pki / "other.key")
    _cert(pki / "other-ca.crt", other_key, "pgcluster CA", other_key, pki.ca_name, ca=True, dns=(), ips=())
    files = {"OTHER": str(pki / "other-ca.crt"), "OTHER_KEY": str(pki / "other.key"), "MISSING": str(pki / "no.crt")}
    assert (
        _host_current(mod, pki, **{k: files.get(v, v) if isinstance(v, str) else v for k, v in over.items()}) is False
    )


def test_a_certificate_with_another_mode_or_signed_by_another_key_is_not_current(mod, pki):
    (pki / "host.crt").chmod(0o600)
    assert _host_current(mod, pki) is False
    _cert(pki / "host.crt", pki.host_key, "pg1", pki.host_key, pki.ca_name)  # self-signed, CA's name as issuer
    assert _host_current(mod, pki) is False
    _cert(pki / "host.crt", pki.host_key, "pg1", pki.ca_key, pki.ca_name, ca=True)  # a CA certificate
    assert _host_current(mod, pki) is False
    (pki / "host.crt").write_text("not a certificate")
    assert _host_current(mod, pki) is False


def test_a_key_that_differs_is_not_current(mod, pki):
    key = str(pki / "host.key")
    assert mod.private_key_current(key, "secp384r1", "0640") is False
    assert mod.private_key_current(key, "secp256r1", "0600") is False
    assert mod.private_key_current(key, "secp256r1", "0640", group="no-such-group-here") is False
    assert mod.private_key_current(key, "secp256r1", "0640", user="no-such-user-here") is False
    assert mod.private_key_current(str(pki / "missing.key"), "secp256r1", "0640") is False
    (pki / "host.key").write_text("garbage")
    assert mod.private_key_current(key, "secp256r1", "0640") is False
