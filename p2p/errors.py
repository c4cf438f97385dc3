"""Errors raised by p2p/: one root (`P2PError`), specific subclasses for operating errors."""

from __future__ import annotations


class P2PError(Exception):
    """Root of every error raised by p2p/."""


class TransportNotRunning(P2PError):
    """The transport was used before `run()` reported ready, or after it stopped."""


class InvalidAddress(P2PError, ValueError):
    """A multiaddr is malformed or lacks the `/p2p/<peer id>` part a dial needs."""


class DialFailed(P2PError, ConnectionError):
    """A dial did not produce a secure connection (refused, unreachable, handshake failed)."""


class ListenFailed(P2PError, OSError):
    """A listen address could not be bound (port in use, address not on this host)."""


class MessageTooLarge(P2PError, ValueError):
    """A payload or frame exceeds the size limit agreed for its topic or protocol."""


class UnknownTopic(P2PError, KeyError):
    """Publishing or subscribing to a topic this transport was not configured for."""


class RequestFailed(P2PError):
    """A request/response exchange failed: no handler, stream reset, bad frame."""


class RequestTimeout(RequestFailed, TimeoutError):
    """A request/response exchange did not complete within its timeout."""


class PeerEOF(RequestFailed, EOFError):
    """The remote closed the stream before a whole frame arrived."""


class WaitTimeout(P2PError, TimeoutError):
    """A wait on the network's state (peers on a topic, a connection) timed out."""
