"""pre/entry/post test vectors, generated from the spec-style tests in tests/ledger.

Layout: `tests/vectors/<op>/<case>/{config,pre,entry,post}.msgpack`, where `config` is the
ledger config (`LedgerConfig.to_bytes`), `pre`/`post` are canonical state arrays
(`ledger.accessors.compute_state_array`), `entry` is the encoded signed entry and `post` is
absent when the entry must be rejected. Signatures are on; proofs are checked by
`tests.ledger.helpers.FakeVerifier`.
Regenerate with `python -m tests.vectors`; `tests/ledger/test_vectors.py` replays them.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ledger.accessors import compute_state_array
from ledger.config import LedgerConfig
from ledger.containers import Entry, LedgerState
from ledger.encoding import encode_entry, pack

VECTORS_DIR = Path(__file__).resolve().parent


def load_cases() -> dict[str, list]:  # type: ignore[type-arg]
    """Import every tests/ledger/test_process_*.py so their cases register, then return them."""
    import tests.ledger as package
    from tests.ledger.spec import SPEC_CASES

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("test_process_"):
            importlib.import_module(f"tests.ledger.{info.name}")
    return SPEC_CASES


def generate() -> dict[str, bytes]:
    """Every vector file, by path relative to VECTORS_DIR."""
    files: dict[str, bytes] = {}
    for op, cases in sorted(load_cases().items()):
        for case in cases:
            name = case.__name__.removeprefix("test_")
            for part, value in case():
                path = f"{op}/{name}/{part}.msgpack"
                if isinstance(value, LedgerState):
                    files[path] = pack(compute_state_array(value))
                elif isinstance(value, Entry):
                    files[path] = encode_entry(value)
                elif isinstance(value, LedgerConfig):
                    files[path] = value.to_bytes()
    return files


def write(out: Path = VECTORS_DIR) -> int:
    files = generate()
    for rel, data in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return len(files)
