"""Typed message bodies: frozen dataclasses <-> msgpack maps, with strict schema checks.

A body is a frozen dataclass whose fields are `int`, `bool`, `str`, `bytes`, `tuple[T, ...]` or
another body dataclass. Limits come from field metadata (`limit(...)`), with conservative defaults,
so every field has a maximum size. A body encodes as a msgpack map in field order; decoding demands
exactly that field set and those types (no bool for int, no str for bytes, no floats, no ext types).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from node.wire.errors import WireError, WireReason

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
STR_LEN_MAX_DEFAULT = 256
BYTES_LEN_MAX_DEFAULT = 1024
ITEMS_MAX_DEFAULT = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on one field. `length_max` bounds str/bytes length and tuple item count."""

    length_max: int | None = None
    length_min: int = 0
    value_min: int = 0
    value_max: int = INT_MAX
    item: Limits | None = None  # limits applied to each element of a tuple field


def limit(
    *,
    length_max: int | None = None,
    length_min: int = 0,
    value_min: int = 0,
    value_max: int = INT_MAX,
    item: Limits | None = None,
) -> Any:
    """A dataclass field carrying its limits: `x: int = limit(value_max=10)` (no default value)."""
    return dataclasses.field(
        metadata={
            "limits": Limits(
                length_max=length_max,
                length_min=length_min,
                value_min=value_min,
                value_max=value_max,
                item=item,
            )
        }
    )


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: Any  # a resolved type annotation
    limits: Limits


@cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The fields of a body class with resolved annotations and limits (cached per class)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        limits = f.metadata.get("limits", Limits())
        specs.append(FieldSpec(f.name, hints[f.name], limits))
    return tuple(specs)


def _is_body(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def to_wire(value: Any, kind: Any) -> Any:
    """A typed value as msgpack-ready builtins (dataclass -> ordered dict, tuple -> list)."""
    if _is_body(kind):
        return {s.name: to_wire(getattr(value, s.name), s.kind) for s in field_specs(kind)}
    origin = typing.get_origin(kind)
    if origin is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        return [to_wire(v, item_kind) for v in value]
    return value


def _check_len(path: str, n: int, limits: Limits, default_max: int) -> None:
    length_max = default_max if limits.length_max is None else limits.length_max
    if n > length_max:
        raise WireError(WireReason.FIELD_TOO_LARGE, f"{path}: length {n} > {length_max}")
    if n < limits.length_min:
        raise WireError(WireReason.INVALID_VALUE, f"{path}: length {n} < {limits.length_min}")


def from_wire(raw: Any, kind: Any, limits: Limits, path: str) -> Any:
    """Check `raw` (as msgpack decoded it) against `kind` and `limits`; the typed value."""
    if _is_body(kind):
        return body_from_wire(raw, kind, path)
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(raw, list):
            raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected a list")
        _check_len(path, len(raw), limits, ITEMS_MAX_DEFAULT)
        (item_kind, _ellipsis) = typing.get_args(kind)
        item_limits = limits.item or Limits()
        return tuple(
            from_wire(v, item_kind, item_limits, f"{path}[{i}]") for i, v in enumerate(raw)
        )
    if kind is bool:
        if not isinstance(raw, bool):
            raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected a bool")
        return raw
    if kind is int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected an int")
        if not limits.value_min <= raw <= limits.value_max:
            raise WireError(
                WireReason.VALUE_OUT_OF_RANGE,
                f"{path}: {raw} not in [{limits.value_min}, {limits.value_max}]",
            )
        return raw
    if kind is str:
        if not isinstance(raw, str):
            raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected a str")
        _check_len(path, len(raw), limits, STR_LEN_MAX_DEFAULT)
        return raw
    if kind is bytes:
        if not isinstance(raw, bytes):
            raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected bytes")
        _check_len(path, len(raw), limits, BYTES_LEN_MAX_DEFAULT)
        return raw
    raise TypeError(f"unsupported field type {kind!r} at {path}")  # programmer error


def body_from_wire(raw: Any, cls: type, path: str = "body") -> Any:
    """Decode a body map into an instance of `cls`; exact field set, strict types."""
    if not isinstance(raw, Mapping):
        raise WireError(WireReason.BAD_FIELD_TYPE, f"{path}: expected a map")
    specs = field_specs(cls)
    names = [s.name for s in specs]
    if list(raw.keys()) != names:
        if set(raw.keys()) == set(names):
            raise WireError(WireReason.NOT_CANONICAL, f"{path}: fields out of order")
        missing = sorted(set(names) - set(raw.keys()))
        extra = sorted(repr(k) for k in set(raw.keys()) - set(names))
        raise WireError(WireReason.BAD_FIELDS, f"{path}: missing {missing}, extra {extra}")
    values = {s.name: from_wire(raw[s.name], s.kind, s.limits, f"{path}.{s.name}") for s in specs}
    try:
        return cls(**values)
    except ValueError as exc:  # __post_init__ rules of the message class
        raise WireError(WireReason.INVALID_VALUE, f"{path}: {exc}") from None


def check_supported(cls: type) -> None:
    """Fail fast (at registration) on a body class using an unsupported field type."""
    for s in field_specs(cls):
        _check_kind(s.kind, f"{cls.__name__}.{s.name}")


def _check_kind(kind: Any, where: str) -> None:
    if kind in (int, bool, str, bytes) or _is_body(kind):
        if _is_body(kind):
            check_supported(kind)
        return
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            _check_kind(args[0], where)
            return
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        raise TypeError(f"{where}: optional/union fields are not supported; use a sentinel")
    raise TypeError(f"{where}: unsupported field type {kind!r}")
