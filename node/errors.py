"""Errors raised by node/: one root, specific subclasses for operating errors users can act on."""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error raised by node/."""


class IdentityError(NodeError):
    """The node identity key is missing, unreadable, malformed or would be overwritten."""


class ConfigError(NodeError, ValueError):
    """A config file or command-line value is invalid."""


class DataDirError(NodeError):
    """The data directory is missing or not initialised."""
