"""Order documents, their rendering, and the pure helpers of the intake service."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from random import Random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.problems import ProblemError
from intake.schemas import OrderIn, OrderItemIn, OrderItemOut, PaymentOut, RefundOut, ShipmentItemOut, ShipmentOut
from intake.service import from_ms, new_order_id, new_order_ids, request_fingerprint, to_ms
from intake.views import order_out
from reservation.records import OrderLine, OrderRecord, Shipment, order_record_decoder

CREATED_MS = 1_900_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def make_order(lines: tuple[OrderLine, ...] = (), **changes: object) -> OrderRecord:
    order = OrderRecord(
        order_id="0001ba4f1e00a1b2c3d4e5f6",
        status="pending_payment",
        customer_id="customer-1",
        region="eu-west",
        order_type="flash",
        created_ms=CREATED_MS,
        expires_ms=CREATED_MS + 1_800_000,
        total=sum(line.qty * line.unit_price for line in lines),
        currency="EUR",
        lines=lines,
        cancel_reason="",
        payment_id="",
        paid_amount=0,
        payment_method="",
        paid_ms=0,
        refund_status="",
        refund_amount=0,
        version=1,
        updated_ms=CREATED_MS,
        idempotency_key="key-1",
    )
    return msgspec.structs.replace(order, **changes)


SPLIT_LINES = (
    OrderLine("sku-a", "wh-1", 3, 1000, "merchant-1"),
    OrderLine("sku-b", "wh-2", 1, 250, "merchant-1"),
    OrderLine("sku-c", "wh-1", 2, 99, "merchant-2"),
    OrderLine("sku-d", "wh-1", 4, 10, "merchant-1"),
    OrderLine("sku-a", "wh-2", 2, 1000, "merchant-1"),
)


# --- OrderRecord.shipments / quantities -------------------------------------------------------


def test_shipments_group_lines_per_merchant_and_warehouse_in_order_of_first_appearance() -> None:
    order = make_order(SPLIT_LINES)

    assert order.shipments() == [
        Shipment(f"{order.order_id}-1", "wh-1", "merchant-1", (("sku-a", 3), ("sku-d", 4))),
        Shipment(f"{order.order_id}-2", "wh-2", "merchant-1", (("sku-b", 1), ("sku-a", 2))),
        Shipment(f"{order.order_id}-3", "wh-1", "merchant-2", (("sku-c", 2),)),
    ]


def test_two_merchants_shipping_from_one_warehouse_get_separate_shipments() -> None:
    order = make_order(
        (OrderLine("sku-a", "wh-1", 1, 5, "merchant-1"), OrderLine("sku-b", "wh-1", 1, 5, "merchant-2")),
        order_id="order-x",
    )

    assert [(shipment.shipment_id, shipment.merchant_id) for shipment in order.shipments()] == [
        ("order-x-1", "merchant-1"),
        ("order-x-2", "merchant-2"),
    ]


def test_an_order_of_one_line_ships_as_shipment_one_of_its_warehouse_and_merchant() -> None:
    order = make_order((OrderLine("sku-a", "wh-2", 3, 1000, "merchant-2"),), order_id="order-y")

    assert order.shipments() == [Shipment("order-y-1", "wh-2", "merchant-2", (("sku-a", 3),))]


def test_an_order_without_lines_has_no_shipments_and_no_quantities() -> None:
    order = make_order(())

    assert order.shipments() == []
    assert order.quantities() == {}
    assert order.skus == []


def test_quantities_sum_a_sku_split_across_warehouses_in_order_of_appearance() -> None:
    order = make_order(SPLIT_LINES)

    quantities = order.quantities()

    assert quantities == {"sku-a": (5, 1000), "sku-b": (1, 250), "sku-c": (2, 99), "sku-d": (4, 10)}
    assert list(quantities) == ["sku-a", "sku-b", "sku-c", "sku-d"]


def test_skus_are_listed_once_each_and_sorted() -> None:
    assert make_order(tuple(reversed(SPLIT_LINES))).skus == ["sku-a", "sku-b", "sku-c", "sku-d"]


# --- msgpack contract -------------------------------------------------------------------------

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
order_lines = st.builds(OrderLine, st.text(), st.text(), int64, int64, st.text())
order_records = st.builds(
    OrderRecord,
    order_id=st.text(),
    status=st.sampled_from(["pending_payment", "paid", "cancelled"]),
    customer_id=st.text(),
    region=st.text(),
    order_type=st.text(),
    created_ms=int64,
    expires_ms=int64,
    total=int64,
    currency=st.text(),
    lines=st.lists(order_lines, max_size=8).map(tuple),
    cancel_reason=st.text(),
    payment_id=st.text(),
    paid_amount=int64,
    payment_method=st.text(),
    paid_ms=int64,
    refund_status=st.text(),
    refund_amount=int64,
    version=int64,
    updated_ms=int64,
    idempotency_key=st.text(),
)


@given(order_records)
def test_an_order_record_survives_a_msgpack_round_trip_unchanged(order: OrderRecord) -> None:
    decoded = order_record_decoder.decode(msgspec.msgpack.encode(order))

    assert decoded == order
    assert decoded.shipments() == order.shipments()


def test_an_order_record_is_an_array_in_the_field_order_the_scripts_use() -> None:
    line = OrderLine("sku-a", "wh-1", 3, 1000, "merchant-1")
    order = make_order((line,), payment_id="pay-1", version=7)

    packed = msgspec.msgpack.decode(msgspec.msgpack.encode(order))

    assert packed == [
        order.order_id, "pending_payment", "customer-1", "eu-west", "flash", CREATED_MS, CREATED_MS + 1_800_000,
        3000, "EUR", [["sku-a", "wh-1", 3, 1000, "merchant-1"]], "", "pay-1", 0, "", 0, "", 0, 7, CREATED_MS, "key-1",
        "", [], "", 0, 0, 0, "", 0, False, 0, [],
    ]  # fmt: skip


def test_the_decoder_refuses_a_document_with_a_missing_field() -> None:
    packed = msgspec.msgpack.decode(msgspec.msgpack.encode(make_order()))

    with pytest.raises(msgspec.ValidationError):
        order_record_decoder.decode(msgspec.msgpack.encode(packed[:19]))


def test_a_document_written_before_fingerprints_were_kept_still_decodes() -> None:
    packed = msgspec.msgpack.decode(msgspec.msgpack.encode(make_order()))

    assert order_record_decoder.decode(msgspec.msgpack.encode(packed[:20])).fingerprint == ""


def test_a_document_as_reserve_lua_writes_it_decodes_with_an_empty_lifecycle() -> None:
    order = make_order()
    packed = msgspec.msgpack.decode(msgspec.msgpack.encode(order))

    assert order_record_decoder.decode(msgspec.msgpack.encode(packed[:21])) == order
    assert order.shipment_states == () and order.case_ids == () and not order.after_sales_closed


# --- intake.views.order_out -------------------------------------------------------------------


def test_a_pending_order_renders_without_cancel_reason_payment_or_refund() -> None:
    order = make_order(SPLIT_LINES)

    body = order_out(order)

    assert (body.cancel_reason, body.payment, body.refund) == (None, None, None)
    rendered = json.loads(msgspec.json.encode(body))
    assert not {"cancel_reason", "payment", "refund"} & rendered.keys()
    assert rendered["status"] == "pending_payment"


def test_an_order_renders_its_identity_times_and_money() -> None:
    order = make_order(SPLIT_LINES)

    body = order_out(order)

    assert (body.order_id, body.status, body.customer_id) == (order.order_id, "pending_payment", "customer-1")
    assert (body.region, body.order_type, body.total, body.currency) == ("eu-west", "flash", order.total, "EUR")
    assert body.created_at == EPOCH + timedelta(milliseconds=CREATED_MS)
    assert body.expires_at == EPOCH + timedelta(milliseconds=CREATED_MS + 1_800_000)


def test_an_order_renders_items_summed_per_sku_and_one_shipment_per_merchant_and_warehouse() -> None:
    body = order_out(make_order(SPLIT_LINES, order_id="o"))

    assert body.items == [
        OrderItemOut("sku-a", 5, 1000),
        OrderItemOut("sku-b", 1, 250),
        OrderItemOut("sku-c", 2, 99),
        OrderItemOut("sku-d", 4, 10),
    ]
    assert body.shipments == [
        ShipmentOut("o-1", "wh-1", "merchant-1", [ShipmentItemOut("sku-a", 3), ShipmentItemOut("sku-d", 4)]),
        ShipmentOut("o-2", "wh-2", "merchant-1", [ShipmentItemOut("sku-b", 1), ShipmentItemOut("sku-a", 2)]),
        ShipmentOut("o-3", "wh-1", "merchant-2", [ShipmentItemOut("sku-c", 2)]),
    ]


@pytest.mark.parametrize("reason", ["customer", "merchant", "payment_timeout"])
def test_a_cancelled_order_renders_its_cancel_reason_only(reason: str) -> None:
    body = order_out(make_order(SPLIT_LINES, status="cancelled", cancel_reason=reason))

    assert body.status == "cancelled"
    assert body.cancel_reason == reason
    assert (body.payment, body.refund) == (None, None)


def test_a_paid_order_renders_its_payment_only() -> None:
    paid_ms = CREATED_MS + 60_000
    order = make_order(
        SPLIT_LINES, status="paid", payment_id="pay-1", paid_amount=3549, payment_method="card", paid_ms=paid_ms
    )

    body = order_out(order)

    assert body.payment == PaymentOut("pay-1", 3549, "card", EPOCH + timedelta(milliseconds=paid_ms))
    assert (body.cancel_reason, body.refund) == (None, None)


def test_a_cancelled_paid_order_renders_reason_payment_and_pending_refund() -> None:
    order = make_order(
        SPLIT_LINES,
        status="cancelled",
        cancel_reason="merchant",
        payment_id="pay-1",
        paid_amount=3549,
        payment_method="card",
        paid_ms=CREATED_MS + 1,
        refund_status="pending",
        refund_amount=3549,
    )

    body = order_out(order)

    assert body.cancel_reason == "merchant"
    assert body.payment is not None and body.payment.payment_id == "pay-1"
    assert body.refund == RefundOut("refund_pending", 3549)
    rendered = json.loads(msgspec.json.encode(body))
    assert rendered["refund"] == {"status": "refund_pending", "amount": 3549}


# --- intake.service.request_fingerprint -------------------------------------------------------


def make_order_in(items: list[tuple[str, int]], **changes: object) -> OrderIn:
    order = OrderIn(
        customer_id="customer-1",
        region="eu-west",
        order_type="flash",
        items=[OrderItemIn(sku=sku, qty=qty) for sku, qty in items],
    )
    return msgspec.structs.replace(order, **changes)


ITEMS = [("sku-a", 1), ("sku-b", 2), ("sku-c", 3)]


def test_a_fingerprint_is_32_hex_characters() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", request_fingerprint(make_order_in(ITEMS)))


def test_the_same_items_in_another_order_give_the_same_fingerprint() -> None:
    assert request_fingerprint(make_order_in(ITEMS)) == request_fingerprint(make_order_in(ITEMS[::-1]))


def test_the_same_body_with_other_json_formatting_gives_the_same_fingerprint() -> None:
    compact = (
        b'{"customer_id":"c-1","region":"r","order_type":"normal","items":[{"sku":"a","qty":1},{"sku":"b","qty":2}]}'
    )
    spaced = (
        b'{ "items": [ {"qty": 2, "sku": "b"}, {"qty": 1, "sku": "a"} ],\n'
        b'  "order_type": "normal", "region": "r", "customer_id": "c-1", "allow_split": false }'
    )

    first = request_fingerprint(msgspec.json.decode(compact, type=OrderIn))
    second = request_fingerprint(msgspec.json.decode(spaced, type=OrderIn))

    assert first == second


@pytest.mark.parametrize(
    ("items", "changes"),
    [
        ([("sku-a", 1), ("sku-b", 2), ("sku-c", 4)], {}),
        ([("sku-a", 1), ("sku-b", 2), ("sku-d", 3)], {}),
        ([("sku-a", 1), ("sku-b", 2)], {}),
        (ITEMS, {"customer_id": "customer-2"}),
        (ITEMS, {"region": "us-east"}),
        (ITEMS, {"order_type": "normal"}),
        (ITEMS, {"allow_split": True}),
    ],
)
def test_a_change_of_qty_sku_customer_region_order_type_or_allow_split_changes_the_fingerprint(
    items: list[tuple[str, int]], changes: dict[str, object]
) -> None:
    assert request_fingerprint(make_order_in(items, **changes)) != request_fingerprint(make_order_in(ITEMS))


def test_moving_a_quantity_from_one_sku_to_another_changes_the_fingerprint() -> None:
    swapped = [("sku-a", 2), ("sku-b", 1), ("sku-c", 3)]

    assert request_fingerprint(make_order_in(swapped)) != request_fingerprint(make_order_in(ITEMS))


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), st.integers(min_value=1, max_value=10_000)),
        min_size=1,
        max_size=20,
        unique_by=lambda item: item[0],
    ),
    st.randoms(use_true_random=False),
)
def test_any_permutation_of_the_items_gives_the_same_fingerprint(items: list[tuple[str, int]], random: Random) -> None:
    shuffled = list(items)
    random.shuffle(shuffled)

    assert request_fingerprint(make_order_in(shuffled)) == request_fingerprint(make_order_in(items))


# --- intake.service.new_order_id ---------------------------------------------------------------

MS_BEFORE_ID_WIDENS = 16**12  # year 10889: beyond it the 12 hex digits of time grow to 13


def test_an_order_id_is_the_time_in_hex_then_a_random_suffix() -> None:
    order_id = new_order_id(CREATED_MS)

    assert re.fullmatch(r"[0-9a-f]{24}", order_id)
    assert int(order_id[:12], 16) == CREATED_MS


@given(st.integers(min_value=0, max_value=MS_BEFORE_ID_WIDENS - 2), st.integers(min_value=1, max_value=10**9))
def test_order_ids_sort_in_the_order_of_their_times(earlier_ms: int, gap_ms: int) -> None:
    later_ms = min(earlier_ms + gap_ms, MS_BEFORE_ID_WIDENS - 1)

    assert new_order_id(earlier_ms) < new_order_id(later_ms)


def test_order_ids_made_in_the_same_millisecond_are_unique() -> None:
    ids = {new_order_id(CREATED_MS) for _ in range(2000)}

    assert len(ids) == 2000


def test_ids_made_for_a_batch_look_like_single_ids_of_that_millisecond_and_are_unique() -> None:
    ids = new_order_ids(CREATED_MS, 2000)

    assert len(set(ids)) == 2000
    assert all(re.fullmatch(r"[0-9a-f]{24}", order_id) for order_id in ids)
    assert {order_id[:12] for order_id in ids} == {new_order_id(CREATED_MS)[:12]}


def test_sorting_ids_made_over_many_milliseconds_sorts_them_by_time() -> None:
    times = [CREATED_MS + offset for offset in (5, 0, 3, 1000, 1, 86_400_000, 2)]

    ids = [new_order_id(now_ms) for now_ms in times]

    assert [int(order_id[:12], 16) for order_id in sorted(ids)] == sorted(times)


# --- intake.service.to_ms / from_ms ------------------------------------------------------------


def test_from_ms_gives_an_aware_utc_datetime() -> None:
    moment = from_ms(CREATED_MS)

    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert moment == EPOCH + timedelta(milliseconds=CREATED_MS)


def test_to_ms_counts_milliseconds_since_the_epoch_in_any_offset() -> None:
    moment = datetime(2030, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    elsewhere = moment.astimezone(timezone(timedelta(hours=2)))

    assert to_ms(moment) == 1_898_596_800_500
    assert to_ms(elsewhere) == to_ms(moment)


def test_to_ms_refuses_a_time_without_an_offset_as_invalid_input() -> None:
    with pytest.raises(ProblemError) as caught:
        to_ms(datetime(2030, 3, 1, 12, 0, 0))

    assert caught.value.status == 400
    assert caught.value.kind == "invalid-request"


@given(st.integers(min_value=1_700_000_000_000, max_value=1_700_000_000_000 + 10**6))
def test_millisecond_times_of_today_round_trip_through_a_datetime(milliseconds: int) -> None:
    assert to_ms(from_ms(milliseconds)) == milliseconds


@pytest.mark.parametrize("milliseconds", [1001, 1_078_269_556_340, 2_157_986_796_911, 2_159_943_647_766])
def test_every_millisecond_time_round_trips_through_a_datetime(milliseconds: int) -> None:
    assert to_ms(from_ms(milliseconds)) == milliseconds


def test_to_ms_of_a_sale_start_with_whole_milliseconds_is_exact() -> None:
    moment = datetime(2004, 3, 2, 23, 19, 16, 340_000, tzinfo=UTC)

    assert to_ms(moment) == (moment - EPOCH) // timedelta(milliseconds=1) == 1_078_269_556_340


# --- persister payloads ---------------------------------------------------------------------------


def test_an_order_event_payload_names_every_field_of_the_order_its_lines_and_movements() -> None:
    from persistence.writer import Event, _payload, as_plain
    from reservation.records import Movement

    movements = (
        Movement("sku-a", "wh-1", "reserve", 3, -3, 3, 0, 0),
        Movement("sku-b", "wh-2", "reserve", 1, -1, 1, 0, 0),
    )
    order = make_order(SPLIT_LINES)
    event = Event(0, CREATED_MS, 0, "order_created", CREATED_MS, order, movements, None)
    payload = json.loads(_payload(event))
    assert payload == {"order": as_plain(order), "movements": as_plain(movements)}
    assert payload["order"]["lines"][0] == {
        "sku": "sku-a", "warehouse_id": "wh-1", "qty": 3, "unit_price": 1000, "merchant_id": "merchant-1",
    }  # fmt: skip
    assert payload["movements"][1]["reserved_delta"] == 1
    assert set(payload["order"]) == set(OrderRecord.__struct_fields__)


def test_a_shipped_order_payload_names_its_shipments_and_their_tracks_too() -> None:
    from persistence.writer import Event, _payload, as_plain
    from reservation.records import ShipmentState, TrackEvent

    track = (TrackEvent("in_transit", "Berlin", CREATED_MS + 5, CREATED_MS + 6),)
    states = (ShipmentState("0001ba4f1e00a1b2c3d4e5f6-1", "dhl", "JD0001", CREATED_MS + 1, track),)
    order = make_order(SPLIT_LINES, status="shipped", shipment_states=states, case_ids=("case-1",))
    event = Event(0, CREATED_MS, 1, "order_shipped", CREATED_MS, order, (), None)
    payload = json.loads(_payload(event))
    assert payload == {"order": as_plain(order), "movements": []}
    assert payload["order"]["shipment_states"][0]["track"][0]["location"] == "Berlin"
