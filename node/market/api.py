"""Control-API routes of the market: submit a job, follow it (`submit` uses these).

`POST /jobs` {"bundle", "input", "max_price", "deadline_s", "out"} prepares the job at this node
(the quantised chain runs here once, so every slice's input is known), escrows the fee and
announces it; `GET /job?id=HEX` and `GET /jobs` report progress.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from node.control import ControlError, ControlRequest
from node.market import events as ev
from node.market.service import JobExtras, MarketService, compute_job_id
from node.market.work import MarketError

MAX_PRICE_DEFAULT = 1_000
DEADLINE_S_DEFAULT = 600.0
DEADLINE_S_MAX = 24 * 3600.0
BID_WINDOW_MS = 2_000
JOBS_LISTED_MAX = 100


def build_market_routes(market: MarketService) -> dict[str, Any]:
    async def submit(request: ControlRequest) -> dict[str, Any]:
        body = request.body
        bundle, input_path, out = body.get("bundle"), body.get("input"), body.get("out")
        if not isinstance(bundle, str) or not isinstance(input_path, str):
            raise ControlError(422, "`bundle` and `input` must be paths")
        if out is not None and not isinstance(out, str):
            raise ControlError(422, "`out` must be a path")
        max_price = body.get("max_price") or MAX_PRICE_DEFAULT
        deadline_s = body.get("deadline_s") or DEADLINE_S_DEFAULT
        if type(max_price) is not int or not 0 <= max_price < 2**53:
            raise ControlError(422, "`max_price` must be a non-negative integer")
        if type(deadline_s) not in (int, float) or not 0 < deadline_s <= DEADLINE_S_MAX:
            raise ControlError(422, f"`deadline_s` must be in (0, {DEADLINE_S_MAX:.0f}]")
        slice_deadline_s = body.get("slice_deadline_s") or 0
        if type(slice_deadline_s) not in (int, float) or not 0 <= slice_deadline_s <= deadline_s:
            raise ControlError(422, "`slice_deadline_s` must be in [0, deadline_s]")
        if not market.replica.writable:
            raise ControlError(409, "the ledger replica is not writable yet (syncing)")
        try:
            prepared = await market.work.prepare_job(Path(bundle), Path(input_path), max_price)
        except MarketError as exc:
            raise ControlError(422, str(exc)) from None
        bundle_obj, tasks, values, outputs, commitment = prepared
        now = market._now_ms()
        job_id = compute_job_id(
            market.identity.public_key, bytes.fromhex(bundle_obj.bundle_id), commitment,
            time.time_ns(),
        )  # fmt: skip
        bundle_id = bytes.fromhex(bundle_obj.bundle_id)
        out_dir = Path(out) if out else None
        bundle_dir = market.work.blobs.bundle_dir(bundle_id)
        market.extras[job_id] = JobExtras(
            bundle_dir, Path(input_path), out_dir, values, outputs, commitment
        )
        deadline_ms = now + int(deadline_s * 1000)
        submit = ev.Submit(
            job_id, bundle_id, tasks, deadline_ms, BID_WINDOW_MS, int(slice_deadline_s * 1000)
        )
        market.dispatch(submit)
        job = market.core.jobs[job_id]
        return {"job_id": job_id.hex(), "slices": len(tasks), "escrow": job.escrow}

    def job(request: ControlRequest) -> dict[str, Any]:
        text = request.query.get("id", "")
        try:
            job_id = bytes.fromhex(text)
        except ValueError:
            job_id = b""
        if job_id not in market.core.jobs:
            raise ControlError(404, f"no job {text[:64]!r} at this node")
        return market.job_doc(job_id)

    def jobs(request: ControlRequest) -> dict[str, Any]:
        ids = list(market.core.jobs)[-JOBS_LISTED_MAX:]
        return {"jobs": [market.job_doc(j) for j in ids], "market": market.statistics()}

    return {"POST /jobs": submit, "GET /job": job, "GET /jobs": jobs}
