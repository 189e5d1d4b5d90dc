"""One parser for every ``CANONICAL=SOURCE`` option: the log's ``--map`` and ``retain lift``'s
``--assignments-map`` agree on every rule, repeated names included."""

from __future__ import annotations

import pytest

from features.errors import InputError
from features.log.column_map import parse_column_map
from features.log.reading import parse_mapping
from features.log.schema import PurchaseLogError
from features.retention.assignments import AssignmentError, assignment_columns


def test_both_options_read_items_alike() -> None:
    items = ["customer_id = Client", "send_date=day=of=send"]
    assert assignment_columns(items) == {"customer_id": "Client", "send_date": "day=of=send"}
    assert parse_mapping(items[:1]) == {"customer_id": "Client"}


@pytest.mark.parametrize(
    ("parse", "error"),
    [(parse_mapping, PurchaseLogError), (assignment_columns, AssignmentError)],
)
def test_a_name_mapped_to_two_sources_is_one_clear_error(parse: object, error: type) -> None:
    # before: --assignments-map kept the last of the two silently, --map refused it
    with pytest.raises(error, match=r"'customer_id=B'.*'customer_id' is already mapped to 'A'"):
        parse(["customer_id=A", "customer_id=B"])  # type: ignore[operator]


@pytest.mark.parametrize("parse", [parse_mapping, assignment_columns])
def test_the_same_mapping_twice_is_one_mapping(parse: object) -> None:
    assert parse(["customer_id=A", "customer_id = A"]) == {"customer_id": "A"}  # type: ignore[operator]


@pytest.mark.parametrize("item", ["customer_id", "=A", "customer_id=", " "])
def test_malformed_items_are_refused_by_both(item: str) -> None:
    with pytest.raises(AssignmentError, match=r"malformed assignments mapping"):
        assignment_columns([item])
    with pytest.raises(PurchaseLogError, match=r"malformed column mapping"):
        parse_mapping([item])


class _TestMapError(InputError):
    """The caller's own error class."""


def test_unknown_names_and_the_error_class() -> None:
    with pytest.raises(_TestMapError, match=r"test mapping 'x=y': unknown canonical column 'x'"):
        parse_column_map(["x=y"], ("a", "b"), what="test mapping", error=_TestMapError)
    with pytest.raises(AssignmentError, match=r"unknown canonical column 'client'"):
        assignment_columns(["client=X"])
