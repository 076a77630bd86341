"""Dataclass <-> msgpack-ready structure conversion with type checks.

Every wire message is a dataclass. Decoding checks each field's type against
its annotation and names the exact field in the error ("inputs[0].shape[2]
must be an integer, got str"), so bad input never reaches a handler. Decoders
are compiled once per class because the infer request is on the hot path.

Supported annotations: int, float, str, bool, list[T], dict[str, Any],
Optional[T] (T | None), another wire dataclass, and Any.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

from .errors import ErrorCode, ProtocolError

Decoder = Callable[[Any, str], Any]  # (value, the path it sits at) -> decoded value
_Check = Callable[[Any], Any]        # the compiled form: no path until something is wrong
_MISSING = dataclasses.MISSING


class _Bad(Exception):
    """A value of the wrong type (or a missing field), raised by the compiled checks. The path
    is collected as it propagates, innermost part first, and formatted only then: a valid
    message, the common case, builds no path strings at all."""

    def __init__(self, expected: str, value: Any = None, missing: bool = False):
        self.expected = expected
        self.got = type(value).__name__
        self.missing = missing
        self.parts: list[str] = []

    def error(self, root: str) -> ProtocolError:
        path = root
        for part in reversed(self.parts):
            path = path + part if part.startswith("[") else (f"{path}.{part}" if path else part)
        if self.missing:
            return ProtocolError(ErrorCode.BAD_MESSAGE, f"missing field '{path}'")
        return ProtocolError(ErrorCode.BAD_MESSAGE, f"field '{path}' must be {self.expected}, got {self.got}")


def _int(value: Any) -> int:
    # bool is an int subclass in Python; on the wire it is a different type.
    if type(value) is not int:
        raise _Bad("an integer", value)
    return value


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _Bad("a number", value)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Bad("a string", value)
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Bad("a boolean", value)
    return value


def _any(value: Any) -> Any:
    return value


# Element checks that return the element itself: a list of them is checked in one pass and
# returned as it came (msgpack made it; nothing else holds it).
_SAME_TYPE = {_int: (int, "an integer"), _str: (str, "a string"), _bool: (bool, "a boolean")}


def _list_of(item: _Check) -> _Check:
    same = _SAME_TYPE.get(item)
    if same is not None:
        expected_type, expected = same

        def decode_same(value: Any) -> list:
            if type(value) is not list:
                raise _Bad("an array", value)
            for i, v in enumerate(value):
                if type(v) is not expected_type:
                    bad = _Bad(expected, v)
                    bad.parts.append(f"[{i}]")
                    raise bad
            return value

        return decode_same

    def decode(value: Any) -> list:
        if type(value) is not list:
            raise _Bad("an array", value)
        out: list = []
        try:
            for v in value:
                out.append(item(v))
        except _Bad as bad:
            bad.parts.append(f"[{len(out)}]")
            raise
        return out

    return decode


def _dict(value: Any) -> dict:
    if type(value) is not dict:
        raise _Bad("a map", value)
    return value


def _optional(inner: _Check) -> _Check:
    def decode(value: Any) -> Any:
        return None if value is None else inner(value)

    return decode


_SCALARS: dict[Any, _Check] = {int: _int, float: _float, str: _str, bool: _bool, Any: _any}
_checks: dict[type, _Check] = {}


def _check_for(tp: Any) -> _Check:
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return _list_of(_check_for(args[0]))
    if origin is dict or tp is dict:
        return _dict
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _optional(_check_for(rest[0]))
    if dataclasses.is_dataclass(tp):
        return _struct_check(tp)
    raise TypeError(f"no wire decoder for annotation {tp!r}")


def _struct_check(cls: type) -> _Check:
    cached = _checks.get(cls)
    if cached is not None:
        return cached

    def decode(value: Any) -> Any:  # replaced below once compiled
        return compiled(value)

    _checks[cls] = decode  # allows self-referencing structs
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        check = _check_for(hints[f.name])
        fields.append((f.name, None if check is _any else check, has_default))

    def compiled(value: Any) -> Any:
        if type(value) is not dict:
            raise _Bad("a map", value)
        kwargs = {}
        for name, check, has_default in fields:
            if name in value:
                if check is None:
                    kwargs[name] = value[name]
                    continue
                try:
                    kwargs[name] = check(value[name])
                except _Bad as bad:
                    bad.parts.append(name)
                    raise
            elif not has_default:
                missing = _Bad("", missing=True)
                missing.parts.append(name)
                raise missing
        # Unknown keys are ignored: a newer peer may add optional fields.
        return cls(**kwargs)

    _checks[cls] = compiled
    return compiled


_decoders: dict[type, Decoder] = {}


def struct_decoder(cls: type) -> Decoder:
    """The (cached) decoder that turns a msgpack map into an instance of cls; `path` names
    where the map sits, for the error ("result.outputs[0].shape[1] must be an integer")."""
    cached = _decoders.get(cls)
    if cached is not None:
        return cached
    check = _struct_check(cls)

    def decode(value: Any, path: str = "") -> Any:
        try:
            return check(value)
        except _Bad as bad:
            raise bad.error(path if bad.parts else (path or cls.__name__)) from None

    _decoders[cls] = decode
    return decode


Encoder = Callable[[Any], Any]
_encoders: dict[type, Encoder] = {}


def _identity(value: Any) -> Any:
    return value


def _encoder_for(tp: Any) -> Encoder:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        item = _encoder_for(args[0])
        if item is _identity:
            return lambda value: value if type(value) is list else list(value)
        return lambda value: [item(v) for v in value]
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _encoder_for(rest[0])
    if dataclasses.is_dataclass(tp):
        return struct_encoder(tp)
    if isinstance(tp, type) and issubclass(tp, str) and tp is not str:  # str-valued enums
        return lambda value: str(value)
    return _identity


def struct_encoder(cls: type) -> Encoder:
    """The (cached) encoder turning an instance of cls into a msgpack-ready map.

    None-valued fields are omitted: on the wire an absent optional field and a
    nil one mean the same, and omitting keeps messages small.
    """
    cached = _encoders.get(cls)
    if cached is not None:
        return cached

    def encode(obj: Any) -> dict:  # replaced below once compiled
        return compiled(obj)

    _encoders[cls] = encode
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _encoder_for(hints[f.name])) for f in dataclasses.fields(cls)]

    def compiled(obj: Any) -> dict:
        out = {}
        for name, enc in fields:
            value = getattr(obj, name)
            if value is not None:
                out[name] = value if enc is _identity else enc(value)
        return out

    _encoders[cls] = compiled
    return compiled


def to_wire(obj: Any) -> Any:
    """A wire dataclass as plain msgpack-ready data (see struct_encoder)."""
    return struct_encoder(type(obj))(obj)
