"""The one registry of message types: (type name, version) <-> body class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from node.wire.errors import WireError, WireReason
from node.wire.schema import check_supported

T = TypeVar("T", bound=type)


class Registry:
    """Maps wire (type, version) to a frozen body dataclass and back."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], type] = {}
        self._by_cls: dict[type, tuple[str, int]] = {}

    def register(self, type_name: str, version: int) -> Callable[[T], T]:
        def deco(cls: T) -> T:
            key = (type_name, version)
            if key in self._by_key or cls in self._by_cls:
                raise ValueError(f"message {key} registered twice")  # programmer error
            check_supported(cls)
            self._by_key[key] = cls
            self._by_cls[cls] = key
            return cls

        return deco

    def lookup(self, type_name: str, version: int) -> type:
        cls = self._by_key.get((type_name, version))
        if cls is not None:
            return cls
        if any(name == type_name for name, _ in self._by_key):
            raise WireError(WireReason.UNSUPPORTED_VERSION, f"{type_name} v{version}")
        raise WireError(WireReason.UNKNOWN_TYPE, type_name[:64])

    def key_of(self, cls: type) -> tuple[str, int]:
        try:
            return self._by_cls[cls]
        except KeyError:
            raise TypeError(f"{cls.__name__} is not a registered message") from None

    def __iter__(self) -> Iterator[tuple[tuple[str, int], type]]:
        return iter(sorted(self._by_key.items()))


REGISTRY = Registry()
message = REGISTRY.register
