"""The notebook API: the corruption x metric x window grid of one model and prompt set in one call.

    import patchbench
    df = patchbench.grid("models/organisms/organism-facts", "examples/countries.csv",
                         sites="mlp", positions="subject", windows=[1, 3], intervals=True)

:func:`grid` is :func:`sweeps` (one exact sweep per cell with :func:`patchbench.engine.sweep.run_sweep`,
all cells sharing one clean cache) followed by :func:`effects_table` (every metric with
:func:`patchbench.metrics.effects`, the paper's 2-SD rule with :func:`patchbench.detection.detect`,
bootstrap intervals over prompts with :func:`patchbench.analysis.robustness.bootstrap_grid`).
:func:`robustness` is the workflow's robustness report of one experiment's sweeps. There is no
second engine here: each cell is a :class:`patchbench.sites.SweepSpec`, and the corruptions, sites,
positions, windows and directions a grid takes are whatever SweepSpec accepts (its errors name
them); the defaults are the config schema's (``experiment.*``).

The returned frame is tidy, one row per (component, metric) of each cell (the effects frame of
``docs/architecture.md``: ``model, task, corruption, site, window, method, component, layer, head,
position, positions, metric, effect, effect_sd, n_prompts, detected``), or per (prompt, component,
metric) with ``per_prompt=True`` (a ``prompt`` column; ``detected`` is then the dataset mean's).
``intervals=True`` adds ``ci_low``, ``ci_high`` (percentile bootstrap interval at
``robustness.ci``), ``p_positive``, ``p_negative`` (shares of resamples whose 2-SD rule detects the
component with that sign) and ``status`` (:func:`patchbench.analysis.robustness.cell_summary`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from patchbench.config import default
from patchbench.errors import InputError
from patchbench.prompts import PromptSet

__all__ = ["effects_table", "grid", "load", "prompt_set", "robustness", "specs", "sweeps"]

log = logging.getLogger(__name__)

#: Identity columns shared by effects frames and robustness cell summaries (their merge keys).
_KEYS = ("model", "task", "site", "positions", "corruption", "metric", "window", "component")
#: Columns the bootstrap adds to the effects rows.
INTERVAL_COLUMNS = ("ci_low", "ci_high", "p_positive", "p_negative", "status")


def load(model: Any, *, dtype: str | None = None, device: str | None = None):
    """``model`` as a :class:`patchbench.lm.LM`: a loaded one as it is, else a hub name or a local
    model directory (toy or ``save_pretrained``; checked first) loaded as the CLI loads ``--model``."""
    from patchbench.lm import LM

    if isinstance(model, LM):
        return model
    from patchbench.models import ModelSpec, load_model
    from patchbench.preflight import check_model_dir

    opts = {"dtype": dtype or default("model.dtype"), "device": device or default("model.device")}
    spec = ModelSpec.from_name(str(model), **opts)
    check_model_dir(spec)
    return load_model(spec)


def prompt_set(prompts: Any, model) -> PromptSet:
    """``prompts`` as a PromptSet: one as it is; a ``.parquet`` written by the workflow; a ``.csv`` /
    ``.jsonl`` file of prompt pairs or a list of their records, tokenised with ``model``'s tokenizer
    (:meth:`PromptSet.from_file`, :meth:`PromptSet.from_records`)."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (list, tuple)):
        return PromptSet.from_records(prompts, model.tokenizer)
    path = Path(prompts)
    if path.suffix == ".parquet":
        return PromptSet.from_parquet(path)
    return PromptSet.from_file(path, model.tokenizer)


def _tuple(value: Any, key: str) -> tuple:
    """A grid axis as a tuple: ``None`` -> the schema default of ``key``; a single value -> one item."""
    value = default(key) if value is None else value
    return (value,) if isinstance(value, (str, int)) else tuple(value)


def _direction_axis(directions: Any) -> tuple[dict[str, Any], ...]:
    """The SweepSpec keyword of each direction; only denoising while SweepSpec has no direction field."""
    fields = {f.name for f in dataclasses.fields(_spec_type())}
    if "direction" in fields:
        return tuple({"direction": d} for d in _tuple(directions, "experiment.directions"))
    asked = (
        ("denoising",)
        if directions is None
        else (directions,)
        if isinstance(directions, str)
        else tuple(directions)
    )
    if set(asked) != {"denoising"}:
        raise InputError.of(
            f"directions={list(asked)}", "this patchbench patches in one direction only", "use ('denoising',)"
        )
    return ({},)


def _spec_type():
    from patchbench.sites import SweepSpec

    return SweepSpec


def _accepts(site: str, **kw: Any) -> bool:
    try:
        _spec_type()(corruption=default("experiment.corruptions")[0], site=site, **kw)
    except ValueError:
        return False
    return True


def specs(
    *,
    sites: Any,
    corruptions: Any = None,
    windows: Any = None,
    directions: Any = None,
    positions: Any = None,
    heads: Sequence[Sequence[int]] | None = None,
    noise: Any = None,
    memory_budget_mb: int | None = None,
) -> list:
    """The grid's cells as SweepSpecs (corruption x site x position x window x direction). Windows
    and heads go to the sites that take them (the others run at window 1 with every head); a value
    no site takes, or one SweepSpec refuses, is an InputError naming the cell."""
    from patchbench.corruption import NoiseSpec

    sites_, windows_ = _tuple(sites, "experiment.site"), _tuple(windows, "experiment.windows")
    heads_ = None if heads is None else tuple(tuple(int(x) for x in h) for h in heads)
    noise_ = noise if isinstance(noise, NoiseSpec) else NoiseSpec(**(noise or {}))
    budget = default("model.memory_budget_mb") if memory_budget_mb is None else memory_budget_mb
    per_site = {s: [w for w in windows_ if _accepts(s, window=w)] or [1] for s in sites_}
    unused = [w for w in windows_ if not any(w in ws for ws in per_site.values())]
    if unused:
        raise InputError.of(f"windows={list(windows_)}", f"no site of {list(sites_)} takes windows {unused}",
                            "give windows to a site that has them (sites.WINDOW_SITES) or leave them out")  # fmt: skip
    with_heads = {s: heads_ is not None and _accepts(s, heads=heads_) for s in sites_}
    if heads_ is not None and not any(with_heads.values()):
        raise InputError.of(
            f"heads={list(heads_)}", f"no site of {list(sites_)} takes heads", "leave heads out"
        )
    out = []
    for c, s, p, d in itertools.product(
        _tuple(corruptions, "experiment.corruptions"), sites_, _tuple(positions, "experiment.position"),
        _direction_axis(directions),
    ):  # fmt: skip
        for w in per_site[s]:
            try:
                out.append(_spec_type()(corruption=c, site=s, position=p, window=w,
                                        heads=heads_ if with_heads[s] else None, noise=noise_,
                                        memory_budget_mb=budget, **d))  # fmt: skip
            except ValueError as err:
                raise InputError(f"grid cell {c} / {s} / {p} / window {w}: {err}") from None
    return out


def sweeps(
    model: Any,
    prompts: Any,
    *,
    sites: Any,
    corruptions: Any = None,
    windows: Any = None,
    directions: Any = None,
    positions: Any = None,
    heads: Sequence[Sequence[int]] | None = None,
    noise: Any = None,
    memory_budget_mb: int | None = None,
    name: str | None = None,
    progress: bool = True,
    check_identities: bool = True,
    filter_correct: bool | None = None,
) -> list[pd.DataFrame]:
    """The raw frame of every cell of the grid (:func:`specs`), each an exact sweep of
    :func:`patchbench.engine.sweep.run_sweep` on one clean cache. The prompts are those the model
    answers correctly unless ``filter_correct=False`` (default: the schema's ``filter_correct``, as
    the workflow does; :func:`patchbench.filtering.filter_correct` logs the accuracy). Every cell is
    checked against the model and prompts (:func:`patchbench.preflight.check_spec`) before the first
    one runs."""
    from patchbench.engine.cache import clean_cache
    from patchbench.engine.sweep import run_sweep
    from patchbench.preflight import check_spec

    lm = load(model)
    ps = prompt_set(prompts, lm)
    if default("filter_correct") if filter_correct is None else filter_correct:
        from patchbench.filtering import filter_correct as keep_correct

        ps, stats = keep_correct(lm, ps)
        if not len(ps):
            raise InputError.of(
                f"prompts of task {ps.task}", f"the model answers none of the {stats['n_total']} correctly",
                "check the model and answers, or pass filter_correct=False to patch them all",
            )  # fmt: skip
    cells = specs(sites=sites, corruptions=corruptions, windows=windows, directions=directions,
                  positions=positions, heads=heads, noise=noise, memory_budget_mb=memory_budget_mb)  # fmt: skip
    for spec in cells:
        check_spec(spec, lm, ps, f"grid cell {spec.label}")
    clean = clean_cache(lm, ps, cells, memory_budget_mb=max(s.memory_budget_mb for s in cells))
    label = name or lm.name
    raws = []
    for spec in cells:
        log.info("grid: %s on %s (%d prompts)", spec.label, label, len(ps))
        raws.append(
            run_sweep(lm, ps, spec, clean, name=label, progress=progress, check_identities=check_identities)
        )
    return raws


def _metrics(raw: pd.DataFrame, metrics: Sequence[str] | None) -> tuple[str, ...]:
    from patchbench.metrics import metrics_for
    from patchbench.preflight import check_metrics
    from patchbench.rawframe import metadata

    return metrics_for(str(metadata(raw)["task"])) if metrics is None else check_metrics(metrics, "metrics")


def _experiments(raws: Sequence[pd.DataFrame]) -> dict[tuple, list[int]]:
    """The raw frames by experiment (model, task, site, position mode, direction): what one
    robustness grid compares."""
    from patchbench.rawframe import metadata, position_mode

    groups: dict[tuple, list[int]] = {}
    for i, raw in enumerate(raws):
        meta = metadata(raw)
        key = (
            meta.get("model"),
            meta.get("task"),
            meta.get("site"),
            position_mode(meta),
            meta.get("direction"),
        )
        groups.setdefault(key, []).append(i)
    return groups


def _intervals(raws: Sequence[pd.DataFrame], metrics: Sequence[str] | None, settings) -> pd.DataFrame:
    from patchbench.analysis.robustness import bootstrap_grid, cell_summary

    parts = []
    for idx in _experiments(raws).values():
        group = [raws[i] for i in idx]
        summary = cell_summary(bootstrap_grid(group, settings, metrics=_metrics(group[0], metrics)))
        parts.append(summary[[*_KEYS, *INTERVAL_COLUMNS]])
    return pd.concat(parts, ignore_index=True)


def effects_table(
    raws: Sequence[pd.DataFrame],
    *,
    metrics: Sequence[str] | None = None,
    detect: bool = True,
    intervals: bool = False,
    per_prompt: bool = False,
    settings: Any = None,
) -> pd.DataFrame:
    """Raw frames as one tidy effects frame (see the module docstring); ``metrics`` default to the
    task's (:func:`patchbench.metrics.metrics_for`), ``settings`` (a
    :class:`~patchbench.analysis.robustness.RobustnessSettings`) to the schema's ``robustness``."""
    from patchbench.analysis.labels import corruption_label
    from patchbench.analysis.robustness import RobustnessSettings
    from patchbench.detection import detect as detect_
    from patchbench.metrics import effects

    if not raws:
        raise InputError.of("raws", "no raw frames", "pass the frames patchbench.sweeps returned")
    frames = []
    for raw in raws:
        ms = _metrics(raw, metrics)
        mean = effects(raw, metrics=ms)
        if detect:
            mean = detect_(mean)
        if per_prompt:
            rows = effects(raw, metrics=ms, per_prompt=True).drop(columns="detected")
            keys = ["component", "metric"]
            rows = rows.merge(mean[[*keys, "detected"]], on=keys, how="left", validate="many_to_one")
            frames.append(rows)
        else:
            frames.append(mean)
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {}
    if intervals:
        settings = settings if settings is not None else RobustnessSettings()
        boot = _intervals(raws, metrics, settings)
        out["_corruption"] = out["corruption"].map(corruption_label)
        boot = boot.rename(columns={"corruption": "_corruption"})
        keys = [k if k != "corruption" else "_corruption" for k in _KEYS]
        out = out.merge(boot, on=keys, how="left", validate="many_to_one").drop(columns="_corruption")
    return out


def grid(
    model: Any,
    prompts: Any,
    *,
    sites: Any,
    corruptions: Any = None,
    windows: Any = None,
    metrics: Sequence[str] | None = None,
    directions: Any = None,
    positions: Any = None,
    heads: Sequence[Sequence[int]] | None = None,
    detect: bool = True,
    intervals: bool = False,
    per_prompt: bool = False,
    noise: Any = None,
    memory_budget_mb: int | None = None,
    settings: Any = None,
    name: str | None = None,
    progress: bool = True,
    filter_correct: bool | None = None,
) -> pd.DataFrame:
    """The corruption x metric x window grid of ``model`` on ``prompts`` as one tidy effects frame.

    ``model``: a loaded :class:`patchbench.lm.LM`, a hub name or a local model directory.
    ``prompts``: a PromptSet, a workflow ``.parquet``, a ``.csv`` / ``.jsonl`` file of prompt pairs
    or a list of their records (:mod:`patchbench.prompt_pairs`). Grid axes (one value or several):
    ``sites`` (required), ``corruptions``, ``positions`` (``all``, ``each`` or a named position),
    ``windows`` (sites that take them), ``directions``, ``heads`` (``[[layer, head], ...]``, head
    sites); defaults are the config schema's. ``noise``: a :class:`patchbench.corruption.NoiseSpec`
    or its fields (GN). ``filter_correct``: patch only the prompts the model answers (default: the
    schema's, true). See the module docstring for the frame and ``intervals``.
    """
    raws = sweeps(model, prompts, sites=sites, corruptions=corruptions, windows=windows, directions=directions,
                  positions=positions, heads=heads, noise=noise, memory_budget_mb=memory_budget_mb, name=name,
                  progress=progress, filter_correct=filter_correct)  # fmt: skip
    return effects_table(
        raws, metrics=metrics, detect=detect, intervals=intervals, per_prompt=per_prompt, settings=settings
    )


def robustness(
    raws: Sequence[pd.DataFrame],
    experiment: str,
    *,
    circuit: Any = None,
    settings: Any = None,
    metrics: Sequence[str] | None = None,
    out: str | Path | None = None,
):
    """The workflow's localization-robustness analysis of one experiment's raw frames (one model,
    task, site and position mode; :func:`patchbench.analysis.robustness_report.analyse`), as a
    ``RobustnessResult`` (``.verdicts``, ``.cells``, ``.pairs``; ``markdown_page(result)`` is its
    one-page summary). ``circuit``: a known-circuit JSON path or a ``KnownCircuit``. With ``out``
    (a directory) its tables, summary and figure are written there too, named as the CLI names them."""
    from patchbench.analysis.robustness import (
        KnownCircuit,
        RobustnessSettings,
        bootstrap_grid,
        read_known_circuit,
    )
    from patchbench.analysis.robustness_report import analyse, write_experiment
    from patchbench.layout import Layout, check_name

    check_name(experiment, "experiment name")
    settings = settings if settings is not None else RobustnessSettings()
    grid_ = bootstrap_grid(
        list(raws), settings, metrics=None if metrics is None else _metrics(raws[0], metrics)
    )
    task = str(grid_.cells["task"].iloc[0])
    known = (
        circuit if circuit is None or isinstance(circuit, KnownCircuit) else read_known_circuit(circuit, task)
    )
    result = analyse(experiment, grid_, known)
    if out is not None:
        names = Layout.robustness_names(experiment, str(grid_.cells["model"].iloc[0]))
        write_experiment(result, {k: Path(out) / n for k, n in names.items()})
    return result
