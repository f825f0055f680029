"""One workflow sweep job: every cell of one experiment on one model, exact or attribution.

The cells (:class:`patchbench.cell.Cell`) of a job share their model and task, so the model, the
prompt set and the clean cache load once (:func:`load_job`); each cell then runs and writes its
own frames (:func:`run_cell`): an exact cell its raw frame (the ``effects`` rule follows), an
attribution cell its raw frame and its effects with detection.
"""

from __future__ import annotations

import logging
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
    """The cells' model, the prompt set at ``prompts_path`` checked against its vocabulary, and the
    clean cache at ``cache_path`` on the model's device."""
    from safetensors.torch import load_file

    from patchbench.models import load_model, resolve_device

    if len({(c.model, c.task) for c in cells}) != 1:
        raise ValueError(
            f"one job runs the cells of one model and task, got {sorted(c.label for c in cells)}"
        )
    spec = cells[0].model_spec
    model = load_model(spec)
    prompts = PromptSet.from_parquet(prompts_path, d_vocab=model.cfg.d_vocab)
    clean = load_file(str(cache_path), device=resolve_device(spec.device))
    log.info("%s loaded once for %d %s cells of %s", spec.name, len(cells), cells[0].method, cells[0].task)
    return model, prompts, clean


def run_cell(
    cell: Cell, model, prompts: PromptSet, clean: dict[str, torch.Tensor], log: logging.Logger
) -> None:
    """Run one cell and write its frames to the cell's paths."""
    if cell.method == "exact":
        from patchbench.engine.sweep import run_sweep

        raw = run_sweep(
            model,
            prompts,
            cell.sweep_spec,
            clean,
            name=cell.model,
            logger=log,
            checkpoint_dir=cell.chunks_dir,
        )
        write_frame(raw, cell.raw_path)
        log.info("wrote %d rows to %s", len(raw), cell.raw_path)
        return
    from patchbench.attribution import run_attribution
    from patchbench.detection import detect
    from patchbench.metrics import effects

    raw = run_attribution(
        model,
        prompts,
        cell.sweep_spec,
        clean,
        metrics=cell.metrics,
        qk_fix=cell.qk_fix,
        name=cell.model,
        logger=log,
    )
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
