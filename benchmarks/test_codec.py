"""Order bodies on the wire: msgspec JSON decode of OrderIn, view + encode of OrderOut (no I/O)."""

from __future__ import annotations

import msgspec
from pytest_benchmark.fixture import BenchmarkFixture

from intake.schemas import OrderIn, OrderOut
from intake.views import order_out
from reservation.records import OrderLine, OrderRecord

ORDER_BODY = b'{"customer_id":"c1-42","region":"eu","order_type":"flash","items":[{"sku":"hot","qty":1}]}'
CREATED_MS = 1_900_000_000_000


def pending_order(line_count: int = 1) -> OrderRecord:
    """An order document as reserve.lua stores it, one warehouse, line_count SKUs."""
    lines = tuple(OrderLine(f"sku-{number}", "w1", 1, 49_900, "m1") for number in range(line_count))
    return OrderRecord(
        order_id="01ba43b7f8004f6c2a1e9d3b", status="pending_payment", customer_id="c1-42", region="eu",
        order_type="flash", created_ms=CREATED_MS, expires_ms=CREATED_MS + 1_800_000, total=49_900 * line_count,
        currency="EUR", lines=lines, cancel_reason="", payment_id="", paid_amount=0, payment_method="", paid_ms=0,
        refund_status="", refund_amount=0, version=1, updated_ms=CREATED_MS, idempotency_key="wrk-1-42",
    )  # fmt: skip


def test_decode_order_body(benchmark: BenchmarkFixture) -> None:
    """msgspec JSON decode of a one-line order body (as wrk sends it) into a validated OrderIn."""
    decoder = msgspec.json.Decoder(OrderIn)

    order = benchmark(decoder.decode, ORDER_BODY)

    assert order.items[0].sku == "hot"


def test_encode_order_response(benchmark: BenchmarkFixture) -> None:
    """order_out() of a stored one-line order plus msgspec JSON encode: the 201 body of POST /v1/orders."""
    encoder = msgspec.json.Encoder()
    order = pending_order()

    def render() -> bytes:
        return encoder.encode(order_out(order))

    body = benchmark(render)

    assert msgspec.json.decode(body, type=OrderOut).order_id == order.order_id


def test_encode_order_out_only(benchmark: BenchmarkFixture) -> None:
    """msgspec JSON encode of a ready OrderOut alone (the encoder's share of the response)."""
    encoder = msgspec.json.Encoder()
    view = order_out(pending_order())

    body = benchmark(encoder.encode, view)

    assert body.startswith(b'{"order_id":')


def test_decode_order_body_msgpack(benchmark: BenchmarkFixture) -> None:
    """msgspec MessagePack decode of the same one-line order into OrderIn (application/msgpack intake)."""
    decoder = msgspec.msgpack.Decoder(OrderIn)
    body = msgspec.msgpack.encode(msgspec.json.decode(ORDER_BODY))

    order = benchmark(decoder.decode, body)

    assert order.customer_id == "c1-42"
