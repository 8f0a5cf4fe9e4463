"""The request server: the face operations over MQTT (docs/mqtt-api.md).

    paho network thread                         API worker threads (api.workers)
    ───────────────────                         ────────────────────────────────
    submit(message) ── size cap ──► bounded queue ──► parse JSON → authenticate (Ed25519, nonce,
      │  full → reply Busy at once                    window) → role → schema (strict, closed)
      └─ too big → reply error at once                → decode image in memory → FaceService → reply

Replies: an MQTT v5 request with a Response Topic is answered there with its Correlation Data — but
only Response Topics under ``edged/<device>/reply/`` are honoured, so a request cannot make edged
publish on its own decision, status or sync topics; every other request is answered on
``edged/<device>/res/<operation>`` with its ``transaction`` echoed (MQTT 3.1.1).

Every failure is a reply with an error code (the directory's codes, plus ``Unauthorized`` and
``Busy``); a refused directory-changing request is also an audit record. Nothing is written to disk
but what the operation itself stores (templates, never images). The operations themselves (schemas
and handlers) are ``edged.api.operations``; the role each needs, ``edged.service.policy``.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from edged.api.auth import CLIENT_RE, Authenticator, Principal
from edged.api.operations import OPERATIONS, Context, Operation
from edged.api.settings import ApiSettings
from edged.errors import BadArgument, Busy, EdgedError, Forbidden, Unauthorized
from edged.mqtt.client import Delivery, InboundMessage, encode
from edged.mqtt.topics import Topics
from edged.pipeline.image import ImageLimits
from edged.service import policy
from edged.service.faces import FaceService

__all__ = ["ApiServer", "Publisher", "max_request_bytes"]

logger = logging.getLogger(__name__)

SCHEMA = 1
REQUEST_OVERHEAD = 64 * 1024
"""JSON fields around the base64 image: the request cap is the image cap + this."""
REPLY_QOS = 1
REFUSALS_AUDITED_PER_MIN = 60


def max_request_bytes(limits: ImageLimits) -> int:
    """The largest request payload: a base64 image at the cap plus the other fields."""
    return 4 * -(-limits.max_bytes // 3) + REQUEST_OVERHEAD


class Publisher(Protocol):
    """What the server needs of a connection (``MqttClient`` is one): publish a reply."""

    def publish_bytes(
        self, topic: str, payload: bytes, *, qos: int, correlation_data: bytes | None
    ) -> Delivery: ...


# -- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    op: str
    topic: str
    correlation: bytes | None


def validation_message(exc: ValidationError) -> str:
    """One line naming every offending field: ``faceIds.0: …; extra: unknown field``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(request)"
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class ApiServer:
    """Serves ``edged/<device>/req/+``. ``start()`` starts the workers, ``submit`` is paho's handler,
    ``stop()`` answers what is still queued with ``Busy`` and joins the workers."""

    def __init__(
        self,
        service: FaceService,
        settings: ApiSettings,
        topics: Topics,
        publisher: Publisher,
        authenticator: Authenticator,
        limits: ImageLimits | None = None,
        operations: Mapping[str, Operation] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.topics = topics
        self.publisher = publisher
        self.auth = authenticator
        self.limits = limits or ImageLimits()
        self.operations = dict(operations or OPERATIONS)
        self.max_bytes = max_request_bytes(self.limits)
        self._queue: queue.Queue[tuple[_Route, bytes] | None] = queue.Queue(settings.queue_depth)
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.served = 0
        self.failed = 0
        self.busy = 0
        self.running = 0
        self.refusals_unaudited = 0
        self.refusals_suppressed_minute = 0
        self._refusal_minute = -math.inf
        self._refusals_this_minute = 0
        self._stopping = False

    def start(self) -> None:
        for i in range(self.settings.workers):
            worker = threading.Thread(target=self._work, name=f"api-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse what is still queued (Busy: the client may retry elsewhere or later) and join."""
        self._stopping = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._reply_error(item[0], None, Busy("edged is stopping; the request was not run"))
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()

    def depth(self) -> int:
        return self._queue.qsize()

    def counters(self) -> dict[str, int]:
        """For the stats topic: requests served, failed (error replies), refused Busy, queued, running."""
        with self._lock:
            return {
                "served": self.served,
                "failed": self.failed,
                "busy": self.busy,
                "queued": self._queue.qsize(),
                "running": self.running,
                "refusals_unaudited": self.refusals_unaudited,
            }

    # paho's network thread: cheap checks only

    def submit(self, message: InboundMessage) -> None:
        op = self.topics.operation_of(message.topic)
        if op is None:
            logger.warning("API: ignored a request on %r (not an operation topic)", message.topic)
            return
        route, problem = self._route(op, message)
        if problem is not None:
            self._reply_error(route, _transaction(message.payload), problem)
            return
        if len(message.payload) > self.max_bytes:
            self._reply_error(
                route,
                None,
                BadArgument(
                    f"the request is {len(message.payload):,} bytes; the limit is {self.max_bytes:,}"
                ),
            )
            return
        try:
            if self._stopping:
                raise queue.Full
            self._queue.put_nowait((route, message.payload))
        except queue.Full:
            self._count("busy")
            self._reply_error(
                route,
                _transaction(message.payload),
                Busy(
                    "edged is stopping; retry later"
                    if self._stopping
                    else f"{self.settings.queue_depth} requests are already waiting; retry later"
                ),
            )

    def _route(self, op: str, message: InboundMessage) -> tuple[_Route, EdgedError | None]:
        default = _Route(op, self.topics.response(op), None)
        if message.response_topic is None:
            return default, None
        if not self.topics.is_reply(message.response_topic):
            return default, BadArgument(
                f"response topic {message.response_topic!r} is not allowed: use "
                f"{self.topics.reply('x')[:-1]}<client>[/…]"
            )
        return _Route(op, message.response_topic, message.correlation_data), None

    # workers

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            route, payload = item
            self._count("running")
            try:
                self.handle(route, payload)
            except Exception:  # the reply path itself failed; keep serving
                logger.exception("API: %s failed", route.op)
            finally:
                self._count("running", -1)

    def handle(self, route: _Route, payload: bytes) -> None:
        transaction = None
        principal: Principal | None = None
        try:
            try:
                body = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadArgument(f"the request is not valid JSON: {exc}") from None
            except RecursionError:
                raise BadArgument("the request is not valid JSON: nested too deeply") from None
            if not isinstance(body, dict):
                raise BadArgument(f"the request must be a JSON object, not {type(body).__name__}")
            raw_tx = body.get("transaction")
            transaction = raw_tx if isinstance(raw_tx, str) and 0 < len(raw_tx) <= 128 else None
            operation = self.operations.get(route.op)
            if operation is None:
                raise BadArgument(f"unknown operation {route.op!r}; see docs/mqtt-api.md")
            principal = self._authorise(operation, body)
            try:
                request = operation.request.model_validate(body)
            except ValidationError as exc:
                raise BadArgument(validation_message(exc)) from None
            result = operation.handler(Context(self.service, principal, self.limits), request)
        except EdgedError as exc:
            self._count("failed")
            self._reply_error(route, transaction, exc)
            return
        except Exception as exc:
            self._count("failed")
            logger.exception("API: %s failed", route.op)
            self._reply_error(route, transaction, EdgedError(f"internal error ({type(exc).__name__})"))
            return
        self._count("served")
        self._reply(route, transaction, result.model_dump(mode="json", exclude_none=False))

    def _authorise(self, operation: Operation, body: Mapping[str, Any]) -> Principal:
        """Who sent it (signature) and whether that role may run it; refusals of directory-changing
        or directory-reading operations are audited."""
        try:
            principal = self.auth.check(operation.name, body)
        except (Unauthorized, BadArgument) as exc:
            if operation.role != policy.LOWEST:
                auth = body.get("auth")
                client = auth.get("client") if isinstance(auth, dict) else None
                actor = f"mqtt:{client}" if isinstance(client, str) and CLIENT_RE.fullmatch(client) else None
                self._audit_refusal(operation.name, actor or "mqtt:(unsigned or malformed)", "?", exc)
            if isinstance(exc, BadArgument):
                raise Unauthorized(exc.message) from None
            raise
        if not principal.may(operation.role):
            detail = (
                "sign the request with a manager or admin key (docs/mqtt-api.md)"
                if not principal.signed
                else f"client {principal.client!r} has role {principal.role}"
            )
            if operation.role != policy.LOWEST or principal.signed:
                actor = f"mqtt:{principal.client or '(unsigned)'}"
                self._audit_refusal(operation.name, actor, principal.role, None)
            error_type = Forbidden if principal.signed else Unauthorized
            raise error_type(f"{operation.name} needs role {operation.role}; {detail}")
        return principal

    def _audit_refusal(self, operation: str, actor: str, role: str, error: EdgedError | None) -> None:
        """An audit record for a refused request, at most ``REFUSALS_AUDITED_PER_MIN`` a minute (the
        chain cannot be pruned: a flood of refused requests must not fill the disk); beyond that
        they are counted (``refusals_unaudited``) and logged once per minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._refusal_minute >= 60.0:
                if self.refusals_suppressed_minute:
                    logger.warning(
                        "API: %d refused requests in the last minute were not audited (rate limit)",
                        self.refusals_suppressed_minute,
                    )
                self._refusal_minute, self._refusals_this_minute = now, 0
                self.refusals_suppressed_minute = 0
            if self._refusals_this_minute >= REFUSALS_AUDITED_PER_MIN:
                self.refusals_unaudited += 1
                self.refusals_suppressed_minute += 1
                return
            self._refusals_this_minute += 1
        result = "refused: role" if error is None else f"refused: {error.code}: {error.message[:160]}"
        self.service.record(operation, actor, role, {}, result)

    def _count(self, name: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def _reply(self, route: _Route, transaction: str | None, result: dict[str, Any]) -> None:
        payload = {"schema": SCHEMA, "op": route.op, "transaction": transaction, "ok": True, "result": result}
        self._send(route, payload)

    def _reply_error(self, route: _Route, transaction: str | None, error: EdgedError) -> None:
        payload = {
            "schema": SCHEMA,
            "op": route.op,
            "transaction": transaction,
            "ok": False,
            "error": {"code": error.code, "message": error.message},
        }
        self._send(route, payload)

    def _send(self, route: _Route, payload: dict[str, Any]) -> None:
        self.publisher.publish_bytes(
            route.topic, encode(payload), qos=REPLY_QOS, correlation_data=route.correlation
        )


_TRANSACTION = re.compile(rb'"transaction"\s*:\s*"([^"\\]{1,128})"')


def _transaction(payload: bytes) -> str | None:
    """The request's ``transaction`` for an early error reply (Busy, bad response topic), without
    parsing a large request on paho's thread: base64 holds no quotes, so a scan finds the key."""
    if len(payload) > REQUEST_OVERHEAD:
        match = _TRANSACTION.search(payload)
        return match.group(1).decode("utf-8", "replace") if match else None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    tx = body.get("transaction") if isinstance(body, dict) else None
    return tx if isinstance(tx, str) and 0 < len(tx) <= 128 else None
