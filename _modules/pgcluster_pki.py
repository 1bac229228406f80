"""Whether this host's TLS files already are what the formula's x509 states would make.

The formula's ``x509.private_key_managed`` and ``x509.certificate_managed`` states use these as
``unless``: on every run, ``certificate_managed`` with a ``ca_server`` asks the CA minion for
its signing policy (a peer publish through the master, a job on the CA minion), which made
about a third of an idle highstate's time. A check answers True only when it is sure (the
file's mode, owner and group, the key's curve, the certificate's issuer signature, key,
subject, names, CA flag and a validity that does not end within ``days_remaining``); anything
unreadable or different answers False and the x509 state then runs and decides as before.

CLI Example:

.. code-block:: bash

    salt pg1 pgcluster_pki.private_key_current /etc/pgcluster/pki/host.key secp256r1 0640 group=pgcluster-tls
    salt pg1 pgcluster_pki.certificate_current /etc/pgcluster/pki/host.crt ca=/etc/pgcluster/pki/ca.crt \\
        private_key=/etc/pgcluster/pki/host.key cn=pg1 dns='[pg1]' ips='[198.18.0.11]' days_remaining=30
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import pwd
import stat

import salt.utils.files

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    HAS_CRYPTOGRAPHY = True
    # What reading a file, a PEM or a signature can raise; each means "not current".
    UNREADABLE = (OSError, ValueError, TypeError, KeyError, x509.ExtensionNotFound, InvalidSignature)
except ImportError:
    HAS_CRYPTOGRAPHY = False

__virtualname__ = "pgcluster_pki"


def __virtual__():
    if not HAS_CRYPTOGRAPHY:
        return (False, "pgcluster_pki: the cryptography library is missing (Salt's x509 modules need it too)")
    return __virtualname__


def _owned(path: str, mode: str, user: str | None, group: str | None) -> bool:
    """PATH has MODE ('0640'), and USER and GROUP when given."""
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != int(str(mode), 8):
        return False
    if user is not None and pwd.getpwuid(st.st_uid).pw_name != user:
        return False
    return group is None or grp.getgrgid(st.st_gid).gr_name == group


def _private_key(path: str):
    with salt.utils.files.fopen(path, "rb") as fh:
        return serialization.load_pem_private_key(fh.read(), password=None)


def _certificate(path: str):
    with salt.utils.files.fopen(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def _public(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_key_current(name: str, curve: str, mode: str, user: str | None = None, group: str | None = None) -> bool:
    """True when NAME holds an unencrypted EC private key on CURVE (``secp256r1``,
    ``secp384r1``) with MODE (and USER, GROUP when given).

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster_pki.private_key_current /etc/pgcluster/pki/host.key secp256r1 0640 group=pgcluster-tls
    """
    try:
        if not _owned(name, mode, user, group):
            return False
        key = _private_key(name)
    except UNREADABLE:
        return False
    return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve


def certificate_current(
    name: str,
    ca: str,
    private_key: str,
    cn: str,
    days_remaining: int,
    dns: list[str] | None = None,
    ips: list[str] | None = None,
    is_ca: bool = False,
    mode: str = "0644",
) -> bool:
    """True when the certificate NAME (MODE) is signed by the certificate CA (NAME itself for
    a self-signed CA), holds PRIVATE_KEY's public key, has the common name CN, exactly the
    names DNS and addresses IPS, the CA flag IS_CA, and stays valid for more than
    DAYS_REMAINING days.

    CLI Example:

    .. code-block:: bash

        salt pg1 pgcluster_pki.certificate_current /etc/pgcluster/pki/host.crt ca=/etc/pgcluster/pki/ca.crt \\
            private_key=/etc/pgcluster/pki/host.key cn=pg1 dns='[pg1]' ips='[198.18.0.11]' days_remaining=30
    """
    try:
        if not _owned(name, mode, None, None):
            return False
        cert, issuer, key = _certificate(name), _certificate(ca), _private_key(private_key)
        cert.verify_directly_issued_by(issuer)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if dns or ips:
            alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            alt_names = (sorted(alt.get_values_for_type(x509.DNSName)), sorted(alt.get_values_for_type(x509.IPAddress)))
        else:
            alt_names = ([], [])
        wanted = (sorted(dns or []), sorted(ipaddress.ip_address(a) for a in ips or []))
    except UNREADABLE:
        return False
    now = datetime.datetime.now(datetime.UTC)
    left = cert.not_valid_after_utc - now
    return (
        _public(cert.public_key()) == _public(key.public_key())
        and [n.value for n in names] == [cn]
        and alt_names == wanted
        and constraints.ca is bool(is_ca)
        and cert.not_valid_before_utc <= now
        and left > datetime.timedelta(days=int(days_remaining))
    )
