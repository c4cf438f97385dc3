"""node: the composition root: identity, wire format, protocol core, trio runtime and the CLI."""

__version__ = "0.1.0"
