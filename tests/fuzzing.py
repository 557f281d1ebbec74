"""Budgets and value strategies shared by the fuzz tests.

The CI budget keeps each fuzz file well under a minute. `HYPOTHESIS_PROFILE=long` (the
profile conftest.py registers) multiplies every budget, for a run on demand:

    HYPOTHESIS_PROFILE=long .venv/bin/pytest -q tests/test_fuzz_protocol.py \
        tests/test_fuzz_arguments.py
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
LONG_FACTOR = 20


def budget(ci_examples: int, **extra: Any) -> settings:
    """Settings for a fuzz test: `ci_examples` in CI, LONG_FACTOR times that on demand."""
    return settings(
        max_examples=ci_examples * (LONG_FACTOR if LONG else 1),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **extra,
    )


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=24)
    | st.binary(max_size=24)
    | st.builds(_ext, st.integers(0, 127), st.binary(max_size=8))
    | st.builds(
        msgpack.Timestamp,
        st.integers(0, 2**34 - 1),
        st.integers(0, 999_999_999),
    )
)

# Any MessagePack value the server can decode (arrays as tuples, as it decodes them):
# nested arrays and maps, maps keyed by ints, bin and arrays.
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(
            st.text(max_size=8)
            | st.integers(-(2**63), 2**64 - 1)
            | st.binary(max_size=4)
            | st.tuples(st.integers(0, 9), st.text(max_size=3)),
            children,
            max_size=4,
        )
    ),
    max_leaves=16,
)
