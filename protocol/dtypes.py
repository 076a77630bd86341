"""The wire dtype table: names on the wire, numpy dtypes and item sizes.

Wire names are numpy's canonical names so that a C++ client can map them with
a static table (SPEC.md lists it) and Python needs no translation.
"""

from __future__ import annotations

import numpy as np

# name -> item size in bytes. Order is the SPEC.md table order.
WIRE_DTYPES: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "float64": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "bool": 1,
}

_NUMPY = {name: np.dtype(name) for name in WIRE_DTYPES}


def is_wire_dtype(name: object) -> bool:
    return isinstance(name, str) and name in WIRE_DTYPES


def to_numpy(name: str) -> np.dtype:
    try:
        return _NUMPY[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}; the protocol knows: {', '.join(WIRE_DTYPES)}"
        ) from None


def from_numpy(dtype: np.dtype | type) -> str:
    name = np.dtype(dtype).name
    if name not in WIRE_DTYPES:
        raise ValueError(
            f"numpy dtype {name} has no wire name; the protocol knows: {', '.join(WIRE_DTYPES)}"
        )
    return name


def itemsize(name: str) -> int:
    return WIRE_DTYPES[name]
