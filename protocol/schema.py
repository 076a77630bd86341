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

Decoder = Callable[[Any, str], Any]
_MISSING = dataclasses.MISSING


def _fail(path: str, expected: str, value: Any) -> typing.NoReturn:
    raise ProtocolError(
        ErrorCode.BAD_MESSAGE,
        f"field '{path}' must be {expected}, got {type(value).__name__}",
    )


def _int(value: Any, path: str) -> int:
    # bool is an int subclass in Python; on the wire it is a different type.
    if type(value) is not int:
        _fail(path, "an integer", value)
    return value


def _float(value: Any, path: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    _fail(path, "a number", value)


def _str(value: Any, path: str) -> str:
    if type(value) is not str:
        _fail(path, "a string", value)
    return value


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        _fail(path, "a boolean", value)
    return value


def _any(value: Any, path: str) -> Any:
    return value


def _list_of(item: Decoder) -> Decoder:
    def decode(value: Any, path: str) -> list:
        if type(value) is not list:
            _fail(path, "an array", value)
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return decode


def _dict(value: Any, path: str) -> dict:
    if type(value) is not dict:
        _fail(path, "a map", value)
    return value


def _optional(inner: Decoder) -> Decoder:
    def decode(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return decode


_SCALARS: dict[Any, Decoder] = {int: _int, float: _float, str: _str, bool: _bool, Any: _any}
_decoders: dict[type, Decoder] = {}


def _decoder_for(tp: Any) -> Decoder:
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return _list_of(_decoder_for(args[0]))
    if origin is dict or tp is dict:
        return _dict
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _optional(_decoder_for(rest[0]))
    if dataclasses.is_dataclass(tp):
        return struct_decoder(tp)
    raise TypeError(f"no wire decoder for annotation {tp!r}")


def struct_decoder(cls: type) -> Decoder:
    """The (cached) decoder that turns a msgpack map into an instance of cls."""
    cached = _decoders.get(cls)
    if cached is not None:
        return cached

    def decode(value: Any, path: str) -> Any:  # replaced below once compiled
        return compiled(value, path)

    _decoders[cls] = decode  # allows self-referencing structs
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        fields.append((f.name, _decoder_for(hints[f.name]), has_default))

    def compiled(value: Any, path: str) -> Any:
        if type(value) is not dict:
            _fail(path or cls.__name__, "a map", value)
        kwargs = {}
        prefix = f"{path}." if path else ""
        for name, decoder, has_default in fields:
            if name in value:
                kwargs[name] = decoder(value[name], prefix + name)
            elif not has_default:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"missing field '{prefix}{name}'")
        # Unknown keys are ignored: a newer peer may add optional fields.
        return cls(**kwargs)

    _decoders[cls] = compiled
    return compiled


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
