"""``edged bench api``: the face operations over MQTT, requests per second and round trip.

A real Mosquitto on a free loopback port, edged's MQTT client and request server
(``edged.api.server.ApiServer``, the configured ``api.workers``) on the real ``FaceService``: the
real pipeline and models, a temporary encrypted directory (key in memory only) with the astronaut
enrolled in a trained group, the nonce file of signed requests on disk as the daemon keeps it. Two
face IDs come from ``detect`` requests (the astronaut portrait and a shifted copy).

Callers are ``edged.api.client.RequestClient`` connections, one per client thread, in MQTT v5
(response topic + correlation data) and in MQTT 3.1.1 (``res/<op>`` + transaction), one client and
``--clients`` concurrent clients, each sending its next request as soon as its reply arrived. The
request kinds:

- ``verify`` face ↔ face (two face IDs);
- ``verify`` face ↔ person (a face ID against the enrolled person: the door-style 1:1);
- ``get_person_group`` signed as a manager (Ed25519 signature + a nonce committed to SQLite with
  ``synchronous=FULL`` per request);
- ``detect`` on a 640×480 JPEG in base64 (the image path: base64, decode, detect + mesh + quality +
  embed, a transient face ID stored).

The client threads run in a separate process by default (``client_process``): on the device the
callers are elsewhere, and client threads in the server's process would take the server's GIL.

The reference, in the same run (the machine is shared, so only ratios carry over): the same
``FaceService`` call in-process, one thread, no MQTT (for ``detect`` the JPEG decode included, for
the signed request without the signature). MQTT throughput is reported as a ratio of it, and the
MQTT overhead per request as the one-client mean round trip minus the mean in-process call.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
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
from edged.bench.broker import Broker, find_mosquitto
from edged.bench.record import markdown_table, record
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

__all__ = [
    "KINDS",
    "PROTOCOLS",
    "ApiBenchResult",
    "Cell",
    "Reference",
    "bench_api",
    "run_api_bench",
]

DEVICE = "bench-api"
MANAGER = "bench-manager"
PROTOCOLS = ("5", "3.1.1")
KINDS = ("verify_faces", "verify_person", "signed_get_group", "detect")
LABELS = {
    "verify_faces": "verify face ↔ face",
    "verify_person": "verify face ↔ person",
    "signed_get_group": "get_person_group, signed (manager)",
    "detect": "detect, 640×480 JPEG",
}
REFERENCE_LABELS = {
    "verify_faces": "FaceService.verify_faces",
    "verify_person": "FaceService.verify_person",
    "signed_get_group": "FaceService.get_group (unsigned)",
    "detect": "decode_image + FaceService.detect",
}
FRAME_SIZE = (640, 480)
JPEG_QUALITY = 90
WARMUP_REQUESTS = 3
"""Per client thread before the clock starts (3.1.1: the first request subscribes to res/<op>)."""
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
SIGNATURE_SAMPLES = 200
"""In-process sign + check timings (the signature and nonce cost without MQTT)."""


# -- results -----------------------------------------------------------------------------------------


def _summary(values_ms: Sequence[float]) -> dict[str, float] | None:
    if not values_ms:
        return None
    values = np.asarray(values_ms)
    return {
        "mean_ms": round(float(values.mean()), 3),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
    }


@dataclass(slots=True)
class Reference:
    """One request kind's FaceService call in-process, one thread."""

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
            "call": REFERENCE_LABELS[self.kind],
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "calls_per_s": round(self.rate, 1),
            "latency": _summary(self.times_ms),
        }


@dataclass(slots=True)
class Cell:
    """One kind of request, one protocol, ``clients`` concurrent clients."""

    kind: str
    protocol: str
    clients: int
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    not_ok: int = 0
    errors: list[str] = field(default_factory=list)
    """The first few error replies or exceptions (``code: message``)."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> dict[str, float] | None:
        return _summary(self.latencies_ms)

    def as_json(self, reference: Reference | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "protocol": self.protocol,
            "clients": self.clients,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.rate, 1),
            "latency": self.latency(),
            "not_ok": self.not_ok,
            "errors": self.errors,
        }
        if reference is not None and reference.rate > 0:
            out["ratio_to_in_process"] = round(self.rate / reference.rate, 4)
        return out


@dataclass(slots=True)
class ApiBenchResult:
    references: dict[str, Reference]
    cells: list[Cell]
    signature_ms: dict[str, dict[str, float] | None]
    """In-process: ``sign`` (client side) and ``check`` (Ed25519 verify + nonce commit)."""
    setup: dict[str, Any]

    def cell(self, kind: str, protocol: str, clients: int) -> Cell | None:
        return next(
            (c for c in self.cells if (c.kind, c.protocol, c.clients) == (kind, protocol, clients)), None
        )

    def overhead_ms(self, kind: str, protocol: str) -> float | None:
        """One client's mean round trip minus the mean in-process call."""
        cell = self.cell(kind, protocol, 1)
        reference = self.references.get(kind)
        if cell is None or reference is None or not cell.latencies_ms or not reference.times_ms:
            return None
        return float(np.mean(cell.latencies_ms) - np.mean(reference.times_ms))

    def as_json(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "references": {kind: ref.as_json() for kind, ref in self.references.items()},
            "signature_ms": self.signature_ms,
            "cells": [
                {
                    **c.as_json(self.references.get(c.kind)),
                    **(
                        {"overhead_ms": round(o, 3)}
                        if c.clients == 1 and (o := self.overhead_ms(c.kind, c.protocol)) is not None
                        else {}
                    ),
                }
                for c in self.cells
            ],
        }


# -- the load: client threads (in a child process by default) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """What one measurement sends: picklable, for the client process."""

    port: int
    protocol: str
    clients: int
    op: str
    body: dict[str, Any]
    signer_key: bytes | None
    """The manager's raw Ed25519 private key when the requests are signed."""
    seconds: float | None
    requests: int | None
    warmup: int = WARMUP_REQUESTS


def drive(load: Load) -> dict[str, Any]:
    """Connect ``load.clients`` RequestClients, warm each up, then send from every one in its own
    thread until ``load.seconds`` passed or ``load.requests`` were sent in all. Returns the counts,
    the round trips (ms) and the wall time from the common start to the last reply."""
    sign_with = (
        None if load.signer_key is None else (MANAGER, Ed25519PrivateKey.from_private_bytes(load.signer_key))
    )
    settings = MqttSettings(port=load.port, protocol=load.protocol)  # type: ignore[arg-type]
    lock = threading.Lock()
    tickets = [load.requests if load.requests is not None else -1]
    results: list[tuple[float, float, list[float], int, list[str]]] = []
    go = threading.Barrier(load.clients)
    with ExitStack() as stack:
        clients = []
        for _ in range(load.clients):
            client = RequestClient(settings, DEVICE).connect(CONNECT_TIMEOUT_S)
            stack.callback(client.close)
            clients.append(client)

        def take() -> bool:
            with lock:
                if tickets[0] < 0:
                    return True
                if tickets[0] == 0:
                    return False
                tickets[0] -= 1
                return True

        def one(client: RequestClient, latencies: list[float], errors: list[str]) -> bool:
            t0 = time.perf_counter()
            try:
                reply = client.request(load.op, load.body, timeout=REQUEST_TIMEOUT_S, sign_with=sign_with)
            except Exception as exc:  # a timeout, a lost connection: recorded, this thread stops
                errors.append(f"{type(exc).__name__}: {exc}")
                return False
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if not reply.get("ok"):
                error = reply.get("error") or {}
                errors.append(f"{error.get('code')}: {error.get('message')}")
            return True

        def run(client: RequestClient) -> None:
            latencies: list[float] = []
            errors: list[str] = []
            alive = True
            for _ in range(load.warmup):
                alive = alive and one(client, [], errors)
            go.wait()
            start = time.perf_counter()
            deadline = start + (load.seconds if load.seconds is not None else float("inf"))
            while alive and time.perf_counter() < deadline and take():
                alive = one(client, latencies, errors)
            with lock:
                results.append((start, time.perf_counter(), latencies, len(errors), errors[:3]))

        threads = [threading.Thread(target=run, args=(c,), name=f"bench-client-{i}") for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    start = min(r[0] for r in results)
    end = max(r[1] for r in results)
    return {
        "seconds": end - start,
        "latencies_ms": [ms for r in results for ms in r[2]],
        "not_ok": sum(r[3] for r in results),
        "errors": [e for r in results for e in r[4]][:5],
    }


def _load_main() -> None:
    """The client process: one ``Load`` (JSON) per line on stdin, one result (JSON) per line on
    stdout, until stdin closes."""
    for line in sys.stdin:
        spec = json.loads(line)
        key = spec.pop("signer_key")
        load = Load(**spec, signer_key=None if key is None else bytes.fromhex(key))
        print(json.dumps(drive(load)), flush=True)


class LoadProcess:
    """A child Python process that runs the client threads (``drive``) for each ``Load`` it is given;
    a context manager. Started with ``-c``, not multiprocessing, so it needs no ``__main__`` guard."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from edged.bench.api import _load_main; _load_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, load: Load) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        spec = {
            name: getattr(load, name) for name in Load.__dataclass_fields__ if name != "signer_key"
        }
        spec["signer_key"] = None if load.signer_key is None else load.signer_key.hex()
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise ConfigError(f"the benchmark's client process exited ({self.process.wait()})")
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


@dataclass(slots=True)
class Bench:
    """Everything the measurements share."""

    service: FaceService
    server: ApiServer
    auth: Authenticator
    broker: Broker
    manager: Ed25519PrivateKey
    person_id: str
    face_ids: tuple[str, str]
    jpeg: bytes
    run_load: Callable[[Load], dict[str, Any]]

    def bodies(self) -> dict[str, tuple[str, dict[str, Any], bool]]:
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
            "detect": ("detect", {"image": base64.b64encode(self.jpeg).decode("ascii")}, False),
        }

    def calls(self) -> dict[str, Callable[[], object]]:
        """kind → the in-process FaceService call the request runs."""
        a, b = self.face_ids
        service = self.service
        return {
            "verify_faces": lambda: service.verify_faces(a, b),
            "verify_person": lambda: service.verify_person(b, self.person_id, DEMO_GROUP),
            "signed_get_group": lambda: service.get_group(DEMO_GROUP),
            "detect": lambda: service.detect(decode_image(self.jpeg, name="image")),
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
        """The signature's cost without MQTT: sign (client) and Authenticator.check (server: Ed25519
        verify + nonce commit), each on a fresh request."""
        clock = SystemClock()
        sign_ms: list[float] = []
        check_ms: list[float] = []
        body = {"personGroupId": DEMO_GROUP}
        for _ in range(samples):
            t0 = time.perf_counter()
            signed = sign_request(body, "get_person_group", DEVICE, MANAGER, self.manager, clock.now())
            t1 = time.perf_counter()
            self.auth.check("get_person_group", signed)
            t2 = time.perf_counter()
            sign_ms.append((t1 - t0) * 1000.0)
            check_ms.append((t2 - t1) * 1000.0)
        return {"sign": _summary(sign_ms), "check": _summary(check_ms)}

    def measure(
        self, kind: str, protocol: str, clients: int, seconds: float | None, requests: int | None
    ) -> Cell:
        op, body, signed = self.bodies()[kind]
        key = (
            self.manager.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            if signed
            else None
        )
        out = self.run_load(Load(self.broker.port, protocol, clients, op, body, key, seconds, requests))
        cell = Cell(kind, protocol, clients)
        cell.seconds = out["seconds"]
        cell.latencies_ms = list(out["latencies_ms"])
        cell.requests = len(cell.latencies_ms)
        cell.not_ok = int(out["not_ok"])
        cell.errors = list(out["errors"])
        return cell


def detect_frame() -> bytes:
    """A 640×480 JPEG of the astronaut's head and shoulders on a grey wall (one face ≈ 140 px), as a
    door camera would send it."""
    from edged.bench.daemon import scene_frames

    frame = scene_frames(1, count=1)[0]
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ConfigError("OpenCV could not encode the benchmark frame as JPEG")
    return bytes(data.tobytes())


def _jpeg(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ConfigError("OpenCV could not encode the astronaut as JPEG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def _detected_face_id(client: RequestClient, image_b64: str, what: str) -> str:
    reply = client.request("detect", {"image": image_b64}, timeout=REQUEST_TIMEOUT_S)
    faces = reply.get("result", {}).get("faces") if reply.get("ok") else None
    if not faces or not faces[0].get("faceId"):
        raise ConfigError(f"the benchmark's detect request on {what} found no face: {reply}")
    return str(faces[0]["faceId"])


@contextmanager
def api_bench(
    pipeline: FacePipeline, base: Config, clients: int, client_process: bool = True
) -> Iterator[Bench]:
    """A broker, an enrolled temporary directory, the request server on it, two face IDs; all gone
    afterwards."""
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
                "queue_depth": max(base.api.queue_depth, clients),
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
        server = ApiServer(service, settings, topics, mqtt, auth, limits=base.images)
        server.start()
        stack.callback(server.stop)
        mqtt.subscribe(topics.request_wildcard(), server.submit, qos=1)
        mqtt.start()
        stack.callback(mqtt.stop)
        if not mqtt.connected.wait(CONNECT_TIMEOUT_S):
            raise ConfigError(f"the request server did not connect to {broker.url}")
        portrait = astronaut()
        with RequestClient(MqttSettings(port=broker.port), DEVICE).connect(CONNECT_TIMEOUT_S) as setup:
            face_ids = (
                _detected_face_id(setup, _jpeg(portrait), "the astronaut"),
                _detected_face_id(setup, _jpeg(shifted(portrait, 40, 25)), "the shifted astronaut"),
            )
        run_load: Callable[[Load], dict[str, Any]] = drive
        if client_process:
            run_load = stack.enter_context(LoadProcess())
        yield Bench(service, server, auth, broker, manager, person_id, face_ids, detect_frame(), run_load)


def bench_api(
    pipeline: FacePipeline,
    base: Config,
    seconds: float | None = 3.0,
    requests: int | None = None,
    clients: int = 4,
    kinds: Sequence[str] = KINDS,
    protocols: Sequence[str] = PROTOCOLS,
    client_process: bool = True,
    progress: bool = True,
) -> ApiBenchResult:
    """Every kind in-process, then over MQTT for each protocol with 1 and ``clients`` clients."""
    if (seconds is None) == (requests is None):
        raise BadArgument("give exactly one of seconds and requests")
    counts = sorted({1, clients})
    cells: list[Cell] = []
    with api_bench(pipeline, base, clients, client_process) as bench:
        sanity = {
            kind: bench.calls()[kind]() for kind in ("verify_faces", "verify_person")
        }  # the same person: both must match
        for kind, result in sanity.items():
            if not getattr(result, "is_identical", False):
                raise ConfigError(f"benchmark sanity: {kind} of the astronaut did not match ({result})")
        references = {}
        for kind in kinds:
            if progress:
                print(f"api bench: {LABELS[kind]}, in-process …", file=sys.stderr)
            references[kind] = bench.reference(kind, seconds, requests)
        signature = bench.signature(SIGNATURE_SAMPLES if requests is None else requests)
        for protocol in protocols:
            for n in counts:
                for kind in kinds:
                    if progress:
                        print(f"api bench: {LABELS[kind]}, MQTT {protocol}, {n} client(s) …", file=sys.stderr)
                    cells.append(bench.measure(kind, protocol, n, seconds, requests))
        setup = {
            "workers": bench.server.settings.workers,
            "queue_depth": bench.server.settings.queue_depth,
            "threads": base.pipeline.threads,
            "clients": clients,
            "client_process": client_process,
            "jpeg_bytes": len(bench.jpeg),
            "served": bench.server.served,
            "failed": bench.server.failed,
            "busy": bench.server.busy,
        }
    return ApiBenchResult(references, cells, signature, setup)


# -- the command ---------------------------------------------------------------------------------------


def _rate(cell: Cell | None, reference: Reference | None) -> str:
    if cell is None:
        return "–"
    ratio = f" ({cell.rate / reference.rate:.2f}×)" if reference is not None and reference.rate > 0 else ""
    return f"{cell.rate:.0f}{ratio}"


def _rtt(cell: Cell | None) -> str:
    stats = None if cell is None else cell.latency()
    return "–" if stats is None else f"{stats['p50_ms']:.2f} / {stats['p95_ms']:.2f}"


def table(result: ApiBenchResult, clients: int) -> str:
    counts = sorted({1, clients})
    header = ["request", "in-process calls/s (ms p50)", "MQTT"]
    for n in counts:
        header += [f"{n} client(s): req/s (× in-process)", f"{n} client(s): round trip ms p50 / p95"]
    header.append("MQTT overhead ms/request (1 client)")
    rows = []
    kinds = [k for k in KINDS if k in result.references]
    protocols = [p for p in PROTOCOLS if any(c.protocol == p for c in result.cells)]
    for kind in kinds:
        ref = result.references[kind]
        ref_stats = _summary(ref.times_ms)
        for protocol in protocols:
            row = [
                LABELS[kind],
                f"{ref.rate:.0f} ({ref_stats['p50_ms']:.2f})" if ref_stats else "–",
                protocol,
            ]
            for n in counts:
                cell = result.cell(kind, protocol, n)
                row += [_rate(cell, ref), _rtt(cell)]
            overhead = result.overhead_ms(kind, protocol)
            row.append("–" if overhead is None else f"{overhead:.2f}")
            rows.append(row)
    return markdown_table(header, rows)


def run_api_bench(args: argparse.Namespace, pipeline: FacePipeline, base: Config) -> int:
    seconds: float | None = args.seconds
    requests: int | None = args.requests
    if requests is not None:
        seconds = None
        if requests < 1:
            raise BadArgument("--requests must be ≥ 1")
    elif seconds is None:
        seconds = 3.0
    if seconds is not None and seconds <= 0:
        raise BadArgument("--seconds must be > 0")
    if args.clients < 1:
        raise BadArgument("--clients must be ≥ 1")
    started = time.monotonic()
    result = bench_api(pipeline, base, seconds, requests, args.clients)
    text = table(result, args.clients)
    out = sys.stderr if args.json else sys.stdout
    print(text, file=out)
    elapsed = time.monotonic() - started
    print(f"api bench: {elapsed:.0f} s", file=sys.stderr)
    failures = [c for c in result.cells if c.not_ok]
    for c in failures:
        print(
            f"edged: warning: {c.not_ok} failed request(s) ({LABELS[c.kind]}, MQTT {c.protocol}, "
            f"{c.clients} client(s)): {'; '.join(c.errors)}",
            file=sys.stderr,
        )
    if args.record:
        how = f"--seconds {seconds:g}" if seconds is not None else f"--requests {requests}"
        command = f"edged bench api {how} --clients {args.clients}"
        sign, check = result.signature_ms["sign"], result.signature_ms["check"]
        signature = (
            ""
            if sign is None or check is None
            else (
                f" In-process, signing a request takes {sign['p50_ms']:.2f} ms (p50) and checking it "
                f"(Ed25519 verify + the nonce committed with synchronous=FULL) {check['p50_ms']:.2f} ms "
                f"(p50; p95 {check['p95_ms']:.2f})."
            )
        )
        setup = result.setup
        note = (
            "The request server (`edged.api.server.ApiServer`, "
            f"{setup['workers']} worker(s), queue depth {setup['queue_depth']}) with edged's MQTT client "
            "(MQTT v5) on the real `FaceService`: real models "
            f"({setup['threads']} inference thread(s) per model), a temporary encrypted directory with the "
            "astronaut enrolled in a trained group, the nonce file on disk; a real Mosquitto on loopback. "
            "Callers: `edged.api.client.RequestClient` connections, one per client thread, "
            "in a separate process (on a door the callers are elsewhere; in the server's process they "
            "would take its GIL), each sending its next request when its reply arrived, "
            f"{'for ' + format(seconds, 'g') + ' s' if seconds is not None else str(requests) + ' requests'}"
            f" per cell after {WARMUP_REQUESTS} warm-up requests per client. *verify face ↔ face*: two "
            "face IDs from `detect` (the astronaut portrait and a shifted copy); *face ↔ person*: a face "
            "ID against the enrolled person (the door-style 1:1); *signed*: `get_person_group` signed "
            "by a manager key (fresh timestamp and nonce per request); *detect*: a 640×480 JPEG "
            f"({setup['jpeg_bytes'] / 1024:.0f} KiB, the astronaut's head and shoulders, one face ≈ 140 "
            "px) in base64, a face ID stored per request. *in-process*: the same `FaceService` call on "
            "one thread, no MQTT, in the same run (detect: `decode_image` + `FaceService.detect`; the "
            "signed request: `get_group`, no signature); × in-process = MQTT requests/s ÷ in-process "
            "calls/s. *MQTT overhead*: the one-client mean round trip − the mean in-process call. "
            "MQTT 3.1.1 replies go to `res/<op>`, which every 3.1.1 client of that operation "
            f"receives (with {args.clients} clients, each reply reaches all {args.clients})."
            + signature
        )
        record(args.record, "api", text + "\n\n" + note, command)
    if args.json:
        print(json.dumps(result.as_json()))
    return 1 if failures else 0
