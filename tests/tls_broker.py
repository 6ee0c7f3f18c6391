"""A throwaway TLS setup for tests: a self-signed CA, server and client certificates, and a
RabbitMQ TLS listener on a free loopback port, started and stopped at runtime.

The listener is added to the running broker with `rabbitmqctl eval` calling
`rabbit_networking:start_ssl_listener/3` (RabbitMQ 3.10; the same function the broker runs at
boot for `listeners.ssl.*`), and removed with `stop_tcp_listener/1`, so the broker is never
restarted and is left as it was found. The files live in a world-readable temporary
directory because the broker runs as the `rabbitmq` user, which cannot enter pytest's
`tmp_path` (mode 700).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from broker_tools import rabbitmqctl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from munggoggo.testing import free_port


@dataclass(frozen=True)
class TLSFiles:
    directory: Path
    ca: Path  # the CA that signed the server and client certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_ca: Path  # a CA the broker does not trust: verifying the server with it fails
    stranger_cert: Path  # a client certificate it signed, which the broker refuses
    stranger_key: Path


@dataclass(frozen=True)
class TLSListener:
    port: int
    files: TLSFiles


def rabbitmqctl_available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def rabbitmqctl_patiently(*args: str, wait: float = 90.0) -> str:
    """rabbitmqctl for set-up and clean-up: the fault tests stop the broker app for a few
    seconds now and then, and a clean-up refused meanwhile would leave things behind."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return rabbitmqctl(*args)
        except RuntimeError as exc:
            # "no_exists": the app's tables are gone while it is stopped.
            down = any(s in str(exc) for s in ("'rabbit' app to", "nodedown", "no_exists"))
            if not down or time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(directory: Path) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate."""

    def pem(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("munggoggo test CA", ca_key, None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        "localhost",
        server_key,
        issuer,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate(
        "munggoggo-test-client", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = _certificate("stranger CA", stranger_key, None, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_cert = _certificate(
        "rogue-client",
        rogue_key,
        (stranger_ca.subject, stranger_key),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    files = TLSFiles(
        directory=directory,
        ca=pem(directory / "ca.pem", ca_cert),
        server_cert=pem(directory / "server.pem", server_cert),
        server_key=directory / "server.key",
        client_cert=pem(directory / "client.pem", client_cert),
        client_key=directory / "client.key",
        stranger_ca=pem(directory / "stranger-ca.pem", stranger_ca),
        stranger_cert=pem(directory / "rogue-client.pem", rogue_cert),
        stranger_key=directory / "rogue-client.key",
    )
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    _write_key(files.stranger_key, rogue_key)
    for path in directory.iterdir():
        path.chmod(0o644)  # the broker (user rabbitmq) reads them; throwaway keys
    return files


def _erl_string(path: Path) -> str:
    text = str(path)
    if '"' in text or "\\" in text:
        raise ValueError(f"path not usable in an Erlang string: {text!r}")
    return f'"{text}"'


def _start_listener(port: int, files: TLSFiles) -> str:
    ssl_options = ",".join(
        [
            f"{{cacertfile,{_erl_string(files.ca)}}}",
            f"{{certfile,{_erl_string(files.server_cert)}}}",
            f"{{keyfile,{_erl_string(files.server_key)}}}",
            "{verify,verify_peer}",
            "{fail_if_no_peer_cert,true}",
        ]
    )
    # ensure_ssl() starts Erlang's ssl application, which a broker without TLS listeners
    # has not started; fix_ssl_options/1 applies the broker's defaults (TLS versions).
    return rabbitmqctl_patiently(
        "eval",
        "_ = rabbit_networking:ensure_ssl(), "
        f'rabbit_networking:start_ssl_listener({{"127.0.0.1", {port}}}, '
        f"rabbit_networking:fix_ssl_options([{ssl_options}]), 1).",
    ).strip()


def _stop_listener(port: int) -> None:
    # A broker app restarted meanwhile (fault tests) has dropped the listener already; then
    # the call fails inside the broker and there is nothing left to stop.
    with contextlib.suppress(RuntimeError):
        rabbitmqctl_patiently(
            "eval", f'rabbit_networking:stop_tcp_listener({{"127.0.0.1", {port}}}).'
        )


@contextlib.contextmanager
def tls_listener() -> Iterator[TLSListener]:
    """A RabbitMQ TLS listener on 127.0.0.1:<free port> that requires a client certificate."""
    directory = Path(tempfile.mkdtemp(prefix="munggoggo-tls-"))
    try:
        directory.chmod(0o755)
        files = make_tls_files(directory)
        for _ in range(3):  # another process may take the free port before the broker does
            port = free_port()
            answer = _start_listener(port, files)
            if answer == "ok":
                break
            if "eaddrinuse" not in answer:
                raise RuntimeError(f"RabbitMQ refused to start a TLS listener: {answer}")
        else:
            raise RuntimeError(f"no free port for a TLS listener: {answer}")
        try:
            yield TLSListener(port, files)
        finally:
            _stop_listener(port)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def listener_ports() -> set[int]:
    """The ports the broker listens on (to check that a test left none behind)."""
    out = rabbitmqctl_patiently(
        "eval", "[P || {listener, _, _, _, _, P, _} <- rabbit_networking:active_listeners()]."
    )
    return {int(p) for p in out.strip().strip("[]").split(",") if p.strip()}


__all__ = [
    "TLSFiles",
    "TLSListener",
    "listener_ports",
    "rabbitmqctl_available",
    "rabbitmqctl_patiently",
    "tls_listener",
]
