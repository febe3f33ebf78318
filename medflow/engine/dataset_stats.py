"""The first pass of steps that need statistics over the whole dataset (e.g. a dataset-wide z-score).

Each item runs up to the step (reusing the cache) and returns a small accumulator record; the
parent merges them, caches the result under a key of every item entering the step, and the
plan is made again with the statistics in the keys.
"""

from __future__ import annotations

import dataclasses

from medflow.engine.execute import execute
from medflow.engine.plan import (
    ItemPlan,
    chain_template,
    item_links,
    keeps_stored_values,
    needs_dataset_stats,
    resume_index,
)
from medflow.engine.prepare import Prepared, make_task, stats_inputs_key


def compute_dataset_stats(prepared: Prepared, workers: int, backend: str, address: str | None) -> list[str]:
    """First pass: accumulate each dataset-statistics step over every item, in step order.

    Each item runs up to the step (reusing the cache) and returns a small accumulator
    record; the parent merges them. Returns notes (e.g. items left out of the statistics).
    """
    notes = []
    steps = list(prepared.loaded.recipe.steps)
    for index, params in enumerate(steps):
        if not needs_dataset_stats(params) or index in prepared.dataset_stats:
            continue
        tasks = []
        keep = keeps_stored_values(steps, prepared.loaded.recipe.engine.cache_stored_values)
        template = chain_template(prepared.reader_params, steps[:index], prepared.dataset_stats, keep_stored=keep)
        for item in prepared.items:
            links = item_links(item, prepared.reader_params, steps[:index], prepared.dataset_stats, template)
            base = make_task(prepared, ItemPlan(item, links, "", 0, True))
            tasks.append(dataclasses.replace(base, steps=steps[:index], writers=[], expect=None,
                                             start=resume_index(prepared.cache, links), accumulate=params))
        total, left_out = None, 0
        for result in execute(tasks, workers, backend=backend, address=address):
            if result.status != "ok" or result.stats is None:
                left_out += 1
                continue
            accumulator = type(params.new_accumulator()).from_json(result.stats)
            if total is None:
                total = accumulator
            else:
                total.merge(accumulator)
        if total is None:
            notes.append(f"step {index + 1} '{params.step}': no item could be read for the dataset statistics")
            break
        stats = total.result()
        prepared.cache.put_record(stats_inputs_key(prepared, index, prepared.dataset_stats), {"stats": stats})
        prepared.dataset_stats[index] = stats
        if left_out:
            notes.append(f"step {index + 1} '{params.step}': {left_out} item(s) failed and are not in the statistics")
    return notes

