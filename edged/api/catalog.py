"""The JSON Schemas of every request and response, generated from ``edged.api.schemas`` and shipped
in ``edged/api/jsonschema/`` (``python3 tools/export_schemas.py`` rewrites them; a test keeps the
shipped files equal to the models and validates real replies against them)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import BaseModel

from edged.api import schemas as s
from edged.api.operations import OPERATIONS, Operation

DIALECT = "https://json-schema.org/draft/2020-12/schema"
FOLDER = "jsonschema"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/$defs/{model}", mode="validation")


def request_schema(op: Operation) -> dict[str, Any]:
    schema = _schema(op.request)
    return {
        "$schema": DIALECT,
        "$id": f"edged:req/{op.name}",
        "description": f"{op.name} ({op.role}): {op.summary}",
        **{k: v for k, v in schema.items() if k != "description"},
    }


def response_schema(op: Operation) -> dict[str, Any]:
    result = _schema(op.result)
    defs = dict(result.pop("$defs", {}))
    error = _schema(s.Error)
    defs["Result"] = result
    defs["Error"] = error
    ok = {
        "properties": {"ok": {"const": True}, "result": {"$ref": "#/$defs/Result"}},
        "required": ["result"],
        "not": {"required": ["error"]},
    }
    failed = {
        "properties": {"ok": {"const": False}, "error": {"$ref": "#/$defs/Error"}},
        "required": ["error"],
        "not": {"required": ["result"]},
    }
    return {
        "$schema": DIALECT,
        "$id": f"edged:res/{op.name}",
        "title": f"{op.name} response",
        "type": "object",
        "properties": {
            "schema": {"const": 1},
            "op": {"const": op.name},
            "transaction": {"type": ["string", "null"]},
            "ok": {"type": "boolean"},
            "result": {},
            "error": {},
        },
        "required": ["schema", "op", "transaction", "ok"],
        "additionalProperties": False,
        "oneOf": [ok, failed],
        "$defs": defs,
    }


def generated() -> dict[str, str]:
    """File name → JSON text of every schema, as they should be shipped."""
    files = {}
    for name, op in sorted(OPERATIONS.items()):
        files[f"{name}.request.json"] = dump(request_schema(op))
        files[f"{name}.response.json"] = dump(response_schema(op))
    return files


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def shipped(name: str) -> dict[str, Any]:
    """A shipped schema by file name (``detect.request.json``)."""
    text = resources.files("edged.api").joinpath(FOLDER, name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
