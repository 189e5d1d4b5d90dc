"""Text columns of the log as Arrow: ids stripped, blanks missing, customer ids coded.

The canonical log keeps text as pandas ``str`` (Arrow-backed); these helpers convert a source
column once into Arrow text, apply the text rules (``""`` means missing; ids are stripped;
``123.0`` in a float column means id ``"123"``) and code customer ids against their sorted
distinct values. Both the loader (:mod:`features.log.purchase_log`) and the typed-rows path
(:mod:`features.log.log_arrays`) use them, so the two agree on every id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.log.row_order import is_identity

__all__ = [
    "arrow_text",
    "as_text",
    "blank_to_na",
    "clean_text",
    "code_customer_text",
    "code_customers",
    "empty_text",
    "str_from_arrow",
]

_STR = pd.api.types.pandas_dtype("str")
"""The canonical text dtype, resolved once (a dtype given by name is looked up per use)."""


def as_text(values: pd.Series, *, strip: bool) -> pd.Series:
    """Any id-like column as pandas ``str`` (missing stays missing, ``""`` counts as missing)."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool((finite == np.floor(finite)).all()):
            # 123.0 in a float column (an int column with holes) means id "123".
            values = values.astype("Int64")
    text = values.astype("str")
    if strip:
        text = text.str.strip()
    return blank_to_na(text)


def blank_to_na(text: pd.Series) -> pd.Series:
    blank = (text == "").to_numpy(dtype=bool, na_value=False)
    return text.mask(blank) if blank.any() else text


def _arrow(values: Any) -> pa.Array:  # a pandas (untyped) column or Arrow data
    """One contiguous Arrow array (pandas ``str`` columns hold Arrow data already)."""
    array = pa.array(values)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def arrow_text(values: pd.Series, *, strip: bool, dictionary_ok: bool = False) -> pa.Array:
    """An id-like column as Arrow text, like :func:`as_text` (``""`` becomes missing).

    With ``dictionary_ok`` a categorical column stays dictionary-encoded (cleaned per category).
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = clean_text(_arrow(values.cat.categories.astype("str").array), strip=strip)
        codes = values.cat.codes.to_numpy()
        encoded = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), categories)
        if dictionary_ok:
            return encoded
        return encoded.cast(categories.type)
    return clean_text(_arrow(_str_array(values)), strip=strip)


def _str_array(values: pd.Series) -> pd.api.extensions.ExtensionArray:
    """The values as a pandas ``str`` array (no conversion when they already are one)."""
    if _is_str(values.dtype):
        return values.array
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool((finite == np.floor(finite)).all()):
            values = values.astype("Int64")  # 123.0 in an int column with holes means "123"
    return values.astype(_STR).array


def _is_str(dtype: Any) -> bool:  # numpy or pandas (untyped) dtype
    return isinstance(dtype, pd.StringDtype) and dtype == _STR


def clean_text(text: pa.Array, *, strip: bool) -> pa.Array:
    if strip:
        text = pc.utf8_trim_whitespace(text)
    blank = pc.equal(text, empty_text(text.type))
    if not blank.true_count:
        return text
    return pc.if_else(blank.fill_null(False), pa.scalar(None, text.type), text)


# Compute calls given a Python str convert it to a scalar of the array's type on every call,
# which costs several times the comparison itself on request-sized arrays.
_EMPTY_TEXT = {kind: pa.scalar("", kind) for kind in (pa.string(), pa.large_string())}


def empty_text(kind: pa.DataType) -> pa.Scalar:
    """``""`` as an Arrow scalar of text type ``kind``."""
    empty = _EMPTY_TEXT.get(kind)
    return pa.scalar("", kind) if empty is None else empty


def str_from_arrow(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """Arrow text as a pandas ``str`` array: what ``pd.array(values, dtype="str")`` builds
    (the same large_string cast), without its dtype dispatch."""
    if not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.large_string())
    return pd.arrays.ArrowStringArray(values, dtype=_STR)


def code_customers(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes into the sorted, stripped customer ids (-1 where empty) and those ids."""
    return code_customer_text(_arrow(_str_array(values)))


def code_customer_text(text: pa.Array) -> tuple[np.ndarray, pd.Index]:
    """:func:`code_customers` of Arrow text (``features.log.log_arrays`` shares the rule).

    Stripping and sorting run on the distinct raw values only, not on every row.
    """
    encoded = pc.dictionary_encode(text)
    dictionary = encoded.dictionary
    stripped = pc.utf8_trim_whitespace(dictionary)
    if (
        stripped.equals(dictionary)  # a dictionary holds no nulls: equal values, element-wise
        and not pc.equal(dictionary, empty_text(dictionary.type)).true_count
    ):  # the usual case: already stripped, so already distinct; only sort
        by_value = pc.array_sort_indices(dictionary).to_numpy()
        distinct = dictionary if is_identity(by_value) else dictionary.take(by_value)
        lookup = np.empty(len(dictionary) + 1, dtype=np.int64)
        lookup[by_value] = np.arange(len(dictionary))
        lookup[-1] = -1
    else:
        distinct = pc.unique(stripped)
        distinct = distinct.take(pc.array_sort_indices(distinct))
        if len(distinct) and distinct[0].as_py() == "":  # "" sorts first; it means "missing"
            distinct = distinct[1:]
        entry_code = pc.index_in(stripped, value_set=distinct).fill_null(-1)
        lookup = np.append(entry_code.to_numpy(zero_copy_only=False).astype(np.int64), -1)
    indices = encoded.indices
    if indices.null_count:
        indices = indices.fill_null(len(lookup) - 1)
    codes = lookup[indices.to_numpy(zero_copy_only=False)]
    return codes, pd.Index(str_from_arrow(distinct), copy=False)
