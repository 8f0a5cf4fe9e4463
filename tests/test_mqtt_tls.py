"""MQTT over TLS against a real Mosquitto: a CA, a broker certificate for 127.0.0.1/localhost and
client certificates are made here (``cryptography``, valid for an hour); the broker runs the shipped
``config/mosquitto/edged.conf.template`` with its commented TLS listener enabled as written (TLS 1.2
minimum, ``require_certificate``, ``use_identity_as_username``: the certificate's common name is the
user of the shipped ACL; no anonymous clients). edged's ``MqttClient`` and ``RequestClient`` connect
with ``TlsSettings``; another CA, no client certificate, a client certificate from another CA and a
broker certificate for another host name are refused, each with its reason in
``MqttState.last_failure``. Loopback only; skipped without mosquitto."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mqtt_broker import READY_TIMEOUT_S, Broker, Brokers, free_port
from paho.mqtt.enums import CallbackAPIVersion

from edged.api.auth import Authenticator
from edged.api.client import RequestClient
from edged.api.server import ApiServer
from edged.api.settings import ApiSettings
from edged.clock import SystemClock
from edged.directory.crypto import create_key_file
from edged.directory.store import Store
from edged.mqtt.client import MqttClient, MqttSettings, MqttStats, TlsSettings
from edged.mqtt.topics import Topics
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.settings import DirectorySettings
from edged.types import ImageRGB

CONFIG = Path(__file__).resolve().parents[1] / "config" / "mosquitto"
TOPICS = Topics("pi-01")
VERSIONS = {"edged": "test"}
LOOPBACK = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
# paho does not close the socket when the TLS handshake fails (paho.mqtt.client._ssl_wrap_socket);
# CPython closes it as soon as paho's except block ends (the same fd comes back on every retry),
# but with a ResourceWarning, which this suite turns into an error
PAHO_HANDSHAKE_SOCKET = pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")


# certificates


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    """A throw-away CA (EC P-256, one hour) that issues broker and client certificates as PEM files."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        self.certificate = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, sans: list[x509.GeneralName] | None = None) -> Issued:
        """A server certificate for ``sans`` when given, else a client certificate for ``common_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if sans else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(_name(common_name), self.certificate.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{common_name}.crt", self.directory / f"{common_name}.key")
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.touch(mode=0o600)
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued

    def client_tls(self, common_name: str, **extra: Any) -> TlsSettings:
        issued = self.issue(common_name)
        return TlsSettings(ca_file=self.ca_file, cert_file=issued.cert, key_file=issued.key, **extra)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


# brokers


def site_conf(broker: Broker, directory: Path, ca: Authority, server: Issued) -> str:
    """The shipped ``edged.conf.template`` with its commented TLS listener enabled as written, on
    ``broker.port`` (loopback) with our files; its plain listener goes to another loopback port."""
    acl, passwords = directory / "acl", directory / "passwd"
    acl.write_text(Template((CONFIG / "acl.template").read_text()).substitute(DEVICE=TOPICS.device_id))
    passwords.write_text("")  # nobody logs in with a password here
    lines = (
        Template((CONFIG / "edged.conf.template").read_text())
        .substitute(
            PORT=free_port(), BIND="127.0.0.1", PASSWORD_FILE=passwords, ACL_FILE=acl, STATE_DIR=directory
        )
        .splitlines()
    )
    start = lines.index("# listener 8883")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("# "))
    block = "\n".join(line.removeprefix("# ") for line in lines[start:end])
    assert {"tls_version tlsv1.2", "require_certificate true", "use_identity_as_username true"} <= set(
        block.splitlines()
    ), block
    for old, new in {
        "listener 8883": f"listener {broker.port} 127.0.0.1",
        "/etc/mosquitto/certs/ca.crt": str(ca.ca_file),
        "/etc/mosquitto/certs/broker.crt": str(server.cert),
        "/etc/mosquitto/certs/broker.key": str(server.key),
    }.items():
        assert old in block, f"the template's TLS listener has no {old!r}"
        block = block.replace(old, new)
    lines[start:end] = block.splitlines()
    return "\n".join(lines) + f"\nlog_dest file {broker.log}\nlog_type all\n{broker.run_as()}"


def tls_broker(brokers: Brokers, ca: Authority, server: Issued) -> Broker:
    """Mosquitto with the shipped configuration and its TLS listener: clients need a certificate
    from ``ca``, its common name is the user, the shipped ACL applies, no anonymous clients."""
    broker = brokers(start=False)
    broker.conf.write_text(site_conf(broker, broker.conf.parent, ca, server))
    broker.start()  # its readiness probe is a bare TCP connect: the log shows one failed handshake
    return broker


@dataclass(frozen=True)
class Site:
    ca: Authority
    broker: Broker


@pytest.fixture
def site(tmp_path: Path, brokers: Brokers) -> Site:
    ca = Authority(tmp_path / "pki", "edged test CA")
    server = ca.issue("broker", LOOPBACK)
    return Site(ca, tls_broker(brokers, ca, server))


def settings(port: int, tls: TlsSettings, **extra: Any) -> MqttSettings:
    return MqttSettings(port=port, tls=tls, reconnect_min_delay_s=1, reconnect_max_delay_s=2, **extra)


def failure_of(client: MqttClient, timeout: float = READY_TIMEOUT_S) -> MqttStats:
    """Wait (bounded) until the client recorded why it could not connect."""
    deadline = time.monotonic() + timeout
    while (snapshot := client.state.snapshot()).last_failure is None:
        assert time.monotonic() < deadline, "no failure recorded"
        time.sleep(0.05)  # the state has no event to wait on
    return snapshot


class TlsWatcher:
    """A plain paho client (not edged's) over TLS with its own certificate, recording what it gets."""

    def __init__(self, port: int, tls: TlsSettings, topic: str, client_id: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file), keyfile=str(tls.key_file))
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(READY_TIMEOUT_S), "the TLS watcher did not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes, bool]]], bool]
    ) -> list[tuple[str, bytes, bool]]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.messages), READY_TIMEOUT_S), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def has_state(state: str) -> Callable[[list[tuple[str, bytes, bool]]], bool]:
    return lambda messages: any(f'"state":"{state}"'.encode() in payload for _, payload, _ in messages)


# tests


def test_client_certificate_login_birth_and_clean_stop(site: Site) -> None:
    """CA, client certificate and key: connected (the certificate's CN is the broker user, so the
    shipped ACL lets it publish its status), the retained birth reaches a TLS subscriber, a clean
    stop leaves the retained ``stopped``."""
    device = MqttClient(settings(site.broker.port, site.ca.client_tls("edged-pi-01")), TOPICS, VERSIONS)
    admin_tls = site.ca.client_tls("admin")
    device.start()
    try:
        assert device.connected.wait(READY_TIMEOUT_S), device.state.snapshot()
        watcher = TlsWatcher(site.broker.port, admin_tls, TOPICS.status(), "admin-1")
        try:
            (topic, _, retained), *_ = watcher.wait_for(has_state("online"))
            assert topic == TOPICS.status() and retained
        finally:
            watcher.close()
    finally:
        assert device.stop()  # "stopped" acknowledged over TLS
    after = TlsWatcher(site.broker.port, admin_tls, TOPICS.status(), "admin-2")
    try:
        messages = after.wait_for(bool)
        assert has_state("stopped")(messages) and messages[0][2]  # retained; the will did not fire
    finally:
        after.close()
    snapshot = device.state.snapshot()
    assert snapshot.connects == 1 and snapshot.last_failure is None
    assert "u'edged-pi-01'" in site.broker.log.read_text()  # the identity became the user name


@PAHO_HANDSHAKE_SOCKET
def test_a_broker_signed_by_another_ca_is_refused(site: Site, tmp_path: Path) -> None:
    """The client trusts another CA: the TLS handshake fails, never connected, and the reason
    (certificate verification) is recorded instead of a bare "unreachable"."""
    stranger = Authority(tmp_path / "other", "another CA")
    own = site.ca.issue("edged-pi-01")
    tls = TlsSettings(ca_file=stranger.ca_file, cert_file=own.cert, key_file=own.key)
    device = MqttClient(settings(site.broker.port, tls), TOPICS, VERSIONS)
    device.start()
    try:
        snapshot = failure_of(device)
        assert snapshot.last_failure is not None
        assert snapshot.last_failure.startswith("TLS: the broker's certificate was not accepted")
        assert not device.connected.is_set() and snapshot.connects == 0
    finally:
        assert not device.stop()


def test_a_client_certificate_from_another_ca_is_refused(site: Site, tmp_path: Path) -> None:
    """edged trusts the broker, but its own certificate comes from a CA the broker does not know."""
    stranger = Authority(tmp_path / "other", "another CA")
    foreign = stranger.issue("edged-pi-01")
    tls = TlsSettings(ca_file=site.ca.ca_file, cert_file=foreign.cert, key_file=foreign.key)
    device = MqttClient(settings(site.broker.port, tls), TOPICS, VERSIONS)
    device.start()
    try:
        snapshot = failure_of(device)
        assert "unknown ca" in (snapshot.last_failure or "").lower().replace("_", " ")  # the broker's alert
        assert not device.connected.is_set() and snapshot.connects == 0
    finally:
        device.stop()
    # the request client says so too, instead of timing out without a reason
    request_settings = settings(site.broker.port, TlsSettings(ca_file=site.ca.ca_file), host="localhost")
    with pytest.raises(ConnectionError, match="closed before the broker answered"):
        RequestClient(request_settings, TOPICS.device_id).connect(timeout=READY_TIMEOUT_S)


def test_no_client_certificate_is_refused(site: Site) -> None:
    """The broker requires a client certificate; a client with only the CA is never connected. With
    TLS 1.3 the broker's alert arrives after the handshake, so the reason is its alert."""
    device = MqttClient(settings(site.broker.port, TlsSettings(ca_file=site.ca.ca_file)), TOPICS, VERSIONS)
    device.start()
    try:
        snapshot = failure_of(device)
        assert snapshot.last_failure is not None and "certificate" in snapshot.last_failure.lower()
        assert not device.connected.is_set() and snapshot.connects == 0
    finally:
        device.stop()


@PAHO_HANDSHAKE_SOCKET
def test_the_broker_host_name_is_checked_unless_insecure(tmp_path: Path, brokers: Brokers) -> None:
    """A broker certificate (trusted CA) for another host name is refused; ``insecure: true`` (testing
    only) skips the name check, not the chain: the same client then connects."""
    ca = Authority(tmp_path / "pki", "edged test CA")
    broker = tls_broker(brokers, ca, ca.issue("broker", [x509.DNSName("broker.example.invalid")]))
    strict = MqttClient(settings(broker.port, ca.client_tls("edged-pi-01")), TOPICS, VERSIONS)
    strict.start()
    try:
        snapshot = failure_of(strict)
        assert snapshot.last_failure is not None and "mismatch" in snapshot.last_failure
        assert "127.0.0.1" in snapshot.last_failure and not strict.connected.is_set()
    finally:
        strict.stop()
    lenient = MqttClient(settings(broker.port, ca.client_tls("edged-pi-01", insecure=True)), TOPICS, VERSIONS)
    lenient.start()
    try:
        assert lenient.connected.wait(READY_TIMEOUT_S), lenient.state.snapshot()
    finally:
        assert lenient.stop()


@PAHO_HANDSHAKE_SOCKET
def test_request_client_over_tls(
    site: Site,
    tmp_path: Path,
    pipeline: FacePipeline,
    astronaut: ImageRGB,
    encode_image: Any,
    run_edged: Any,
) -> None:
    """The request API end to end over TLS: edged's device connection serves, a ``RequestClient``
    with its own certificate (user ``recognizer`` in the shipped ACL) sends ``detect`` and gets the
    reply on its reply topic; with a CA that does not trust the broker it gets a ConnectionError."""
    clock = SystemClock()
    store = Store.open(tmp_path / "state", create_key_file(tmp_path / "kek"), clock)
    service = FaceService(pipeline, store, DirectorySettings(), pipeline.embedder.model.path.name)
    device = MqttClient(settings(site.broker.port, site.ca.client_tls("edged-pi-01")), TOPICS, VERSIONS)
    auth = Authenticator(ApiSettings(), TOPICS.device_id, clock, None)
    server = ApiServer(service, ApiSettings(), TOPICS, device, auth)
    server.start()
    server.listen(device)
    device.start()
    recognizer_tls = site.ca.client_tls("recognizer")
    try:
        assert device.connected.wait(READY_TIMEOUT_S)
        request_settings = settings(
            site.broker.port, recognizer_tls, host="localhost", client_id="reception-1", username="recognizer"
        )
        with RequestClient(request_settings, TOPICS.device_id) as client:  # "localhost": the DNS SAN
            image = base64.b64encode(encode_image(astronaut, ".jpg")).decode()
            reply = client.request("detect", {"image": image}, timeout=30)
        assert reply["ok"] and len(reply["result"]["faces"]) == 1
        assert server.served == 1 and server.failed == 0
        # the same from a shell: edged request over mqtts:// with a client certificate
        photo = tmp_path / "in" / "astronaut.jpg"
        photo.parent.mkdir()
        photo.write_bytes(encode_image(astronaut, ".jpg"))
        args = ["request", "detect", "--image", photo, "--mqtt", f"mqtts://localhost:{site.broker.port}"]
        args += ["--device-id", TOPICS.device_id, "--ca-file", recognizer_tls.ca_file, "--timeout", "30"]
        args += ["--username", "recognizer"]  # = the certificate's name: the reply topic's ACL level
        done = run_edged(
            [*args, "--cert-file", recognizer_tls.cert_file, "--cert-key", recognizer_tls.key_file]
        )
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["result"]["faces"]) == 1
        no_key = run_edged([*args, "--cert-file", recognizer_tls.cert_file])
        assert no_key.returncode == 2 and "--cert-file and --cert-key go together" in no_key.stderr
        stranger = Authority(tmp_path / "other", "another CA")
        untrusting = settings(
            site.broker.port, recognizer_tls.model_copy(update={"ca_file": stranger.ca_file})
        )
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            RequestClient(untrusting, TOPICS.device_id).connect(timeout=READY_TIMEOUT_S)
    finally:
        server.stop()
        device.stop()
        auth.close()
        store.close()
