"""The holdout draw: which customers of a campaign get no offer, so its lift can be measured.

A deterministic ``holdout_share`` of customers, chosen by hashing ``"{campaign}:{customer_id}"``,
is held out: the same customer in the same campaign is always drawn alike, and each campaign
has its own control group.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_HASH_EACH_MAX = 64


def holdout_draw(customer_id: pd.Series | np.ndarray, campaign: str) -> np.ndarray:
    """Uniform [0, 1) per customer from blake2b("{campaign}:{customer_id}").

    blake2b is a fixed, published function of the bytes, so the draw is the same on every
    run, machine, Python and pandas version (unlike ``hash()`` or ``hash_pandas_object``,
    whose algorithms are implementation details). Draw = (big-endian 8-byte digest >> 11) / 2**53,
    an exact float in [0, 1).
    Beyond a request's few ids, only distinct ids are hashed (categorical codes or
    ``factorize``).
    """
    prefix = f"{campaign}:".encode()
    if isinstance(customer_id, pd.Series) and isinstance(customer_id.dtype, pd.CategoricalDtype):
        codes = customer_id.cat.codes.to_numpy()
        uniques = customer_id.cat.categories
    else:
        ids = np.asarray(customer_id, dtype=object)
        values = ids.tolist()
        if len(values) <= _HASH_EACH_MAX and all(type(u) is str for u in values):
            # a request's few ids: hashing each (repeats give equal draws) is cheaper
            # than factorize; missing ids keep factorize's handling below
            return _draws(prefix, values)
        codes, uniques = pd.factorize(ids)
    return _draws(prefix, [str(u) for u in uniques.tolist()])[codes]


def _draws(prefix: bytes, ids: list[str]) -> np.ndarray:
    """(big-endian 8-byte blake2b of prefix + id >> 11) / 2**53 for each id."""
    packed = b"".join(hashlib.blake2b(prefix + u.encode(), digest_size=8).digest() for u in ids)
    top53 = np.frombuffer(packed, dtype=">u8") >> np.uint64(11)
    return top53.astype(np.float64) / float(1 << 53)
