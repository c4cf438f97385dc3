"""Structured reference strings (KZG SRS) for EZKL: one per logrows, generated locally or given by
file.

`gen_srs` makes an SRS with no download, but its toxic waste is not destroyed: it is for development
only (we warn). An operator can pass a ceremony file instead (`--srs PATH`), used for every logrows
it covers. Generated files live in a cache directory keyed by logrows and are written atomically;
the sha256 of each SRS used is recorded in the bundle manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from slicing.errors import BundleError
from slicing.worker import run_job

log = logging.getLogger(__name__)
DEV_SRS_WARNING = (
    "using a locally generated SRS: fine for development, NOT secure (toxic waste kept)"
)
SRS_TIMEOUT_S = 900.0
LOGROWS_MAX = 26


@dataclass(frozen=True, slots=True)
class SrsInfo:
    path: Path
    logrows: int
    sha256: str
    source: str  # "gen_srs" (dev, insecure) or "file"


def compute_file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get_cache_dir(cache_dir: Path | None = None) -> Path:
    """The cache root: the argument, else $DSPERSE_CACHE_DIR, else ~/.cache/dsperse-node."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("DSPERSE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dsperse-node"


def get_srs(logrows: int, cache_dir: Path, srs_file: Path | None = None) -> SrsInfo:
    """The SRS for `logrows`: the given file, or the cached one, generated (once) when missing."""
    if not 1 <= logrows <= LOGROWS_MAX:
        raise BundleError(f"logrows {logrows} outside 1..{LOGROWS_MAX}")
    if srs_file is not None:
        if not Path(srs_file).is_file():
            raise BundleError(f"SRS file not found: {srs_file}")
        return SrsInfo(Path(srs_file), logrows, compute_file_sha256(Path(srs_file)), "file")
    path = cache_dir / "srs" / f"kzg{logrows}.srs"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        log.warning(DEV_SRS_WARNING)
        run_job("gen_srs", {"srs_path": str(tmp), "logrows": logrows}, timeout_s=SRS_TIMEOUT_S)
        tmp.replace(path)  # atomic: a half-written SRS never has the final name
    return SrsInfo(path, logrows, compute_file_sha256(path), "gen_srs")
