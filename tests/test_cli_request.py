"""The request client and the ``edged client keygen`` / ``edged request`` commands against a real
Mosquitto. The terminal side is ``Responder``: a test peer in plain paho that answers requests the way
the protocol says (v5 Response Topic + Correlation Data, else ``res/<op>`` with the echoed
transaction) and checks signatures with the real ``Authenticator``. Every wait is bounded."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mqtt_broker import READY_TIMEOUT_S, Broker, free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.api.auth import Authenticator, public_key_b64
from edged.api.client import RequestClient
from edged.api.settings import ApiSettings
from edged.cli import main
from edged.clock import SystemClock
from edged.errors import BadArgument, EdgedError, PersonGroupNotFound
from edged.mqtt.settings import MqttSettings
from edged.mqtt.topics import Topics

DEVICE = "front-door"
OPS_KEY = Ed25519PrivateKey.generate()
RunEdged = Callable[..., "subprocess.CompletedProcess[str]"]


def api_settings(public_key: str) -> ApiSettings:
    return ApiSettings.model_validate({"clients": {"ops": {"role": "manager", "public_key": public_key}}})


class Responder:
    """The terminal's side of the protocol, in plain paho (MQTT v5, so it sees Response Topics).
    Each request is answered on its own thread after ``delay`` seconds (a body field), preceded by a
    decoy reply that must not be taken for it. ``op == "fail"`` is answered with an error."""

    def __init__(self, port: int, device: str = DEVICE, auth: Authenticator | None = None) -> None:
        self.topics = Topics(device)
        self.auth = auth
        self.seen: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Semaphore(0)  # released on every SUBACK (a reconnect subscribes again)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"responder-{device}", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.release()
        self.client.on_connect = lambda c, *args: c.subscribe(self.topics.request_wildcard(), qos=1)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.acquire(timeout=READY_TIMEOUT_S), "responder did not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        thread = threading.Thread(
            target=self._answer, args=(message.topic, bytes(message.payload), response_topic, correlation)
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _answer(
        self, topic: str, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> None:
        op = self.topics.operation_of(topic)
        assert op is not None
        request = json.loads(payload)
        with self._lock:
            self.seen.append(
                {"op": op, "request": request, "response_topic": response_topic, "correlation": correlation}
            )
        transaction = request.get("transaction")
        reply: dict[str, Any] = {"schema": 1, "op": op, "transaction": transaction}
        try:
            principal = self.auth.check(op, request) if self.auth is not None else None
            if op == "fail":
                raise PersonGroupNotFound("person group 'nope' does not exist")
            echo = {k: v for k, v in request.items() if k != "auth"}
            result = {"echo": echo, "principal": None if principal is None else asdict(principal)}
            reply.update(ok=True, result=result)
        except EdgedError as exc:
            reply.update(ok=False, error={"code": exc.code, "message": exc.message})
        time.sleep(float(request.get("delay", 0)))
        if response_topic is not None:  # MQTT v5: the caller's topic and correlation data
            for data, body in (
                (b"decoy-" + (correlation or b""), {**reply, "decoy": True}),
                (correlation, reply),
            ):
                properties = Properties(PacketTypes.PUBLISH)
                if data is not None:
                    properties.CorrelationData = data
                self.client.publish(response_topic, json.dumps(body), qos=1, properties=properties)
        else:  # MQTT 3.1.1: res/<op>, matched by the echoed transaction
            decoy = {**reply, "transaction": f"decoy-{transaction}", "decoy": True}
            for body in (decoy, reply):
                self.client.publish(self.topics.response(op), json.dumps(body), qos=1)

    def close(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(READY_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def responder(module_broker: Broker) -> Iterator[Responder]:
    with Authenticator(api_settings(public_key_b64(OPS_KEY)), DEVICE, SystemClock(), None) as auth:
        peer = Responder(module_broker.port, auth=auth)
        yield peer
        peer.close()


def mqtt(port: int, protocol: str) -> MqttSettings:
    return MqttSettings.model_validate(
        {"port": port, "protocol": protocol, "reconnect_min_delay_s": 1, "reconnect_max_delay_s": 2}
    )


PROTOCOLS = pytest.mark.parametrize("protocol", ["5", "3.1.1"])


@PROTOCOLS
def test_round_trip_signed_and_unsigned(module_broker: Broker, responder: Responder, protocol: str) -> None:
    with RequestClient(mqtt(module_broker.port, protocol), DEVICE) as client:
        body = {"personGroupId": "staff", "name": "Zoë's staff"}
        reply = client.request("group_create", body, timeout=10, sign_with=("ops", OPS_KEY))
        assert reply["ok"] is True and reply["op"] == "group_create" and "decoy" not in reply
        assert reply["result"]["principal"] == {"client": "ops", "role": "manager", "signed": True}
        echo = reply["result"]["echo"]
        assert {k: echo[k] for k in body} == body
        seen = responder.seen[-1]
        if protocol == "5":  # under the signer's name; a transaction for refusals on res/<op>
            assert seen["response_topic"] == Topics(DEVICE).reply("ops", client.client_id)
            assert seen["correlation"] is not None and len(seen["correlation"]) == 16
            assert len(reply["transaction"]) == 32 and reply["transaction"] == seen["request"]["transaction"]
        else:
            assert seen["response_topic"] is None
            assert len(reply["transaction"]) == 32 and reply["transaction"] == seen["request"]["transaction"]

        unsigned = client.request("identify", {"transaction": "mine-1"}, timeout=10)
        assert unsigned["transaction"] == "mine-1"
        if protocol == "5":  # under the client id, the only identity of an unsigned request
            assert responder.seen[-1]["response_topic"] == Topics(DEVICE).unsigned_reply(client.client_id)
        assert unsigned["result"]["principal"] == {"client": None, "role": "recognizer", "signed": False}

        error = client.request("fail", {}, timeout=10)
        assert error["ok"] is False and error["error"]["code"] == "PersonGroupNotFound"

        with pytest.raises(BadArgument, match="transaction"):
            client.request("identify", {"transaction": ""}, timeout=1)


@PROTOCOLS
def test_concurrent_requests_reach_the_right_caller(
    module_broker: Broker, responder: Responder, protocol: str
) -> None:
    """Two clients, twelve threads each, all on one operation; the replies come back in the reverse
    order (longer delays for the earlier requests), after decoys. Everyone gets exactly their own."""
    count = 12
    results: dict[tuple[int, int], Any] = {}
    lock = threading.Lock()
    with (
        RequestClient(mqtt(module_broker.port, protocol), DEVICE) as a,
        RequestClient(mqtt(module_broker.port, protocol), DEVICE) as b,
    ):
        start = threading.Barrier(2 * count)

        def call(which: int, client: RequestClient, n: int) -> None:
            start.wait()
            signer = ("ops", OPS_KEY) if n % 2 else None
            reply = client.request("detect", {"n": n, "who": which, "delay": (count - n) * 0.02}, 15, signer)
            with lock:
                results[(which, n)] = reply

        threads = [
            threading.Thread(target=call, args=(which, client, n))
            for which, client in enumerate((a, b))
            for n in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(results) == 2 * count
    for (which, n), reply in results.items():
        assert reply["ok"] is True and "decoy" not in reply
        assert (reply["result"]["echo"]["who"], reply["result"]["echo"]["n"]) == (which, n)
        assert reply["result"]["principal"]["signed"] is bool(n % 2)


def test_no_reply_is_a_timeout_naming_the_device(module_broker: Broker, responder: Responder) -> None:
    with RequestClient(mqtt(module_broker.port, "5"), "back-door") as client:  # no responder for back-door
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no reply to detect from device 'back-door' within 0\.5 s"):
            client.request("detect", {}, timeout=0.5)
        assert time.monotonic() - started < 3
        assert client._pending == {}


@PROTOCOLS
def test_requests_work_again_after_a_broker_restart(
    module_broker: Broker, responder: Responder, protocol: str
) -> None:
    with RequestClient(mqtt(module_broker.port, protocol), DEVICE) as client:
        assert client.request("detect", {"n": 1}, timeout=10)["ok"]
        module_broker.stop()
        module_broker.start()
        assert responder.subscribed.acquire(timeout=READY_TIMEOUT_S), "the responder did not come back"
        # queued while reconnecting; the reply topic (v5) / res/detect (3.1.1) is subscribed again
        assert client.request("detect", {"n": 2}, timeout=15)["result"]["echo"]["n"] == 2


def test_an_unreachable_broker_is_a_connection_error() -> None:
    with pytest.raises(ConnectionError, match="cannot reach the MQTT broker"):
        RequestClient(mqtt(free_port(), "5"), DEVICE).connect(timeout=2)


# -- the command line ---------------------------------------------------------------------------


def test_keygen_then_a_signed_request_with_an_image(
    tmp_path: Path, module_broker: Broker, run_edged: RunEdged
) -> None:
    key = tmp_path / "ops.pem"
    made = run_edged(["client", "keygen", "--out", key, "--client", "ops", "--role", "manager"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    snippet = made.stdout[made.stdout.index("api:") :]
    settings = ApiSettings.model_validate(yaml.safe_load(snippet)["api"])
    assert settings.clients["ops"].role == "manager"
    public = settings.clients["ops"].public_key
    assert public is not None and f"public key:  {public}" in made.stdout

    again = run_edged(["client", "keygen", "--out", key], cwd=tmp_path)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        f"edged: BadConfig: key file {key} already exists; it is never overwritten"
    ]

    image = tmp_path / "face.jpg"
    image.write_bytes(b"\xff\xd8 not really a jpeg \x00\x01")
    with Authenticator(api_settings(public), DEVICE, SystemClock(), None) as auth:
        peer = Responder(module_broker.port, auth=auth)
        try:
            args = ["request", "identify", "--body", '{"personGroupId": "staff"}', "--image", image]
            args += ["--sign-key", key, "--client", "ops", "--mqtt", f"mqtt://127.0.0.1:{module_broker.port}"]
            args += ["--device-id", DEVICE, "--protocol", "3.1.1", "--timeout", "10"]
            done = run_edged(args, cwd=tmp_path)
        finally:
            peer.close()
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] is True and reply["result"]["principal"]["client"] == "ops"
    assert base64.b64decode(reply["result"]["echo"]["image"]) == image.read_bytes()
    assert reply["result"]["echo"]["personGroupId"] == "staff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.jpg", "ops.pem"]  # the broker lives elsewhere


def test_images_in_order_and_a_verify_image_for_the_liveness_operations(
    tmp_path: Path, module_broker: Broker, responder: Responder, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = [tmp_path / f"f{i}.jpg" for i in range(3)]
    for i, frame in enumerate(frames):
        frame.write_bytes(b"\xff\xd8 frame %d" % i)
    reference = tmp_path / "ref.jpg"
    reference.write_bytes(b"\xff\xd8 reference")
    body = '{"sessionId": "s", "authToken": "t"}'
    args = ["request", "liveness_session_attempt", "--body", body, "--images", *map(str, frames)]
    args += ["--verify-image", str(reference), "--mqtt", f"mqtt://127.0.0.1:{module_broker.port}"]
    code, out, err = run_main([*args, "--device-id", DEVICE], capsys)
    assert code == 0, err
    echo = json.loads(out)["result"]["echo"]
    assert [base64.b64decode(i) for i in echo["images"]] == [f.read_bytes() for f in frames]
    assert base64.b64decode(echo["verifyImage"]) == reference.read_bytes()
    assert echo["sessionId"] == "s" and "image" not in echo


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_error_replies_and_timeouts_exit_non_zero(
    module_broker: Broker, responder: Responder, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--mqtt", f"mqtt://127.0.0.1:{module_broker.port}", "--device-id", DEVICE]
    code, out, err = run_main(["request", "fail", *target], capsys)
    assert (code, out) == (PersonGroupNotFound.exit_code, "")
    assert err == "edged: PersonGroupNotFound: person group 'nope' does not exist\n"

    code, out, err = run_main(
        ["request", "group_create", "--body", '{"personGroupId": "x"}', *target], capsys
    )
    assert code == 0 and json.loads(out)["result"]["principal"]["signed"] is False

    code, out, err = run_main(
        [
            "request",
            "detect",
            "--mqtt",
            f"mqtt://127.0.0.1:{module_broker.port}",
            "--device-id",
            "nobody",
            "--timeout",
            "0.3",
        ],
        capsys,
    )
    assert (code, out) == (1, "") and err.startswith(
        "edged: Timeout: no reply to detect from device 'nobody'"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--body", "[1, 2]"], "--body must be a JSON object"),
        (["--body", "{nope"], "--body is not JSON"),
        (["--sign-key", "k.pem"], "--sign-key and --client go together"),
        (["--image", "missing.jpg"], "InvalidImage: cannot read missing.jpg"),
        (["--body", '{"image": "x"}', "--image", "x.jpg"], "either in the body or with --image"),
        (["--body", '{"images": []}', "--images", "x.jpg"], "either in the body or with --images"),
    ],
)
def test_bad_request_arguments_are_one_error_line(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["request", "detect", "--mqtt", "mqtt://127.0.0.1:1", *args], capsys)
    assert code != 0 and out == ""
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_mqtt_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["request", "detect", "--mqtt", "http://host:1883"], capsys)
    assert (code, out) == (BadArgument.exit_code, "") and "expected mqtt://HOST[:PORT]" in err
