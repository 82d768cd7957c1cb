"""`asrpro certs HOST...`: a small self-signed certificate authority and one server certificate for a small cluster
(every host's nats-server presents it to routes and clients), made with the `openssl` command. For more than a few
hosts, or an organisation's own CA, issue certificates your usual way and point cluster.tls_* / nats.tls_* at
them."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
from pathlib import Path

DAYS_CA = 3650
DAYS_SERVER = 825  # what clients accept for a server certificate


def _openssl(*args: str) -> None:
    try:
        subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError("the openssl command is needed (apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"openssl {args[0]} failed: {exc.stderr.strip()}") from None


def subject_alt_names(hosts: list[str]) -> str:
    names = ["DNS:localhost", "IP:127.0.0.1"]
    for host in hosts:
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            entry = f"DNS:{host}"
        if entry not in names:
            names.append(entry)
    return ",".join(names)


def make(out: Path, hosts: list[str]) -> dict[str, Path]:
    """ca.pem/ca.key (keep ca.key off the hosts) and server.pem/server.key valid for `hosts`, localhost and
    127.0.0.1. Keys are written readable by their owner only."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")}
    old = os.umask(0o077)
    try:
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", str(DAYS_CA),
            "-keyout", str(files["ca.key"]), "-out", str(files["ca.pem"]), "-subj", "/CN=asrpro cluster CA",
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            csr, ext = Path(tmp) / "server.csr", Path(tmp) / "ext.cnf"
            ext.write_text(f"subjectAltName={subject_alt_names(hosts)}\nextendedKeyUsage=serverAuth,clientAuth\n")
            _openssl(
                "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", str(files["server.key"]),
                "-out", str(csr), "-subj", "/CN=asrpro",
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
                "-CAcreateserial", "-out", str(files["server.pem"]), "-days", str(DAYS_SERVER), "-sha256",
                "-extfile", str(ext),
            )  # fmt: skip
    finally:
        os.umask(old)
    (out / "ca.srl").unlink(missing_ok=True)
    return files
