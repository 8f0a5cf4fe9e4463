"""The wire form of the service's results: the camelCase JSON of the cloud face APIs (and the
snake_case of a signed receipt). The request server builds its replies with these; the CLI prints
them. The service itself returns plain typed values."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from edged.api import schemas as s
from edged.directory.receipts import Receipt


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt as JSON: its signed payload and the signature."""
    return {**json.loads(receipt.payload()), "signature": receipt.signature}


def receipt(value: Receipt) -> BaseModel:
    """A receipt as the reply of a deletion (``ReceiptResult``)."""
    return s.ReceiptResult.model_validate(receipt_json(value))
