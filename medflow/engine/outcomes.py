"""After the items ran: settle shared outputs and remember what was written.

Both work on the small records workers returned; neither reads pixels.
"""

from __future__ import annotations

from typing import Any

from medflow.engine.plan import ItemPlan, _missing_outputs
from medflow.engine.prepare import Prepared, make_task
from medflow.engine.run import run_item
from medflow.engine.task import ItemResult
from medflow.hashing import ALGORITHM


def remember_outputs(prepared: Prepared, results: dict[str, ItemResult]) -> None:
    """Memoize each new output's digest (hashed from the bytes as they were written) with its size and mtime.

    A later plan then trusts an output only while it is unchanged on disk and its bytes hash to
    what the item's record says (see :func:`medflow.engine.plan._missing_outputs`).
    """
    for result in results.values():
        for output in result.outputs if result.status == "ok" else ():
            try:
                prepared.memo.remember(prepared.out_dir / output["path"], output[ALGORITHM])
            except OSError:
                pass  # gone already: the next plan rebuilds it


def resolve_shared_outputs(prepared: Prepared, results: dict[str, ItemResult]) -> list[ItemPlan]:
    """Instance items that wrote the same output path (one SOPInstanceUID in two files): keep one.

    The item with the smallest id keeps the path, whatever order the workers finished in;
    the others become ``duplicate`` (withheld, naming the kept item). When the file on disk
    is not the kept item's bytes (another wrote last), the kept item is written again.
    Returns the plans of the items whose result this changed (their entries are to be made again).
    """
    owners: dict[str, list[str]] = {}
    outputs_of: dict[str, list[dict[str, Any]]] = {}
    for plan in prepared.plans:
        if plan.item.kind != "instance":
            continue
        item_id = plan.item.item_id
        record = plan.record if plan.up_to_date else None
        if record is not None and record.get("status", "ok") == "ok":
            outputs_of[item_id] = record["outputs"]
        elif item_id in results and results[item_id].status == "ok":
            outputs_of[item_id] = results[item_id].outputs
        for out in outputs_of.get(item_id, []):
            owners.setdefault(out["path"], []).append(item_id)
    losers: dict[str, str] = {}
    for ids in owners.values():
        if len(ids) > 1:
            keep = min(ids)
            for other in ids:
                if other != keep:
                    losers[other] = keep
    if not losers:
        return []
    plans = {plan.item.item_id: plan for plan in prepared.plans}
    changed = []
    for loser, keep in sorted(losers.items()):
        plan = plans[loser]
        results[loser] = ItemResult(loser, "duplicate", error=f"same SOPInstanceUID as item {keep}: not written twice")
        plan.write_outputs, plan.start = True, 0  # its record is not reused as "ok"
        changed.append(plan)
    for keep in sorted(set(losers.values())):
        stale = _missing_outputs({"outputs": outputs_of[keep]}, prepared.out_dir, None)
        if stale:
            results[keep] = run_item(make_task(prepared, plans[keep]))
            plans[keep].write_outputs, plans[keep].start = True, 0
            changed.append(plans[keep])
    return changed

