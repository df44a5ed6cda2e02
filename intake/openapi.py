"""The served OpenAPI document, with request bodies described by msgspec itself.

Litestar derives body schemas through its DTO layer, which drops constraints the
decoder enforces (list lengths, patterns inside lists, required fields of subclasses,
unknown fields being refused). The bodies are decoded by msgspec, so their schema is
taken from msgspec: what the document says is exactly what the server accepts.
Schemathesis checks the result against the running server (tests/e2e/test_fuzz_openapi.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # private, but the owner of the cached document

from intake.codec import MSGPACK_MEDIA_TYPE
from intake.schemas import (
    AdjustmentIn,
    BatchIn,
    BlockIn,
    CancelIn,
    CaseIn,
    DispatchIn,
    OrderIn,
    PaymentCallbackIn,
    PaymentIn,
    ReturnIn,
    ReviewIn,
    ShipIn,
    SkuIn,
    StockSetIn,
    TrackEventIn,
    TransferIn,
    WarehouseIn,
)

BODIES: dict[str, type[msgspec.Struct]] = {
    "createOrder": OrderIn,
    "createOrders": BatchIn,
    "cancelOrder": CancelIn,
    "payOrder": PaymentIn,
    "paymentCallback": PaymentCallbackIn,
    "putWarehouse": WarehouseIn,
    "putDispatch": DispatchIn,
    "putSku": SkuIn,
    "setStock": StockSetIn,
    "adjustStock": AdjustmentIn,
    "transferStock": TransferIn,
    "blockCustomer": BlockIn,
    "shipShipment": ShipIn,
    "trackShipment": TrackEventIn,
    "openCase": CaseIn,
    "approveCase": ReviewIn,
    "rejectCase": ReviewIn,
    "receiveReturn": ReturnIn,
    "shipExchange": ShipIn,
}
OPTIONAL_BODIES = frozenset({"cancelOrder", "approveCase", "rejectCase"})
MSGPACK_OPERATIONS = frozenset({"createOrder", "createOrders"})
REF_TEMPLATE = "#/components/schemas/{name}"


def refine_openapi(app: Litestar) -> None:
    """Replace every request body schema of the (cached) served document with msgspec's."""
    document: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    names = list(BODIES)
    references, components = msgspec.json.schema_components([BODIES[name] for name in names], ref_template=REF_TEMPLATE)
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    by_operation = dict(zip(names, references, strict=True))
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            reference = by_operation.get(operation.get("operationId", ""))
            if reference is None:
                continue
            content = {"application/json": {"schema": reference}}
            if operation["operationId"] in MSGPACK_OPERATIONS:
                content[MSGPACK_MEDIA_TYPE] = {"schema": reference}
            required = operation["operationId"] not in OPTIONAL_BODIES
            operation["requestBody"] = {"content": content, "required": required}
