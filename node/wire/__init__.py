"""The wire format: signed, strictly decoded msgpack envelopes around typed message bodies."""

from node.wire import fetch_messages as fetch_messages
from node.wire import ledger_messages as ledger_messages
from node.wire import market_messages as market_messages
from node.wire import messages as messages
from node.wire.envelope import (
    ENVELOPE_BYTES_MAX as ENVELOPE_BYTES_MAX,
)
from node.wire.envelope import (
    SKEW_MS_DEFAULT as SKEW_MS_DEFAULT,
)
from node.wire.envelope import (
    Envelope as Envelope,
)
from node.wire.envelope import (
    ReplayGuard as ReplayGuard,
)
from node.wire.envelope import (
    decode_envelope as decode_envelope,
)
from node.wire.envelope import (
    encode_envelope as encode_envelope,
)
from node.wire.errors import WireError as WireError
from node.wire.errors import WireReason as WireReason
from node.wire.registry import REGISTRY as REGISTRY
from node.wire.registry import Registry as Registry
from node.wire.registry import message as message
