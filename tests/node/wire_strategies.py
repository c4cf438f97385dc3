"""Hypothesis strategies derived from the wire schema, so every registered message is covered."""

from __future__ import annotations

import typing
from typing import Any

from hypothesis import strategies as st

from node.wire.registry import REGISTRY
from node.wire.schema import (
    BYTES_LEN_MAX_DEFAULT,
    ITEMS_MAX_DEFAULT,
    STR_LEN_MAX_DEFAULT,
    Limits,
    field_specs,
)

_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cs",))


def strategy_for(kind: Any, limits: Limits) -> st.SearchStrategy[Any]:
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        return body_strategy(kind)
    if typing.get_origin(kind) is tuple:
        (item_kind, _) = typing.get_args(kind)
        size_max = ITEMS_MAX_DEFAULT if limits.length_max is None else limits.length_max
        item = strategy_for(item_kind, limits.item or Limits())
        return st.lists(item, min_size=limits.length_min, max_size=min(size_max, 8)).map(tuple)
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(min_value=limits.value_min, max_value=limits.value_max)
    if kind is str:
        size_max = STR_LEN_MAX_DEFAULT if limits.length_max is None else limits.length_max
        return st.text(_PRINTABLE, min_size=limits.length_min, max_size=size_max)
    if kind is bytes:
        size_max = BYTES_LEN_MAX_DEFAULT if limits.length_max is None else limits.length_max
        return st.binary(min_size=limits.length_min, max_size=min(size_max, 256))
    raise TypeError(kind)


def body_strategy(cls: type) -> st.SearchStrategy[Any]:
    fields = {s.name: strategy_for(s.kind, s.limits) for s in field_specs(cls)}

    def build(values: dict[str, Any]) -> Any:
        try:
            return cls(**values)
        except ValueError:
            return None  # breaks a cross-field rule; filtered out below

    return st.fixed_dictionaries(fields).map(build).filter(lambda v: v is not None)


def any_message() -> st.SearchStrategy[Any]:
    return st.one_of([body_strategy(cls) for _key, cls in REGISTRY])
