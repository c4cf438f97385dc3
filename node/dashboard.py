"""The terminal dashboard: pure `render_*(snapshot) -> RenderableType` over a frozen snapshot.

Whoever drives it (a node's control API poller, the simnet supervisor) builds a `Snapshot` and
calls `render(snapshot)`; nothing here does I/O or reads a clock, so every frame is testable. Use
it with `rich.live.Live(auto_refresh=False)` and refresh from your own loop: rich's auto refresh
renders from another thread while the state changes underneath it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {
    "up": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "down": "red",
    "killed": "red",
    "pending": "dim",
    "planned": "dim",
    "proving": "yellow",
    "proven": "cyan",
    "verified": "green",
    "unproven": "magenta",
    "failed": "red",
    "rejected": "red",
}


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    peer_id: str
    state: str
    peers: int = 0
    adverts_seen: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    rejected: int = 0
    rss_mb: float = 0.0
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class ProviderRow:
    """A prover known from its signed capacity advert."""

    peer_id: str
    connected: bool
    free_slots: int
    price_per_slice: int
    age_s: float


@dataclass(frozen=True, slots=True)
class SliceRow:
    index: int
    state: str
    logrows: int = 0
    rows: int = 0
    prover: str = ""
    prove_s: float = 0.0
    peak_rss_mb: float = 0.0
    proof_bytes: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    name: str
    state_root: str
    entries: int = 0
    pending: int = 0
    supply_ok: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    title: str
    phase: str
    elapsed_s: float
    seed: int | None = None
    nodes: tuple[NodeRow, ...] = ()
    providers: tuple[ProviderRow, ...] = ()
    slices: tuple[SliceRow, ...] = ()
    ledger: tuple[LedgerRow, ...] = ()
    events: tuple[str, ...] = ()
    figures: tuple[tuple[str, str], ...] = field(default=())


def _state(text: str) -> Text:
    return Text(text, style=_STATE_STYLE.get(text, ""))


def _short(peer_id: str, keep: int = 10) -> str:
    return peer_id if len(peer_id) <= keep + 2 else f"…{peer_id[-keep:]}"


def render_header(s: Snapshot) -> RenderableType:
    up = sum(1 for n in s.nodes if n.state == "up")
    done = sum(1 for r in s.slices if r.state == "verified")
    seed = f"   seed {s.seed}" if s.seed is not None else ""
    line = Text.assemble(
        (s.title, "bold"),
        f"   phase: {s.phase}   t={s.elapsed_s:6.1f}s{seed}   ",
        (f"nodes up {up}/{len(s.nodes)}", "green" if up == len(s.nodes) else "yellow"),
        f"   slices verified {done}/{len(s.slices)}",
    )
    return Panel(line, padding=(0, 1))


def render_nodes(s: Snapshot) -> RenderableType:
    table = Table(title="mesh", expand=True, title_justify="left")
    columns = ("node", "peer id", "state", "peers", "adverts", "in", "out", "rej", "RSS MB", "rst")
    for col in columns:
        left = col in ("node", "peer id", "state")
        table.add_column(col, justify="left" if left else "right")
    for n in s.nodes:
        table.add_row(
            n.name,
            _short(n.peer_id),
            _state(n.state),
            str(n.peers),
            str(n.adverts_seen),
            str(n.msgs_in),
            str(n.msgs_out),
            Text(str(n.rejected), style="red" if n.rejected else ""),
            f"{n.rss_mb:.0f}",
            str(n.restarts),
        )
    return table


def render_providers(s: Snapshot) -> RenderableType:
    table = Table(title="provers (from signed adverts)", expand=True, title_justify="left")
    for col in ("peer id", "link", "free slots", "price / slice", "advert age"):
        table.add_column(col, justify="left" if col in ("peer id", "link") else "right")
    for p in s.providers:
        table.add_row(
            _short(p.peer_id, 16),
            Text("direct", style="green") if p.connected else Text("via mesh", style="dim"),
            str(p.free_slots),
            str(p.price_per_slice),
            Text(f"{p.age_s:.0f} s", style="red" if p.age_s > 60 else ""),
        )
    return table


def render_slices(s: Snapshot) -> RenderableType:
    table = Table(title="slices and proofs", expand=True, title_justify="left")
    columns = ("#", "state", "logrows", "rows", "prover", "prove s", "peak MB", "proof KB", "note")
    for col in columns:
        table.add_column(col, justify="left" if col in ("state", "prover", "note") else "right")
    for r in s.slices:
        table.add_row(
            str(r.index),
            _state(r.state),
            str(r.logrows or ""),
            f"{r.rows:,}" if r.rows else "",
            _short(r.prover, 8) if r.prover else "",
            f"{r.prove_s:.1f}" if r.prove_s else "",
            f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "",
            f"{r.proof_bytes / 1024:.1f}" if r.proof_bytes else "",
            r.note,
        )
    return table


def render_ledger(s: Snapshot) -> RenderableType:
    table = Table(title="ledger replicas", expand=True, title_justify="left")
    for col in ("replica", "state root", "entries", "pending", "supply"):
        table.add_column(col)
    roots = {r.state_root for r in s.ledger}
    for r in s.ledger:
        agree = len(roots) == 1
        table.add_row(
            r.name,
            Text(r.state_root[:16], style="green" if agree else "red"),
            str(r.entries),
            str(r.pending),
            Text("ok" if r.supply_ok else "BROKEN", style="green" if r.supply_ok else "red"),
        )
    return table


def render_figures(s: Snapshot) -> RenderableType:
    table = Table(title="figures", expand=True, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in s.figures:
        table.add_row(name, value)
    return table


def render_events(s: Snapshot, lines_max: int = 8) -> RenderableType:
    text = Text("\n".join(s.events[-lines_max:]) or "(no events yet)", style="dim")
    return Panel(text, title="events", title_align="left")


def render(s: Snapshot) -> RenderableType:
    """One full frame: header, mesh, slices, ledger, figures, recent events."""
    parts: list[RenderableType] = [render_header(s)]
    if s.nodes:
        parts.append(render_nodes(s))
    if s.providers:
        parts.append(render_providers(s))
    if s.slices:
        parts.append(render_slices(s))
    if s.ledger:
        parts.append(render_ledger(s))
    if s.figures:
        parts.append(render_figures(s))
    parts.append(render_events(s))
    return Group(*parts)
