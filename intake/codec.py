"""Order bodies in JSON or MessagePack, decoded strictly with one reused decoder per type.

Litestar's own decoding converts leniently (``"qty": "1"`` becomes 1, ``0`` becomes
a datetime) and goes through Python builtins first; every request body here is read
raw and decoded by msgspec instead. The OpenAPI document describes the bodies with
msgspec's own schemas (intake/openapi.py). Responses follow ``Accept``.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgspec
from litestar import Request

from intake.problems import ProblemError

MSGPACK_MEDIA_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
JSON_MEDIA_TYPE = "application/json"
MSGPACK_MEDIA_TYPE = MSGPACK_MEDIA_TYPES[0]

Body = TypeVar("Body")

_json_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_msgpack_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def decode_body(body: bytes, content_type: str, body_type: type[Body]) -> Body:
    """Decode by media type; malformed or out-of-bounds input is a 400 invalid-request problem."""
    media_type = content_type.partition(";")[0].strip().lower()
    try:
        if media_type in MSGPACK_MEDIA_TYPES:
            decoder: Any = _msgpack_decoders.get(body_type) or _msgpack_decoders.setdefault(
                body_type, msgspec.msgpack.Decoder(body_type)
            )
        elif media_type in ("", JSON_MEDIA_TYPE) or media_type.endswith("+json"):
            decoder = _json_decoders.get(body_type) or _json_decoders.setdefault(
                body_type, msgspec.json.Decoder(body_type)
            )
        else:
            raise ProblemError(415, "unsupported-media-type", "send application/json or application/msgpack")
        return cast(Body, decoder.decode(body))
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ProblemError(400, "invalid-request", str(error)) from None


async def read_body(request: Request[Any, Any, Any], body_type: type[Body]) -> Body:
    """The request body decoded strictly as body_type (its size is bounded by the app or route)."""
    return decode_body(await request.body(), request.headers.get("content-type", ""), body_type)


async def read_optional_body(request: Request[Any, Any, Any], body_type: type[Body]) -> Body | None:
    """As read_body, but an empty body means None."""
    body = await request.body()
    if not body:
        return None
    return decode_body(body, request.headers.get("content-type", ""), body_type)


def encode_for(accept: str, body: msgspec.Struct) -> tuple[bytes, str]:
    """The body encoded once, as MessagePack when the Accept header names it, else JSON; and its media type."""
    if any(media_type in accept for media_type in MSGPACK_MEDIA_TYPES):
        return _msgpack_encoder.encode(body), MSGPACK_MEDIA_TYPE
    return _json_encoder.encode(body), JSON_MEDIA_TYPE
