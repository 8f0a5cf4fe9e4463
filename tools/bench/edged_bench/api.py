"""``edged bench api``: the face operations over MQTT, requests per second and round trip.

The server side is the daemon's: a real Mosquitto on a free loopback port, edged's MQTT client
(MQTT v5) and request server (``edged.api.server.ApiServer`` with the configured ``api.workers``) on
the real ``FaceService`` — the real pipeline and models, a temporary encrypted directory (key in
memory only) with the astronaut enrolled in a trained group, the nonce file of signed requests on
disk beside it. Two face IDs come from ``detect`` requests (the astronaut portrait and a copy
shifted by (40, 25) px).

The callers are ``edged.api.client.RequestClient`` connections, one per client thread, in MQTT v5
(response topic + correlation data) and MQTT 3.1.1 (``res/<op>`` + transaction), with one client
and with ``clients`` concurrent clients, each sending its next request as soon as its reply
arrived. They run in a separate Python process (on a door the callers are other machines; client
threads inside the server's process would compete for its GIL). The request kinds:

- ``verify`` face ↔ face (two face IDs);
- ``verify`` face ↔ person (a face ID against the enrolled person: the door-style 1:1);
- ``get_person_group`` signed by a manager key (a fresh timestamp and nonce per request: Ed25519
  sign and verify, and the nonce committed to SQLite with ``synchronous=FULL``);
- ``detect`` on a 640×480 JPEG in base64 (the image path: base64, decode, detect + mesh + quality +
  embed, a transient face ID stored).

The reference, measured in the same run because the machine is shared and noisy (only ratios carry
over): the same work in-process on one thread, no MQTT — ``FaceService.verify_faces`` /
``verify_person``; ``sign_request`` + ``Authenticator.check`` + ``FaceService.get_group`` for the
signed request; ``decode_image`` + ``FaceService.detect`` for detect. MQTT throughput is reported as
a ratio of it, and the MQTT overhead per request as the one-client mean round trip minus the mean
in-process call. The time each request spends in ``ApiServer.handle`` (parse, authenticate,
validate, run, encode the reply and hand it to paho) is timed on the server too: the rest of a round
trip is transport (client, paho, broker, the request queue).

When the RequestClient's sockets do not have TCP_NODELAY (as shipped when this benchmark was
written), Nagle's algorithm holds each request behind the client's unacknowledged PUBACK of the
previous reply until the broker's delayed ACK (≈ 40 ms on Linux), so every kind is also measured
over MQTT v5 with TCP_NODELAY set on the callers' sockets by hand, in the same run, to show the cost.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.api.auth import Authenticator, public_key_b64, sign_request
from edged.api.client import RequestClient
from edged.api.server import ApiServer
from edged.api.settings import ClientSettings
from edged.clock import SystemClock
from edged.config import Config
from edged.demo import DEMO_GROUP, astronaut, enrol_demo, shifted
from edged.directory.crypto import KEY_BYTES, Kek
from edged.directory.store import Store
from edged.errors import BadArgument, ConfigError
from edged.mqtt.client import MqttClient
from edged.mqtt.settings import MqttSettings
from edged.mqtt.topics import Topics
from edged.pipeline.image import decode_image
from edged.pipeline.pipeline import FacePipeline
from edged.service.faces import FaceService
from edged.service.policy import Caller
from edged.types import ImageRGB
from edged_bench.broker import Broker, find_mosquitto
from edged_bench.record import markdown_table, record
from edged_bench.settings import ApiOptions

__all__ = [
    "KINDS",
    "PROTOCOLS",
    "ApiBenchResult",
    "Cell",
    "Load",
    "Reference",
    "bench_api",
    "drive",
    "run_api_bench",
    "table",
]

DEVICE = "bench-api"
MANAGER = "bench-manager"
BENCH = Caller("bench", "recognizer")
"""Who asks in-process (its face IDs count against its own quota, ``edged.service.quota``)."""
PROTOCOLS = ("5", "3.1.1")
KINDS = ("verify_faces", "verify_person", "signed_get_group", "detect")
LABELS = {
    "verify_faces": "verify face ↔ face",
    "verify_person": "verify face ↔ person",
    "signed_get_group": "get_person_group, signed (manager)",
    "detect": "detect, 640×480 JPEG (base64)",
}
REFERENCE_CALLS = {
    "verify_faces": "FaceService.verify_faces",
    "verify_person": "FaceService.verify_person",
    "signed_get_group": "sign_request + Authenticator.check + FaceService.get_group",
    "detect": "decode_image + FaceService.detect",
}
DEFAULT_SECONDS = 2.5
DEFAULT_CLIENTS = 4
JPEG_QUALITY = 90
WARMUP_REQUESTS = 3
"""Per client thread before the clock starts (MQTT 3.1.1: the first request subscribes to res/<op>)."""
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
SIGNATURE_SAMPLES = 200
"""In-process sign / check timings: the signature's and the nonce's cost without MQTT."""


def _summary(values_ms: Sequence[float]) -> dict[str, float] | None:
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    return {
        "n": len(values_ms),
        "mean_ms": round(float(values.mean()), 3),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
    }


# -- results -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Reference:
    """One request kind's work in-process on one thread, no MQTT."""

    kind: str
    calls: int = 0
    seconds: float = 0.0
    times_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "call": REFERENCE_CALLS[self.kind],
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "calls_per_s": round(self.rate, 1),
            "latency": _summary(self.times_ms),
        }


@dataclass(slots=True)
class Cell:
    """One request kind over one protocol from ``clients`` concurrent clients."""

    kind: str
    protocol: str
    clients: int
    nodelay_by_hand: bool = False
    """TCP_NODELAY was set on the callers' sockets by the benchmark (the client did not set it)."""
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    """Time in ``ApiServer.handle`` per request (warm-up requests included)."""
    not_ok: int = 0
    errors: list[str] = field(default_factory=list)
    """The first few error replies or exceptions, ``code: message``."""
    client_nodelay: bool | None = None
    """Whether the RequestClients' sockets had TCP_NODELAY before the benchmark touched them."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> dict[str, float] | None:
        return _summary(self.latencies_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "protocol": self.protocol,
            "clients": self.clients,
            "nodelay_by_hand": self.nodelay_by_hand,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.rate, 1),
            "latency": self.latency(),
            "server": _summary(self.server_ms),
            "not_ok": self.not_ok,
            "errors": self.errors,
        }


@dataclass(slots=True)
class ApiBenchResult:
    references: dict[str, Reference]
    cells: list[Cell]
    signature_ms: dict[str, dict[str, float] | None]
    """In-process: ``sign`` (the client's part) and ``check`` (Ed25519 verify + nonce commit)."""
    setup: dict[str, Any]

    def cell(self, kind: str, protocol: str, clients: int, nodelay_by_hand: bool = False) -> Cell | None:
        key = (kind, protocol, clients, nodelay_by_hand)
        return next(
            (c for c in self.cells if (c.kind, c.protocol, c.clients, c.nodelay_by_hand) == key), None
        )

    def ratio(self, cell: Cell) -> float | None:
        """MQTT requests/s ÷ in-process calls/s."""
        reference = self.references.get(cell.kind)
        if reference is None or reference.rate <= 0:
            return None
        return cell.rate / reference.rate

    def overhead_ms(self, kind: str, protocol: str, nodelay_by_hand: bool = False) -> float | None:
        """The one-client mean round trip minus the mean in-process call."""
        cell = self.cell(kind, protocol, 1, nodelay_by_hand)
        reference = self.references.get(kind)
        if cell is None or reference is None or not cell.latencies_ms or not reference.times_ms:
            return None
        return float(np.mean(cell.latencies_ms) - np.mean(reference.times_ms))

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.not_ok]

    def as_json(self) -> dict[str, Any]:
        cells = []
        for c in self.cells:
            out = c.as_json()
            ratio = self.ratio(c)
            out["ratio_to_in_process"] = None if ratio is None else round(ratio, 5)
            if c.clients == 1:
                overhead = self.overhead_ms(c.kind, c.protocol, c.nodelay_by_hand)
                out["overhead_ms"] = None if overhead is None else round(overhead, 3)
            cells.append(out)
        return {
            "setup": self.setup,
            "references": {kind: ref.as_json() for kind, ref in self.references.items()},
            "signature_ms": self.signature_ms,
            "cells": cells,
        }


# -- the callers (in a child process) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """What one measurement sends; plain data, so it crosses to the client process as JSON."""

    port: int
    protocol: str
    clients: int
    op: str
    body: dict[str, Any]
    signer_key: str | None
    """The manager's raw Ed25519 private key (hex) when the requests are signed."""
    seconds: float | None
    requests: int | None
    nodelay: bool = False
    """Set TCP_NODELAY on every client's socket by hand."""
    warmup: int = WARMUP_REQUESTS


@dataclass(slots=True)
class _Caller:
    client: RequestClient
    start: float = 0.0
    end: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    alive: bool = True


def _nodelay(client: RequestClient, set_it: bool) -> bool:
    """Whether the client's socket has TCP_NODELAY (after setting it, when ``set_it``)."""
    sock = client.connection.socket()  # the benchmark looks at the socket its client made
    if not isinstance(sock, socket.socket):
        return False
    had = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    if set_it and not had:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return had


def drive(load: Load) -> dict[str, Any]:
    """Connect ``load.clients`` RequestClients, send ``load.warmup`` requests from each, then from
    every client in its own thread until ``load.seconds`` passed, or ``load.requests`` were sent by
    all of them together. Returns the round trips (ms), the failures, the wall time from the common
    start to the last reply, and whether the clients' sockets had TCP_NODELAY of their own."""
    sign_with = None
    if load.signer_key is not None:
        sign_with = (MANAGER, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(load.signer_key)))
    settings = MqttSettings(port=load.port, protocol=load.protocol)
    lock = threading.Lock()
    left = [load.requests]
    go = threading.Barrier(load.clients)

    def take() -> bool:
        with lock:
            if left[0] is None:
                return True
            if left[0] <= 0:
                return False
            left[0] -= 1
            return True

    def one(caller: _Caller, timed: bool) -> None:
        t0 = time.perf_counter()
        try:
            reply = caller.client.request(load.op, load.body, REQUEST_TIMEOUT_S, sign_with)
        except Exception as exc:  # a timeout, a lost connection: recorded, and this caller stops
            caller.errors.append(f"{type(exc).__name__}: {exc}")
            caller.alive = False
            return
        if timed:
            caller.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            caller.errors.append(f"{error.get('code')}: {error.get('message')}")

    def run(caller: _Caller) -> None:
        for _ in range(load.warmup):
            if caller.alive:
                one(caller, timed=False)
        go.wait()
        caller.start = time.perf_counter()
        deadline = caller.start + (load.seconds if load.seconds is not None else float("inf"))
        while caller.alive and time.perf_counter() < deadline and take():
            one(caller, timed=True)
        caller.end = time.perf_counter()

    with ExitStack() as stack:
        callers: list[_Caller] = []
        shipped_nodelay = True
        for _ in range(load.clients):
            client = RequestClient(settings, DEVICE).connect(CONNECT_TIMEOUT_S)
            stack.callback(client.close)
            shipped_nodelay = _nodelay(client, load.nodelay) and shipped_nodelay
            callers.append(_Caller(client))
        threads = [
            threading.Thread(target=run, args=(caller,), name=f"bench-caller-{i}")
            for i, caller in enumerate(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    errors = [e for caller in callers for e in caller.errors]
    return {
        "seconds": max(c.end for c in callers) - min(c.start for c in callers),
        "latencies_ms": [ms for caller in callers for ms in caller.latencies_ms],
        "not_ok": len(errors),
        "errors": errors[:5],
        "client_nodelay": shipped_nodelay,
    }


def _load_main() -> None:
    """The client process: one ``Load`` (JSON) per line on stdin, one result (JSON) per line on
    stdout, until stdin closes."""
    for line in sys.stdin:
        print(json.dumps(drive(Load(**json.loads(line)))), flush=True)


class LoadProcess:
    """A child Python process that runs ``drive`` for each ``Load`` it is given (a context manager).
    Started with ``python -c``, not multiprocessing, so no caller needs a ``__main__`` guard."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from edged_bench.api import _load_main; _load_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, load: Load) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({f.name: getattr(load, f.name) for f in fields(load)}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise ConfigError(f"the benchmark's client process exited with {self.process.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=CONNECT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- the server side -----------------------------------------------------------------------------------


class TimedServer(ApiServer):
    """``ApiServer`` that records how long each ``handle`` takes (ms) in ``handled_ms``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handled_ms: list[float] = []

    def handle(self, route: Any, payload: bytes) -> None:
        t0 = time.perf_counter()
        try:
            super().handle(route, payload)
        finally:
            self.handled_ms.append((time.perf_counter() - t0) * 1000.0)


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on (/proc/mounts), or "unknown"."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best = ("", "unknown")
    for mount in mounts:
        if len(mount) == 2:
            point, kind = mount
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best[0]):
                best = (point, kind)
    return best[1]


def detect_frame() -> bytes:
    """A 640×480 JPEG of the astronaut's head and shoulders on a grey wall (one face ≈ 140 px): the
    daemon benchmark's one-face frame, as a door camera would send it."""
    from edged_bench.daemon import scene_frames

    return _jpeg(scene_frames(1, count=1)[0], JPEG_QUALITY)


def _jpeg(image: ImageRGB, quality: int) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ConfigError("OpenCV could not encode a benchmark image as JPEG")
    return bytes(data.tobytes())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(slots=True)
class Bench:
    """What every measurement shares."""

    service: FaceService
    server: TimedServer
    auth: Authenticator
    broker: Broker
    manager: Ed25519PrivateKey
    person_id: str
    face_ids: tuple[str, str]
    jpeg: bytes
    run_load: Callable[[Load], dict[str, Any]]
    state_fs: str

    def requests(self) -> dict[str, tuple[str, dict[str, Any], bool]]:
        """kind → (operation, body, signed)."""
        a, b = self.face_ids
        return {
            "verify_faces": ("verify", {"faceId1": a, "faceId2": b}, False),
            "verify_person": (
                "verify",
                {"faceId": b, "personId": self.person_id, "personGroupId": DEMO_GROUP},
                False,
            ),
            "signed_get_group": ("get_person_group", {"personGroupId": DEMO_GROUP}, True),
            "detect": ("detect", {"image": _b64(self.jpeg)}, False),
        }

    def calls(self) -> dict[str, Callable[[], object]]:
        """kind → the same work in-process."""
        a, b = self.face_ids
        service, clock = self.service, SystemClock()
        body = {"personGroupId": DEMO_GROUP}

        def signed_get_group() -> object:
            signed = sign_request(body, "get_person_group", DEVICE, MANAGER, self.manager, clock.now())
            self.auth.check("get_person_group", signed)
            return service.get_group(DEMO_GROUP)

        return {
            "verify_faces": lambda: service.recognition.verify_faces(a, b),
            "verify_person": lambda: service.recognition.verify_person(b, self.person_id, DEMO_GROUP),
            "signed_get_group": signed_get_group,
            "detect": lambda: service.recognition.detect(BENCH, decode_image(self.jpeg, name="image")),
        }

    def reference(self, kind: str, seconds: float | None, requests: int | None) -> Reference:
        call = self.calls()[kind]
        for _ in range(WARMUP_REQUESTS):
            call()
        ref = Reference(kind)
        start = time.perf_counter()
        deadline = start + (seconds if seconds is not None else float("inf"))
        while time.perf_counter() < deadline and (requests is None or ref.calls < requests):
            t0 = time.perf_counter()
            call()
            ref.times_ms.append((time.perf_counter() - t0) * 1000.0)
            ref.calls += 1
        ref.seconds = time.perf_counter() - start
        return ref

    def signature(self, samples: int) -> dict[str, dict[str, float] | None]:
        """Signing a fresh request, and checking it (Ed25519 verify + the nonce's commit)."""
        clock = SystemClock()
        sign_ms: list[float] = []
        check_ms: list[float] = []
        body = {"personGroupId": DEMO_GROUP}
        for _ in range(samples):
            t0 = time.perf_counter()
            signed = sign_request(body, "get_person_group", DEVICE, MANAGER, self.manager, clock.now())
            t1 = time.perf_counter()
            self.auth.check("get_person_group", signed)
            sign_ms.append((t1 - t0) * 1000.0)
            check_ms.append((time.perf_counter() - t1) * 1000.0)
        return {"sign": _summary(sign_ms), "check": _summary(check_ms)}

    def measure(
        self,
        kind: str,
        protocol: str,
        clients: int,
        seconds: float | None,
        requests: int | None,
        nodelay_by_hand: bool = False,
    ) -> Cell:
        op, body, signed = self.requests()[kind]
        key = None
        if signed:
            raw = self.manager.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            key = raw.hex()
        self.server.handled_ms.clear()
        load = Load(self.broker.port, protocol, clients, op, body, key, seconds, requests, nodelay_by_hand)
        out = self.run_load(load)
        cell = Cell(kind, protocol, clients, nodelay_by_hand)
        cell.server_ms = list(self.server.handled_ms)
        cell.seconds = float(out["seconds"])
        cell.latencies_ms = [float(ms) for ms in out["latencies_ms"]]
        cell.requests = len(cell.latencies_ms)
        cell.not_ok = int(out["not_ok"])
        cell.errors = [str(e) for e in out["errors"]]
        cell.client_nodelay = bool(out["client_nodelay"])
        return cell


def _face_id(client: RequestClient, image: ImageRGB, what: str) -> str:
    reply = client.request("detect", {"image": _b64(_jpeg(image, 95))}, timeout=REQUEST_TIMEOUT_S)
    faces = reply.get("result", {}).get("faces") if reply.get("ok") else None
    if not faces or not faces[0].get("faceId"):
        raise ConfigError(f"the benchmark's detect request on {what} found no face: {reply}")
    return str(faces[0]["faceId"])


@contextmanager
def api_bench(
    pipeline: FacePipeline, base: Config, clients: int, client_process: bool = True
) -> Iterator[Bench]:
    """The broker, the enrolled temporary directory, the request server on it, two face IDs, and
    the client process; all gone afterwards. ``client_process=False`` runs the callers as threads
    of this process instead."""
    executable = find_mosquitto()
    if executable is None:
        raise ConfigError("the API benchmark needs mosquitto (apt install mosquitto)")
    kek = Kek(os.urandom(KEY_BYTES), "bench (in memory)")
    manager = Ed25519PrivateKey.generate()
    clock = SystemClock()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edged-bench-api-")))
        state = root / "state"
        person_id = enrol_demo(pipeline, state, kek, base)
        store = Store.open(state, kek, clock)
        stack.callback(store.close)
        service = FaceService(pipeline, store, base.directory, pipeline.embedder.model.path.name)
        settings = base.api.model_copy(
            update={
                "enabled": True,
                "unsigned_role": "recognizer",
                "queue_depth": max(base.api.queue_depth, clients),  # never Busy: every client waits
                "clients": {MANAGER: ClientSettings(role="manager", public_key=public_key_b64(manager))},
            }
        )
        auth = Authenticator(settings, DEVICE, clock, state / "nonces.sqlite3")
        stack.callback(auth.close)
        broker_dir = root / "broker"
        broker_dir.mkdir()
        broker = stack.enter_context(Broker(executable, broker_dir))
        topics = Topics(DEVICE)
        mqtt = MqttClient(MqttSettings(port=broker.port, protocol="5"), topics, {"edged": "bench"}, clock)
        server = TimedServer(service, settings, topics, mqtt, auth, limits=base.images)
        server.start()
        stack.callback(server.stop)
        server.listen(mqtt)
        mqtt.start()
        stack.callback(mqtt.stop)
        if not mqtt.connected.wait(CONNECT_TIMEOUT_S):
            raise ConfigError(f"the request server did not connect to {broker.url}")
        portrait = astronaut()
        with RequestClient(MqttSettings(port=broker.port), DEVICE).connect(CONNECT_TIMEOUT_S) as setup:
            face_ids = (
                _face_id(setup, portrait, "the astronaut"),
                _face_id(setup, shifted(portrait, 40, 25), "the shifted astronaut"),
            )
        run_load: Callable[[Load], dict[str, Any]] = drive
        if client_process:
            run_load = stack.enter_context(LoadProcess())
        yield Bench(
            service,
            server,
            auth,
            broker,
            manager,
            person_id,
            face_ids,
            detect_frame(),
            run_load,
            filesystem_of(state),
        )


def bench_api(
    pipeline: FacePipeline,
    base: Config,
    seconds: float | None = DEFAULT_SECONDS,
    requests: int | None = None,
    clients: int = DEFAULT_CLIENTS,
    kinds: Sequence[str] = KINDS,
    protocols: Sequence[str] = PROTOCOLS,
    client_process: bool = True,
    progress: bool = True,
) -> ApiBenchResult:
    """Each kind in-process, then over MQTT for each protocol with 1 and ``clients`` clients, each
    measurement for ``seconds`` or ``requests`` (give exactly one); every kind again with
    TCP_NODELAY set by hand (MQTT v5) when the client does not set it."""
    if (seconds is None) == (requests is None):
        raise BadArgument("give exactly one of seconds and requests")
    unknown = sorted(set(kinds) - set(KINDS)) + sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise BadArgument(f"unknown request kind or protocol: {', '.join(unknown)}")

    def say(text: str) -> None:
        if progress:
            print(f"api bench: {text} …", file=sys.stderr)

    counts = sorted({1, clients})
    with api_bench(pipeline, base, clients, client_process) as bench:
        for kind in ("verify_faces", "verify_person"):  # the astronaut against herself: both match
            verification = bench.calls()[kind]()
            if not getattr(verification, "is_identical", False):
                raise ConfigError(f"benchmark sanity: {kind} of the astronaut did not match ({verification})")
        references = {}
        for kind in kinds:
            say(f"{LABELS[kind]}, in-process")
            references[kind] = bench.reference(kind, seconds, requests)
        signature = bench.signature(SIGNATURE_SAMPLES if requests is None else requests)
        cells: list[Cell] = []
        for protocol in protocols:
            for n in counts:
                for kind in kinds:
                    say(f"{LABELS[kind]}, MQTT {protocol}, {n} client(s)")
                    cells.append(bench.measure(kind, protocol, n, seconds, requests))
        shipped_nodelay = all(c.client_nodelay for c in cells)
        if not shipped_nodelay:
            for n in counts:
                for kind in kinds:
                    say(f"{LABELS[kind]}, MQTT 5, {n} client(s), TCP_NODELAY set by hand")
                    cells.append(bench.measure(kind, "5", n, seconds, requests, nodelay_by_hand=True))
        setup = {
            "workers": bench.server.settings.workers,
            "queue_depth": bench.server.settings.queue_depth,
            "threads": base.pipeline.threads,
            "clients": clients,
            "client_process": client_process,
            "client_nodelay": shipped_nodelay,
            "jpeg_bytes": len(bench.jpeg),
            "state_filesystem": bench.state_fs,
            "seconds": seconds,
            "requests": requests,
            "served": bench.server.served,
            "failed": bench.server.failed,
            "busy": bench.server.busy,
        }
    return ApiBenchResult(references, cells, signature, setup)


# -- the command ---------------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f" ({value:.3f}×)" if value < 0.1 else f" ({value:.2f}×)"


def _ms(stats: dict[str, float] | None) -> str:
    return "–" if stats is None else f"{stats['p50_ms']:.2f} / {stats['p95_ms']:.2f}"


def table(result: ApiBenchResult) -> str:
    """One row per request kind and protocol (and TCP_NODELAY-by-hand rows when measured)."""
    counts = sorted({c.clients for c in result.cells})
    header = ["request", "in-process calls/s (ms p50)", "MQTT"]
    for n in counts:
        who = "1 client" if n == 1 else f"{n} clients"
        header += [f"{who}: req/s (× in-process)", f"{who}: round trip ms (p50 / p95)"]
        if n == 1:
            header.append("1 client: in ApiServer.handle ms (p50 / p95)")
    header.append("MQTT overhead ms/request (1 client)")
    rows = []
    for by_hand in (False, True):
        for kind in KINDS:
            reference = result.references.get(kind)
            for protocol in PROTOCOLS:
                if not any(result.cell(kind, protocol, n, by_hand) for n in counts):
                    continue
                ref = None if reference is None else _summary(reference.times_ms)
                row = [
                    LABELS[kind],
                    "–"
                    if reference is None or ref is None
                    else f"{reference.rate:.0f} ({ref['p50_ms']:.3f})",
                    protocol + (", TCP_NODELAY set by hand" if by_hand else ""),
                ]
                for n in counts:
                    cell = result.cell(kind, protocol, n, by_hand)
                    if cell is None:
                        row += ["–", "–"] + (["–"] if n == 1 else [])
                        continue
                    row += [f"{cell.rate:.0f}{_ratio(result.ratio(cell))}", _ms(cell.latency())]
                    if n == 1:
                        row.append(_ms(_summary(cell.server_ms)))
                overhead = result.overhead_ms(kind, protocol, by_hand)
                row.append("–" if overhead is None else f"{overhead:.2f}")
                rows.append(row)
    return markdown_table(header, rows)


def note(result: ApiBenchResult) -> str:
    setup = result.setup
    n = setup["clients"]
    amount = f"{setup['seconds']:g} s" if setup["seconds"] is not None else f"{setup['requests']} requests"
    sign, check = result.signature_ms["sign"], result.signature_ms["check"]
    text = (
        f"The request server (`edged.api.server.ApiServer`, {setup['workers']} worker(s), queue depth "
        f"{setup['queue_depth']}) and edged's MQTT client (MQTT v5) on the real `FaceService`: real "
        f"models ({setup['threads']} inference thread(s) per model), a temporary encrypted directory "
        f"({setup['state_filesystem']}) with the astronaut enrolled in a trained group, the nonce file "
        "beside it; a real Mosquitto on loopback. Callers: `edged.api.client.RequestClient` "
        "connections, one per client thread, in a separate process (on a door the callers are other "
        "machines; in the server's process they would compete for its GIL), each sending its next "
        f"request as soon as its reply arrived; {amount} per cell after {WARMUP_REQUESTS} warm-up "
        "requests per client. *face ↔ face*: two face IDs from `detect` (the astronaut portrait and a "
        "copy shifted by (40, 25) px); *face ↔ person*: a face ID against the enrolled person (the "
        "door-style 1:1); *signed*: a fresh timestamp and nonce per request; *detect*: a 640×480 JPEG "
        f"({setup['jpeg_bytes'] / 1024:.0f} KiB, the astronaut's head and shoulders, the face ≈ 140 "
        "px) in base64, a face ID stored per request. *in-process*: the same work on one thread in "
        "the same run, no MQTT (verify: `FaceService.verify_faces` / `verify_person`; signed: "
        "`sign_request` + `Authenticator.check` + `FaceService.get_group`; detect: `decode_image` + "
        "`FaceService.detect`); × in-process = MQTT requests/s ÷ in-process calls/s. *in "
        "ApiServer.handle*: parse, authenticate, validate, run, encode the reply and hand it to "
        "paho, timed on the server; the rest of the round trip is transport (client, paho on both "
        "sides, the broker, the request queue). *MQTT overhead*: the one-client mean round trip − "
        f"the mean in-process call. MQTT 3.1.1 replies go to `res/<op>`, which all {n} clients of the "
        f"{n}-client runs receive (each reply is delivered {n} times)."
    )
    if sign is not None and check is not None:
        text += (
            f" In-process, signing a request takes {sign['p50_ms']:.3f} ms (p50) and checking it "
            f"(Ed25519 verify + the nonce committed with synchronous=FULL) {check['p50_ms']:.3f} ms "
            f"(p50; p95 {check['p95_ms']:.3f})."
        )
    plain = result.cell("verify_faces", "5", 1)
    if not setup["client_nodelay"] and plain is not None:
        text += (
            " `RequestClient` does not set TCP_NODELAY on its socket: Nagle's algorithm holds each "
            "request behind the client's PUBACK of the previous reply until the broker's delayed ACK "
            f"(≈ 40 ms), which bounds one client to ≈ {plain.rate:.0f} requests/s whatever the "
            "request; the *TCP_NODELAY set by hand* rows are the same requests, MQTT v5, with the "
            "option set on the callers' sockets by the benchmark, in the same run."
        )
    return text


def run_api_bench(settings: ApiOptions, pipeline: FacePipeline, base: Config) -> int:
    seconds: float | None = settings.seconds
    requests: int | None = settings.requests
    if requests is not None and requests < 1:
        raise BadArgument("--requests must be ≥ 1")
    if seconds is not None and seconds <= 0:
        raise BadArgument("--seconds must be > 0")
    if requests is None and seconds is None:
        seconds = DEFAULT_SECONDS
    if settings.clients < 1:
        raise BadArgument("--clients must be ≥ 1")
    started = time.monotonic()
    result = bench_api(pipeline, base, seconds, requests, settings.clients)
    text = table(result)
    print(text, file=sys.stderr if settings.json else sys.stdout)
    print(f"api bench: {time.monotonic() - started:.0f} s", file=sys.stderr)
    for c in result.failed:
        print(
            f"edged: warning: {c.not_ok} failed request(s) ({LABELS[c.kind]}, MQTT {c.protocol}, "
            f"{c.clients} client(s)): {'; '.join(c.errors)}",
            file=sys.stderr,
        )
    if settings.record:
        amount = f"--seconds {seconds:g}" if seconds is not None else f"--requests {requests}"
        command = f"edged bench api {amount} --clients {settings.clients}"
        record(settings.record, "api", text + "\n\n" + note(result), command)
    if settings.json:
        print(json.dumps(result.as_json()))
    return 1 if result.failed else 0
