"""The request-client commands of the ``edged`` CLI: ``edged client keygen`` (a signing key pair and
the configuration snippet that authorises it) and ``edged request OP`` (one request to a terminal over
MQTT, the reply printed as JSON). Parsing and output only; the work is in ``edged.api``, imported when
a command runs."""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.cli_options import GlobalOptions, add_command, bounded_float
from edged.errors import BadArgument, ConfigError, EdgedError, ImageError

if TYPE_CHECKING:
    from edged.mqtt.settings import MqttSettings

ROLES = ("recognizer", "manager", "admin")


@dataclass(frozen=True, slots=True)
class Keygen:
    out: Path
    client: str | None
    role: str


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    body: str | None
    body_file: Path | None
    image: Path | None
    images: tuple[Path, ...] | None
    verify_image: Path | None
    sign_key: Path | None
    client: str | None
    mqtt: str
    protocol: str
    device_id: str | None
    timeout: float
    username: str | None
    password_file: Path | None
    ca_file: Path | None
    cert_file: Path | None
    cert_key: Path | None


def add_commands(sub: Any) -> None:
    client = sub.add_parser("client", help="keys of request clients").add_subparsers(
        dest="client_command", required=True, metavar="COMMAND"
    )
    p = client.add_parser(
        "keygen", help="a new Ed25519 signing key (PEM, mode 0600) and its api.clients config snippet"
    )
    p.add_argument("--out", type=Path, required=True, help="private key file to create (never overwritten)")
    p.add_argument("--client", help="client ID for the config snippet (default: the file name's stem)")
    p.add_argument("--role", choices=ROLES, default="manager", help="role in the snippet (default manager)")
    add_command(p, Keygen, cmd_client)

    p = sub.add_parser("request", help="send one request to a terminal over MQTT and print the reply")
    p.add_argument("op", help="operation, e.g. detect, identify, create_person_group (docs/mqtt-api.md)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="the request as a JSON object (camelCase fields)")
    body.add_argument("--body-file", type=Path, help="file holding the request JSON object")
    p.add_argument("--image", type=Path, help="image sent base64-encoded as the body's 'image'")
    p.add_argument(
        "--images", type=Path, nargs="+", metavar="IMAGE", help="images sent in order as the body's 'images'"
    )
    p.add_argument("--verify-image", type=Path, help="image sent as the body's 'verifyImage' (liveness)")
    p.add_argument("--sign-key", type=Path, help="private key PEM to sign with (with --client)")
    p.add_argument("--client", help="client ID the signing key is configured under (with --sign-key)")
    p.add_argument("--mqtt", required=True, metavar="mqtt://HOST:PORT", help="broker (mqtts:// for TLS)")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default="5", help="MQTT version (default 5)")
    p.add_argument("--device-id", help="terminal ID (default: the configuration's device_id)")
    p.add_argument(
        "--timeout",
        type=bounded_float("--timeout", "a number of seconds", 3600, " seconds"),
        default=10.0,
        help="seconds to wait for the reply",
    )
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--ca-file", type=Path, help="CA bundle for mqtts:// (default: the system's)")
    p.add_argument("--cert-file", type=Path, help="client certificate (PEM) for mqtts://, with --cert-key")
    p.add_argument("--cert-key", type=Path, help="the client certificate's private key (PEM)")
    add_command(p, Request, cmd_request)


def cmd_client(keygen: Keygen, options: GlobalOptions) -> int:
    from edged.api.auth import generate_private_key, public_key_b64, write_private_key

    key = generate_private_key()
    write_private_key(keygen.out, key)
    public = public_key_b64(key)
    client = keygen.client or keygen.out.stem
    print(f"private key: {keygen.out} (mode 0600; keep it secret)")
    print(f"public key:  {public}")
    print("add to the terminal's configuration:")
    print(f"api:\n  clients:\n    {json.dumps(client)}:")
    print(f"      role: {keygen.role}\n      public_key: {json.dumps(public)}")
    return 0


def mqtt_settings(request: Request) -> MqttSettings:
    from pydantic import ValidationError

    from edged.mqtt.settings import DEFAULT_PORTS, BrokerAddress, MqttSettings, TlsSettings

    try:
        address = BrokerAddress.parse(request.mqtt, schemes=tuple(DEFAULT_PORTS))
    except ConfigError as exc:
        raise BadArgument(f"--mqtt: {exc.message}") from None
    tls_options = {
        "--ca-file": request.ca_file,
        "--cert-file": request.cert_file,
        "--cert-key": request.cert_key,
    }
    given = [name for name, value in tls_options.items() if value is not None]
    if given and not address.tls:
        raise BadArgument(f"{', '.join(given)} need(s) an mqtts:// broker URL")
    if (request.cert_file is None) != (request.cert_key is None):
        raise BadArgument("--cert-file and --cert-key go together")
    try:
        return MqttSettings(
            host=address.host,
            port=address.port,
            protocol=request.protocol,
            username=request.username,
            password_file=request.password_file,
            tls=TlsSettings(ca_file=request.ca_file, cert_file=request.cert_file, key_file=request.cert_key)
            if address.tls
            else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadArgument(f"--mqtt options: {first['msg']}") from None


def request_body(request: Request) -> dict[str, Any]:
    if request.body_file is not None:
        try:
            text = request.body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadArgument(
                f"--body-file {request.body_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        source = f"--body-file {request.body_file}"
    else:
        text, source = request.body if request.body is not None else "{}", "--body"
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise BadArgument(f"{source} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadArgument(f"{source} must be a JSON object, not {type(body).__name__}")
    given = {
        ("image", "--image"): request.image,
        ("images", "--images"): request.images,
        ("verifyImage", "--verify-image"): request.verify_image,
    }
    for (name, option), value in given.items():
        if value is None:
            continue
        if name in body:
            raise BadArgument(f"give the {name} either in the body or with {option}, not both")
        encoded = [_base64_file(path) for path in value] if isinstance(value, tuple) else _base64_file(value)
        body[name] = encoded
    return body


def _base64_file(path: Path) -> str:
    try:
        data = path.read_bytes()  # in memory only, never written anywhere
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return base64.b64encode(data).decode("ascii")


def cmd_request(request: Request, options: GlobalOptions) -> int:
    from edged.api.auth import load_private_key
    from edged.api.client import RequestClient
    from edged.config import load_config

    if (request.sign_key is None) != (request.client is None):
        raise BadArgument("--sign-key and --client go together")
    body = request_body(request)
    settings = mqtt_settings(request)
    sign_with = None
    if request.sign_key is not None and request.client is not None:
        sign_with = (request.client, load_private_key(request.sign_key))
    device_id = request.device_id or load_config(options.config).device_id
    try:
        with RequestClient(settings, device_id) as client:
            reply = client.request(request.op, body, timeout=request.timeout, sign_with=sign_with)
    except TimeoutError as exc:
        print(f"edged: Timeout: {exc}", file=sys.stderr)
        return 1
    except (ConnectionError, PermissionError) as exc:
        print(f"edged: MqttError: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a reply that is not JSON
        print(f"edged: BadReply: {exc}", file=sys.stderr)
        return 1
    if reply.get("ok") is True:
        print(json.dumps(reply))
        return 0
    error = reply.get("error")
    if not isinstance(error, dict):
        print(f"edged: BadReply: not ok and no error object: {json.dumps(reply)}", file=sys.stderr)
        return 1
    code = str(error.get("code", "Error"))
    print(f"edged: {code}: {error.get('message', '')}", file=sys.stderr)
    return _exit_codes().get(code, 1)


def _exit_codes() -> dict[str, int]:
    """The CLI exit code of each error code (the same codes as local commands)."""
    codes: dict[str, int] = {}
    stack: list[type[EdgedError]] = [EdgedError]
    while stack:
        cls = stack.pop()
        codes.setdefault(cls.code, cls.exit_code)
        stack.extend(cls.__subclasses__())
    return codes
