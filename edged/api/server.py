"""The request server: the face operations over MQTT (docs/mqtt-api.md).

    paho network thread                         API worker threads (api.workers)
    ───────────────────                         ────────────────────────────────
    submit(message) ── checks ──► bounded queue ──► parse JSON (codec: no lone surrogate, no number
      │  full → reply Busy at once                  a double cannot hold) → authenticate (Ed25519,
      └─ response topic not allowed, retained,      nonce, window) → the reply topic is the signer's
         too big → refuse at once (the audit        → role → schema (strict, closed) → decode image
         record queued for the api-audit thread)    in memory → FaceService → reply

Replies go under the requester's own identity only. An MQTT v5 request with a Response Topic is
answered there with its Correlation Data when the topic is ``edged/<device>/reply/<C>/…`` and the
request verified as signed by API client ``C``, or when it is ``edged/<device>/unsigned/…`` (any
request; the broker ACL lets only the connection with that client id read it). Every other request
is answered on ``edged/<device>/res/<operation>`` with its ``transaction`` echoed (MQTT 3.1.1): a
request without a Response Topic; a refused Response Topic (``BadArgument``, not run); and any
refusal before the signer of a ``reply/<C>/…`` topic is verified (Busy, too large, retained, not
JSON, a bad signature), since the reply must not land in ``C``'s topic on an unverified word.

A retained request is refused, never run: the broker would hand it over again at every connect
(MQTT v5 subscribes with Retain As Published, so one retained while edged is connected is refused
too). Every request gets exactly one reply, with an error code for every failure (the directory's
codes, plus ``Unauthorized`` and ``Busy``); the reply's encoding cannot fail (``edged.api.codec``).
A request refused before it ran on an operation beyond the recognizer role is also an audit record
(at most 60 a minute; ``edged.api.refusals``: never written on paho's thread, and with the actor
``mqtt:unverified:<client>`` until a signature verified). Nothing is written to disk but what the
operation itself stores (templates, never images). The operations themselves (schemas and
handlers) are ``edged.api.operations``; the role each needs, ``edged.service.policy``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from edged.api import codec
from edged.api.auth import Authenticator, Principal
from edged.api.operations import OPERATIONS, Context, Operation
from edged.api.refusals import RefusalAudit, claimed
from edged.api.settings import ApiSettings
from edged.errors import BadArgument, Busy, EdgedError, Forbidden, Unauthorized
from edged.mqtt.client import Delivery, InboundMessage
from edged.mqtt.state import Handler, Subscription
from edged.mqtt.topics import Topics
from edged.pipeline.image import ImageLimits
from edged.service import policy
from edged.service.faces import FaceService

__all__ = ["ApiServer", "Publisher", "Subscriber", "max_request_bytes"]

logger = logging.getLogger(__name__)

REQUEST_OVERHEAD = 64 * 1024
"""JSON fields around the base64 image: the request cap is the image cap + this."""
REPLY_QOS = 1
REQUEST_QOS = 1


def max_request_bytes(limits: ImageLimits) -> int:
    """The largest request payload: a base64 image at the cap plus the other fields."""
    return 4 * -(-limits.max_bytes // 3) + REQUEST_OVERHEAD


class Publisher(Protocol):
    """What the server needs of a connection (``MqttClient`` is one): publish a reply."""

    def publish_bytes(
        self, topic: str, payload: bytes, *, qos: int, correlation_data: bytes | None
    ) -> Delivery: ...


class Subscriber(Protocol):
    """A connection the server takes its requests from (``MqttClient`` is one)."""

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, retain_as_published: bool = False
    ) -> Subscription: ...


# -- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a request's reply goes: its Response Topic (with its Correlation Data) or ``res/<op>``."""

    op: str
    topic: str
    correlation: bytes | None = None
    signer: str | None = None
    """For ``reply/<signer>/…``: answered there only once a request signed by it verified."""


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
        self.refusals = RefusalAudit(service)
        self._stopping = False

    def listen(self, connection: Subscriber) -> Subscription:
        """Take requests from ``connection``: its subscription to ``edged/<device>/req/+`` (QoS 1;
        MQTT v5 Retain As Published, so a request retained while edged is subscribed arrives flagged
        as retained and is refused like one stored before)."""
        return connection.subscribe(
            self.topics.request_wildcard(), self.submit, qos=REQUEST_QOS, retain_as_published=True
        )

    def start(self) -> None:
        self.refusals.start()
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
                route, payload = item
                transaction = codec.peek_transaction(payload)
                self._reply_error(
                    self._unverified(route), transaction, Busy("edged is stopping; the request was not run")
                )
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()
        self.refusals.stop(timeout)

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
                "refusals_unaudited": self.refusals.unaudited,
            }

    # paho's network thread: cheap checks only

    def submit(self, message: InboundMessage) -> None:
        op = self.topics.operation_of(message.topic)
        if op is None:
            logger.warning("API: ignored a request on %r (not an operation topic)", message.topic)
            return
        route, problem = self._route(op, message)
        if problem is None and message.retain:
            problem = BadArgument(
                "a retained request is never run (the broker would hand it to edged again at every "
                "connect): publish it without the retain flag, and clear the retained one with an "
                f"empty retained message on {message.topic}"
            )
        if problem is None and len(message.payload) > self.max_bytes:
            problem = BadArgument(
                f"the request is {len(message.payload):,} bytes; the limit is {self.max_bytes:,}"
            )
        if problem is not None:
            self._refuse_early(route, message.payload, problem)
            return
        try:
            if self._stopping:
                raise queue.Full
            self._queue.put_nowait((route, message.payload))
        except queue.Full:
            self._count("busy")
            self._reply_error(
                self._unverified(route),
                codec.peek_transaction(message.payload),
                Busy(
                    "edged is stopping; retry later"
                    if self._stopping
                    else f"{self.settings.queue_depth} requests are already waiting; retry later"
                ),
            )

    def _route(self, op: str, message: InboundMessage) -> tuple[_Route, EdgedError | None]:
        default = _Route(op, self.topics.response(op))
        topic = message.response_topic
        if topic is None:
            return default, None
        if self.topics.is_unsigned_reply(topic):
            return _Route(op, topic, message.correlation_data), None
        signer = self.topics.reply_signer(topic)
        if signer is not None:
            return _Route(op, topic, message.correlation_data, signer), None
        return default, BadArgument(
            f"response topic {topic!r} is not allowed: use {self.topics.unsigned_reply('CLIENT')} "
            f"(CLIENT: your MQTT client id), or {self.topics.reply('SIGNER')}/… for a request signed "
            "by API client SIGNER"
        )

    def _unverified(self, route: _Route) -> _Route:
        """Where a reply goes before the request's signer is verified: not into ``reply/<signer>/…``."""
        return route if route.signer is None else _Route(route.op, self.topics.response(route.op))

    def _refuse_early(self, route: _Route, payload: bytes, error: EdgedError) -> None:
        """Answer a request refused before it was queued (on paho's thread: a small payload is
        parsed for its transaction and claimed client, a large one only scanned) and audit it (the
        record queued for the writer thread: paho's thread never waits for the service lock)."""
        body = codec.peek(payload)
        operation = self.operations.get(route.op)
        if operation is not None and _audited(operation):
            self.refusals.refused(operation.name, claimed(body), "?", error, queued=True)
        transaction = codec.transaction_of(body) if body is not None else codec.peek_transaction(payload)
        self._reply_error(self._unverified(route), transaction, error)

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
        """Run one request and send its one reply (an error reply for every failure)."""
        answer = self._unverified(route)
        transaction = None
        body: dict[str, Any] | None = None
        operation = self.operations.get(route.op)
        try:
            try:
                body = codec.load(payload)
                transaction = codec.transaction_of(body)
                codec.check(body)
            except BadArgument as exc:
                if operation is not None and _audited(operation):
                    self.refusals.refused(operation.name, claimed(body), "?", exc, queued=False)
                raise
            if operation is None:
                raise BadArgument(f"unknown operation {route.op!r}; see docs/mqtt-api.md")
            principal = self._authenticate(operation, body)
            answer = self._answer(operation, route, principal)
            self._permit(operation, principal)
            try:
                request = operation.request.model_validate(body)
            except ValidationError as exc:
                raise BadArgument(validation_message(exc)) from None
            result = operation.handler(Context(self.service, principal, self.limits), request)
            data = result.model_dump(mode="json", exclude_none=False)
        except EdgedError as exc:
            self._count("failed")
            self._reply_error(answer, transaction, exc)
            return
        except Exception as exc:
            self._count("failed")
            logger.exception("API: %s failed", route.op)
            self._reply_error(answer, transaction, EdgedError(f"internal error ({type(exc).__name__})"))
            return
        self._count("served")
        self._send(answer, codec.reply(route.op, transaction, data))

    def _authenticate(self, operation: Operation, body: Mapping[str, Any]) -> Principal:
        """Who sent it (signature); refusals of operations beyond the recognizer role are audited."""
        try:
            return self.auth.check(operation.name, body)
        except (Unauthorized, BadArgument) as exc:
            if _audited(operation):
                self.refusals.refused(operation.name, claimed(body), "?", exc, queued=False)
            if isinstance(exc, BadArgument):
                raise Unauthorized(exc.message) from None
            raise

    def _answer(self, operation: Operation, route: _Route, principal: Principal) -> _Route:
        """``route`` when its Response Topic is the principal's own; else BadArgument (audited)."""
        if route.signer is None or (principal.signed and principal.client == route.signer):
            return route
        if principal.signed:
            own = self.topics.reply(str(principal.client))
            who = f"a request signed by {principal.client!r} is answered on {own}/…"
        else:
            who = "an unsigned request is answered on " + self.topics.unsigned_reply("CLIENT")
        error = BadArgument(
            f"response topic {route.topic!r} is not allowed: {who} (or on {self.topics.response(route.op)})"
        )
        if _audited(operation):
            actor = f"mqtt:{principal.client or '(unsigned)'}"
            self.refusals.refused(operation.name, actor, principal.role, error, queued=False)
        raise error

    def _permit(self, operation: Operation, principal: Principal) -> None:
        """Whether the principal's role may run it; refusals are audited (and of signed requests)."""
        if not principal.may(operation.role):
            detail = (
                "sign the request with a manager or admin key (docs/mqtt-api.md)"
                if not principal.signed
                else f"client {principal.client!r} has role {principal.role}"
            )
            if _audited(operation) or principal.signed:
                actor = f"mqtt:{principal.client or '(unsigned)'}"
                self.refusals.refused(operation.name, actor, principal.role, None, queued=False)
            error_type = Forbidden if principal.signed else Unauthorized
            raise error_type(f"{operation.name} needs role {operation.role}; {detail}")

    def _count(self, name: str, delta: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def _reply_error(self, route: _Route, transaction: str | None, error: EdgedError) -> None:
        self._send(route, codec.error_reply(route.op, transaction, error.code, error.message))

    def _send(self, route: _Route, payload: bytes) -> None:
        self.publisher.publish_bytes(route.topic, payload, qos=REPLY_QOS, correlation_data=route.correlation)


def _audited(operation: Operation) -> bool:
    """Refusals of operations beyond the recognizer role (changes and reads of the directory, admin
    operations) are audited."""
    return operation.role != policy.LOWEST
