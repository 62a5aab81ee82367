"""Test certificates made with openssl: a private CA, a server and a client certificate.

The server certificate is for IP 127.0.0.1, so clients that check the host
name accept it on the loopback address. Keys are not encrypted.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = "2"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a private CA, certificates it signed, and an unrelated CA."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path


def missing_openssl() -> str:
    """Return why the certificates cannot be made, or '' when openssl is on PATH."""
    return "" if shutil.which("openssl") else "openssl not found on PATH; it creates the test certificates"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed with status {result.returncode}: {result.stderr}")


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    """Create ``<name>.key`` and ``<name>.pem`` signed by the CA in ``directory``."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.csr"),
    )
    extension_file = directory / f"{name}.ext"
    extension_file.write_text(extensions + "\n", encoding="utf-8")
    _openssl(
        "x509", "-req", "-in", str(directory / f"{name}.csr"), "-days", VALID_DAYS,
        "-CA", str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"), "-CAcreateserial",
        "-extfile", str(extension_file), "-out", str(directory / f"{name}.pem"),
    )


def make_tls_files(directory: Path) -> TlsFiles:
    """Create the CA, a server certificate for 127.0.0.1, a client certificate and another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", VALID_DAYS,
            "-subj", f"/CN=roitrack test {name}",
            "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
        )
    _signed(directory, "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1")
    _signed(directory, "client", "/CN=roitrack-test-client", "extendedKeyUsage=clientAuth")
    return TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca_cert=directory / "other-ca.pem",
    )
