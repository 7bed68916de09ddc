"""TLS and SCRAM for the local stack (`tickpipe stack up --tls`): a private test CA, a server certificate for this
machine, and the broker's SASL_SSL settings.

Certificates are made with the `openssl` command line (no Python dependency for a test CA): one CA per state dir,
valid for 30 days and renewed when it is about to expire, and a server certificate for `localhost` and
`127.0.0.1` (the stack advertises 127.0.0.1; clients that verify host names accept either). Keys are PKCS#8 PEM,
which PostgreSQL, librdkafka and the Java Kafka client (PEM key stores, KIP-651) all read as they are.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tickpipe.errors import StackError

DAYS = 30
HOSTS = ("localhost", "127.0.0.1")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
BROKER_USER = "broker"  # inter-broker traffic authenticates too: no unauthenticated client listener is left
CLIENT_USER = "tickpipe"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"tls: openssl {args[0]} failed: {result.stderr.strip()[-400:]}")


def _expires_soon(cert: Path, seconds: float = 86_400.0) -> bool:
    result = subprocess.run(
        ["openssl", "x509", "-checkend", str(int(seconds)), "-noout", "-in", str(cert)],
        capture_output=True,
        check=False,
    )
    return result.returncode != 0


def make_ca(folder: Path, name: str = "tickpipe local test CA") -> Certificate:
    """A self-signed CA (EC P-256) in `folder`/ca.pem and ca.key."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = Certificate(folder / "ca.pem", folder / "ca.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca.key), "-out", str(ca.cert), "-days", str(DAYS), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ca.key.chmod(0o600)
    return ca


def issue(ca: Certificate, folder: Path, name: str = "server", hosts: tuple[str, ...] = HOSTS) -> Certificate:
    """A certificate for `hosts` signed by `ca`, usable by servers and (for mutual TLS) clients."""
    folder.mkdir(parents=True, exist_ok=True)
    issued = Certificate(folder / f"{name}.pem", folder / f"{name}.key")
    csr, extensions = folder / f"{name}.csr", folder / f"{name}.ext"
    names = ",".join(f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}" for host in hosts)
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(issued.key), "-out", str(csr), "-subj", f"/CN={hosts[0]}",
    )  # fmt: skip
    issued.key.chmod(0o600)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(63)), "-days", str(DAYS), "-extfile", str(extensions),
        "-out", str(issued.cert),
    )  # fmt: skip
    csr.unlink()
    extensions.unlink()
    return issued


@dataclass(frozen=True)
class LocalCertificates:
    """The stack's CA and its server certificate; `bundle` is the key followed by the chain (Java's PEM key store)."""

    ca: Certificate
    server: Certificate
    bundle: Path


def local_certificates(folder: Path) -> LocalCertificates:
    """The state dir's CA and server certificate, made on first use and renewed a day before they expire."""
    ca = Certificate(folder / "ca.pem", folder / "ca.key")
    server = Certificate(folder / "server.pem", folder / "server.key")
    bundle = folder / "server-bundle.pem"
    if not ca.cert.exists() or _expires_soon(ca.cert):
        ca = make_ca(folder)
        server.cert.unlink(missing_ok=True)
    if not server.cert.exists() or _expires_soon(server.cert) or not bundle.exists():
        server = issue(ca, folder)
        bundle.touch(mode=0o600)
        bundle.write_text(server.key.read_text() + server.cert.read_text() + ca.cert.read_text())
    return LocalCertificates(ca, server, bundle)


def scram_passwords(secrets_file: Path) -> dict[str, str]:
    """SCRAM passwords of the broker's own user and the stages' user, generated once (mode 0600)."""
    if not secrets_file.exists():
        generated = {user: secrets.token_urlsafe(18) for user in (BROKER_USER, CLIENT_USER)}
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(json.dumps(generated))
    data: dict[str, str] = json.loads(secrets_file.read_text())
    return data


def scram_format_args(passwords: dict[str, str]) -> list[str]:
    """`kafka-storage format --add-scram` arguments: in KRaft, SCRAM users are records of the metadata log, so the
    first ones (the broker's own included) must exist before the broker starts (KIP-900)."""
    return [
        arg
        for user, password in passwords.items()
        for mechanism in SASL_MECHANISMS
        for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
    ]


def broker_settings(broker: int, controller: int, certs: LocalCertificates, broker_password: str) -> dict[str, str]:
    """server.properties entries for a SASL_SSL client listener and a mutual-TLS controller listener.

    SCRAM cannot protect the controller listener (the controller reads SCRAM users from the log it serves), so
    that one requires a client certificate from our CA instead.
    """
    jaas = f'{SCRAM_LOGIN} required username="{BROKER_USER}" password="{broker_password}";'
    settings = {
        "listeners": f"SASL_SSL://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{broker}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.bundle),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca.cert),
    }
    for mechanism in SASL_MECHANISMS:
        settings[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = jaas
    return settings
