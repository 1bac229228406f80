"""Whether this host's TLS files already are what the formula's x509 states would make.

The formula's ``x509.private_key_managed`` and ``x509.certificate_managed`` states use these as
``unless``: on every run, ``certificate_managed`` with a ``ca_server`` asks the CA minion for
its signing policy (a peer publish through the master, a job on the CA minion), which made
about a third of an idle highstate's time. A check answers True only when it is sure: the
file's mode (owner and group for the key), the key's curve; for a certificate, Salt's own
comparison (``salt.utils.x509.check_cert_changes``, what the state itself runs) with the
signing policy read from the model instead of asked of the CA minion. Anything unreadable or
different answers False, and the x509 state then runs and decides as before.

CLI Example:

.. code-block:: bash

    salt pg1 pgcluster_pki.private_key_current /etc/pgcluster/pki/host.key secp256r1 0640 group=pgcluster-tls
    salt salt pgcluster_pki.certificate_current /etc/pgcluster/pki/host.crt 30 CN=salt \\
        private_key=/etc/pgcluster/pki/host.key signing_private_key=/etc/pgcluster/pki/ca.key \\
        signing_cert=/etc/pgcluster/pki/ca.crt
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from typing import Any

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import salt.utils.x509 as x509util
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    HAS_CRYPTOGRAPHY = True
    # What reading a file, a PEM or a signature can raise; each means "not current".
    UNREADABLE = (OSError, ValueError, TypeError, KeyError, x509.ExtensionNotFound, x509.DuplicateExtension,
                  InvalidSignature, UnsupportedAlgorithm, CommandExecutionError, SaltInvocationError,
                  AttributeError, OverflowError)  # fmt: skip
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


def _policy(contents: Any) -> dict:
    """A signing policy as the CA minion holds it (a mapping, or pillar's list of one-key
    mappings) without what a certificate does not hold."""
    policy = {}
    for item in contents if isinstance(contents, list) else [contents or {}]:
        policy.update(item)
    for k in ("minions", "signing_private_key", "signing_private_key_passphrase"):
        policy.pop(k, None)
    return policy


def certificate_current(
    name: str,
    days_remaining: int,
    mode: str = "0644",
    signing_policy_contents: dict | None = None,
    **kwargs: Any,
) -> bool:
    """True when the certificate NAME (with MODE) is what ``x509.certificate_managed`` with the
    same arguments (KWARGS: ``private_key``, ``CN``, ``signing_cert``, extensions...) would leave
    unchanged, compared by Salt's own ``check_cert_changes``: its public key, the signature of
    its issuer, subject, issuer, every extension, and a validity beyond DAYS_REMAINING days.
    With ``ca_server`` (a certificate the CA minion signs), SIGNING_POLICY_CONTENTS is that
    signing policy (the model's ``host_certificate``, as the CA minion's pillar holds it): read
    here instead of asking the CA minion.

    CLI Example:

    .. code-block:: bash

        salt salt pgcluster_pki.certificate_current /etc/pgcluster/pki/host.crt 30 CN=salt \\
            private_key=/etc/pgcluster/pki/host.key signing_private_key=/etc/pgcluster/pki/ca.key \\
            signing_cert=/etc/pgcluster/pki/ca.crt
    """
    cert_args = {k: v for k, v in kwargs.items() if not k.startswith("__") and k != "signing_policy"}
    try:
        policy = _policy(signing_policy_contents)
        if cert_args.get("ca_server") and not policy:
            return False
        file_args, cert_args = x509util.split_file_kwargs(x509util.ensure_cert_kwargs_compat(cert_args))
        if not _owned(name, mode, file_args.get("user"), file_args.get("group")):
            return False
        current, changes, replace, _ = x509util.check_cert_changes(
            name,
            days_remaining=int(days_remaining),
            days_valid=cert_args.pop("days_valid", None),
            not_before=None,
            not_after=None,
            ca_server=cert_args.pop("ca_server", None),
            signing_policy_contents=policy,
            encoding="pem",
            append_certs=[],
            digest="sha256",
            **cert_args,
        )
    except UNREADABLE:
        return False
    return current is not None and not changes and not replace
