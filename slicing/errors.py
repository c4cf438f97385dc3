"""Errors raised by slicing/: one root, a subclass per kind of failure a user can act on.

Append new subclasses at the end; keep messages one line and specific (file, tensor, slice).
"""

from __future__ import annotations


class SlicingError(Exception):
    """Root of every error raised by slicing/."""


class ModelError(SlicingError):
    """The model file is missing, not ONNX, truncated, or uses something we cannot slice."""


class InputError(SlicingError):
    """An input file is malformed or does not match the model's inputs (count, shape, type)."""


class BudgetError(SlicingError):
    """A budget cannot be met (or is itself invalid)."""


class BundleError(SlicingError):
    """A bundle is missing a file, has a hash mismatch, or its manifest is invalid."""


class ProofError(SlicingError):
    """Proving or verification failed to run (not: a proof that is simply invalid)."""


class LinkageError(SlicingError):
    """Boundary tensors of a chain of slice proofs do not agree (reason in `reason`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class WorkerError(ProofError):
    """A job in a spawned worker process failed (the child's one-line error is the message)."""


class WorkerCapExceeded(WorkerError):
    """A worker was killed for exceeding its time or memory cap; `kind` is "time" or "memory"."""

    def __init__(self, kind: str, elapsed_s: float, peak_rss_mb: float) -> None:
        self.kind = kind
        self.elapsed_s = elapsed_s
        self.peak_rss_mb = peak_rss_mb
        super().__init__(
            f"exceeded {kind} cap after {elapsed_s:.1f} s at peak RSS {peak_rss_mb:.0f} MB"
        )
