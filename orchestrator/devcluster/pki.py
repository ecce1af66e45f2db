"""Certificates, keys and kubeconfigs for the local control plane.

One throw-away CA per cluster folder signs the serving and client certificates; everything is
written with mode 0600 and regenerated only when missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of the service range is the in-cluster "kubernetes" service.
SERVICE_CIDR = "10.96.0.0/16"
FIRST_SERVICE_IP = "10.96.0.1"
VALIDITY = dt.timedelta(days=365)

# (file stem, common name, organisation) of each client certificate.
CLIENTS = (
    ("admin", "kluis-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kwok", "kwok-controller", "system:masters"),
    ("apiserver-etcd-client", "kube-apiserver-etcd-client", None),
)


@dataclass(frozen=True)
class Pki:
    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    def cert(self, stem: str) -> Path:
        return self.path(f"{stem}.crt")

    def key(self, stem: str) -> Path:
        return self.path(f"{stem}.key")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attrs)


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _load_ca(pki: Pki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _make_ca(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("kluis-devcluster-ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(pki.ca_key, _key_pem(key))
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    pki: Pki,
    stem: str,
    subject: x509.Name,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(subject, key.public_key(), ca_cert, ca_key, usages, sans)
    _write_private(pki.key(stem), _key_pem(key))
    pki.cert(stem).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(root: Path) -> Pki:
    """Create the CA, serving and client certificates and the service-account keys if missing."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    pki = Pki(root)
    if not pki.ca_cert.exists():
        _make_ca(pki)
    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    if not pki.cert("apiserver").exists():
        dns = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        sans = [*loopback, x509.IPAddress(ipaddress.ip_address(FIRST_SERVICE_IP))]
        sans += [x509.DNSName(d) for d in dns]
        _issue(pki, "apiserver", _name("kube-apiserver"), [ExtendedKeyUsageOID.SERVER_AUTH], sans)
    if not pki.cert("etcd-server").exists():
        _issue(
            pki,
            "etcd-server",
            _name("etcd"),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            loopback,
        )
    for stem, common_name, organisation in CLIENTS:
        if not pki.cert(stem).exists():
            _issue(pki, stem, _name(common_name, organisation), [ExtendedKeyUsageOID.CLIENT_AUTH])
    if not pki.path("sa.key").exists():
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki.path("sa.key"), _key_pem(sa))
        pki.path("sa.pub").write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    if not pki.path("encryption.yaml").exists():
        # Secrets are encrypted at rest in etcd, as a production cluster should do.
        secret = base64.b64encode(os.urandom(32)).decode()
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {
                    "resources": ["secrets"],
                    "providers": [
                        {"secretbox": {"keys": [{"name": "key1", "secret": secret}]}},
                        {"identity": {}},
                    ],
                }
            ],
        }
        _write_private(pki.path("encryption.yaml"), yaml.safe_dump(config).encode())
    return pki


def make_kubeconfig(pki: Pki, server: str, stem: str, user: str) -> dict[str, object]:
    """A kubeconfig with embedded CA and client credentials (portable, one file)."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kluis-dev",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki.cert(stem)),
                    "client-key-data": b64(pki.key(stem)),
                },
            }
        ],
        "contexts": [{"name": "kluis-dev", "context": {"cluster": "kluis-dev", "user": user}}],
        "current-context": "kluis-dev",
    }


def write_kubeconfig(path: Path, config: dict[str, object]) -> Path:
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path
