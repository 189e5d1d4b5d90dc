"""``CANONICAL=SOURCE`` column mappings: the one parser of ``--map`` and ``--assignments-map``.

A command that reads a table whose columns may carry other names takes repeatable
``CANONICAL=SOURCE`` items. Every such option is parsed here, so they agree on the rules:

- only the first ``=`` splits (a source column's name may itself hold ``=``); blanks around
  either side are stripped; an item without ``=``, or with an empty side, is refused;
- the canonical name must be one the table has (the caller says which);
- a canonical name given twice with two different sources is refused, naming both (which
  one was meant cannot be guessed); given twice with the same source it is one mapping.

Errors are the caller's own :class:`~features.errors.InputError` subclass, so a purchase-log
mapping fails as a purchase-log error and an assignments mapping as an assignments error.
"""

from __future__ import annotations

from collections.abc import Sequence

from features.errors import InputError

__all__ = ["parse_column_map"]


def parse_column_map(
    items: Sequence[str],
    known: Sequence[str],
    *,
    what: str = "column mapping",
    error: type[InputError] = InputError,
) -> dict[str, str]:
    """``{canonical: source}`` from ``CANONICAL=SOURCE`` items (rules in the module doc).

    ``known`` lists the canonical names the table has; ``what`` starts every message
    (``"column mapping"``, ``"assignments mapping"``); ``error`` is the class raised.
    """
    mapping: dict[str, str] = {}
    for item in items:
        canonical, sep, source = item.partition("=")
        canonical, source = canonical.strip(), source.strip()
        if not sep or not canonical or not source:
            example = f"{known[0]}=SourceName" if known else "name=SourceName"
            raise error(f"malformed {what} {item!r}: expected CANONICAL=SOURCE, e.g. {example}")
        if canonical not in known:
            raise error(
                f"{what} {item!r}: unknown canonical column {canonical!r}; "
                f"known: {', '.join(known)}"
            )
        if canonical in mapping and mapping[canonical] != source:
            raise error(
                f"{what} {item!r}: {canonical!r} is already mapped to {mapping[canonical]!r}; "
                "give each canonical column once"
            )
        mapping[canonical] = source
    return mapping
