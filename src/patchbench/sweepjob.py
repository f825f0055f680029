"""One workflow sweep job: every cell of one experiment on one model, exact or attribution.

The cells (:class:`patchbench.cell.Cell`) of a job share their model and task, so the model, the
prompt set and the clean cache load once (:func:`load_job`), after the pre-flight checks of
:mod:`patchbench.preflight` (the model directory before loading; windows, heads, vocabulary,
context and named positions before any cell runs); each cell then runs and writes its own frames
(:func:`run_cell`): an exact cell its raw frame (the ``effects`` rule follows), an attribution
cell its raw frame and its effects with detection.

Nothing stale is trusted: the clean cache is used only if its fingerprint is this model's and
prompt set's (else it is recomputed here), an exact cell resumes only from chunks of the same
sweep (:mod:`patchbench.engine.checkpoint`), and an attribution cell reuses its previous raw
frame only when its fingerprint matches (so rerunning a job for one changed cell recomputes
only that cell). Every raw frame records its fingerprint in its metadata.

Each exact cell's log records its predicted time before it runs (:func:`patchbench.cost.jobs.predict_sweep`:
the FLOPs of its plan at this machine's cached rates; a job never measures rates) and its measured
time after it (``cost: predicted X s, measured Y s``; ``benchmarks/check_estimate.py`` reads them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from patchbench.cell import Cell
from patchbench.prompts import PromptSet
from patchbench.rawframe import write_frame

__all__ = ["load_job", "run_cell"]


def load_job(
    cells: Sequence[Cell], prompts_path: str | Path, cache_path: str | Path, log: logging.Logger
) -> tuple[object, PromptSet, dict[str, torch.Tensor]]:
    """The cells' model, the prompt set at ``prompts_path`` checked against it and the cells, and
    the clean cache at ``cache_path`` (recomputed when it is not this model's and prompts')."""
    from patchbench.engine.cache import required_hooks, usable_cache
    from patchbench.models import load_model
    from patchbench.preflight import check_job, check_model_dir

    if len({(c.model, c.task) for c in cells}) != 1:
        raise ValueError(
            f"one job runs the cells of one model and task, got {sorted(c.label for c in cells)}"
        )
    spec = cells[0].model_spec
    check_model_dir(spec)
    model = load_model(spec)
    prompts = PromptSet.from_parquet(prompts_path)
    check_job(cells, model, prompts)
    names = required_hooks(model, [c.sweep_spec for c in cells])
    clean = usable_cache(cache_path, model, prompts, names, spec.memory_budget_mb, log)
    log.info("%s loaded once for %d %s cells of %s", spec.name, len(cells), cells[0].method, cells[0].task)
    return model, prompts, clean


def run_cell(
    cell: Cell, model, prompts: PromptSet, clean: dict[str, torch.Tensor], log: logging.Logger
) -> None:
    """Run one cell and write its frames to the cell's paths."""
    if cell.method == "exact":
        from patchbench.cost.jobs import predict_sweep
        from patchbench.engine.sweep import run_sweep

        predicted = predict_sweep(model, prompts, cell.sweep_spec, check_identities=cell.check_identities)
        if predicted["seconds"] is None:
            log.info(
                "cost: %.3f GFLOP; no cached rates for this device, so no predicted time "
                "(measure them once on a quiet machine: patchbench estimate --configfile ... --measure)",
                predicted["gflop"],
            )
        else:
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in predicted["parts"].items() if k != "total")
            log.info(
                "cost: %.3f GFLOP, predicted %.2f s (%s) on %s",
                predicted["gflop"],
                predicted["seconds"],
                parts,
                predicted["rate"],
            )
        started = time.perf_counter()
        raw = run_sweep(
            model,
            prompts,
            cell.sweep_spec,
            clean,
            name=cell.model,
            logger=log,
            checkpoint_dir=cell.chunks_dir,
            check_identities=cell.check_identities,
        )
        took = time.perf_counter() - started
        if predicted["seconds"] is not None:
            log.info(
                "cost: predicted %.2f s, measured %.2f s (measured / predicted %.2f)",
                predicted["seconds"],
                took,
                took / predicted["seconds"],
            )
        else:
            log.info("cost: measured %.2f s", took)
        write_frame(raw, cell.raw_path)
        log.info("wrote %d rows to %s", len(raw), cell.raw_path)
        return
    from patchbench.detection import detect
    from patchbench.metrics import effects

    raw = _attribution_raw(cell, model, prompts, clean, log)
    write_frame(raw, cell.raw_path)
    eff = detect(effects(raw, metrics=cell.metrics), cell.detection_k)
    write_frame(eff, cell.effects_path)
    log.info(
        "attribution %s %s w%s: %d components x %d metrics; detected: %s",
        cell.corruption,
        cell.site,
        cell.window,
        eff["component"].nunique(),
        len(cell.metrics),
        eff.loc[eff["detected"] != "", ["metric", "component", "detected"]].to_dict("records"),
    )


def _attribution_raw(
    cell: Cell, model, prompts: PromptSet, clean: dict[str, torch.Tensor], log: logging.Logger
):
    """An attribution cell's raw frame: from its checkpoint when the fingerprint matches, else computed."""
    from patchbench.attribution import run_attribution
    from patchbench.engine.checkpoint import Checkpoint
    from patchbench.fingerprint import digest, model_digest, prompts_digest

    spec = cell.sweep_spec
    facts = {"metrics": list(cell.metrics), "qk_fix": cell.qk_fix, "spec": spec.to_dict()}
    fp = digest({"model": model_digest(model), "prompts": prompts_digest(prompts), **facts})
    ckpt = Checkpoint(cell.chunks_dir, fp, spec, {"method": "attribution"}, logger=log)
    raw = ckpt.load_frame("raw")
    if raw is not None:
        log.info(
            "attribution %s: reusing the raw frame of checkpoint %s (fingerprint %s)",
            cell.label,
            ckpt.dir,
            fp,
        )
        return raw
    raw = run_attribution(
        model,
        prompts,
        spec,
        clean,
        metrics=cell.metrics,
        qk_fix=cell.qk_fix,
        name=cell.model,
        logger=log,
    )
    raw.attrs["patchbench"]["fingerprint"] = fp
    ckpt.save_frame(raw, "raw")
    return raw
