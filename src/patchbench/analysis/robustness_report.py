"""Robustness reports: per experiment the tables, a one-page summary and recommendations; the report's front page.

:func:`analyse` runs :mod:`patchbench.analysis.robustness` on one experiment's grid and returns a
:class:`RobustnessResult`; :func:`write_experiment` writes it to the files
:meth:`patchbench.layout.Layout.robustness_files` names (by kind):

- ``verdicts``  one row per component: verdict, where it is detected, explanations
- ``cells``     one row per component x cell: effect, CI, detection probability, status
- ``pairs``     one row per pair of cells: Jaccard of detections, Spearman of effects
- ``circuit``   precision / recall against the known circuit (header only when none)
- ``markdown``  the one-page summary: recommendations, findings, agreement, circuit
- ``json``      the headline facts the report's front page lists
- ``png``       the figure (:mod:`patchbench.analysis.robustness_figure`), when asked for

:func:`recommendations` turns the numbers into the paper's §6 advice for this model and task;
:mod:`patchbench.analysis.report_page` writes the Snakemake report's front page from the JSON files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from patchbench.analysis import robustness as rb
from patchbench.analysis.labels import metric_short
from patchbench.layout import ROBUSTNESS_FIGURES, ROBUSTNESS_TABLES
from patchbench.metrics import METRICS

__all__ = [
    "RobustnessResult",
    "analyse",
    "recommendations",
    "write_experiment",
]

log = logging.getLogger(__name__)

#: The Markdown page tabulates the findings' effects per cell up to this many cells (the CSV holds all).
MAX_MD_CELLS = 8


@dataclass(frozen=True)
class RobustnessResult:
    """Everything the robustness analysis says about one experiment on one model."""

    experiment: str
    grid: rb.GridDraws
    cells: pd.DataFrame  # cell_summary
    verdicts: pd.DataFrame
    pairs: pd.DataFrame
    explained: pd.DataFrame
    circuit: pd.DataFrame | None
    circuit_source: str

    @property
    def info(self) -> dict:
        c = self.grid.cells.iloc[0]
        s = self.grid.settings
        return {
            "experiment": self.experiment, "model": str(c["model"]), "task": str(c["task"]), "site": str(c["site"]),
            "positions": str(c["positions"]), "n_prompts": int(self.grid.cells["n_prompts"].max()),
            "n_components": len(self.grid.comps), "n_cells": len(self.grid.cells), "n_boot": s.n_boot,
            "ci": s.ci, "seed": s.seed, "ci_method": str(c["ci_method"]),
        }  # fmt: skip


def analyse(experiment: str, grid: rb.GridDraws, circuit: rb.KnownCircuit | None = None) -> RobustnessResult:
    """Run every analysis of :mod:`patchbench.analysis.robustness` on one experiment's grid."""
    cells = rb.cell_summary(grid)
    explained = rb.explanations(grid, cells)
    task = str(grid.cells["task"].iloc[0])
    scores, source = None, ""
    if circuit is not None and circuit.applies_to(task):
        try:
            scores, source = rb.score_circuit(grid, circuit), circuit.source
        except rb.RobustnessError as err:
            log.warning("known circuit %s not scored: %s", circuit.source, err)
    elif circuit is not None:
        log.info(
            "known circuit %s is for tasks %s, not %s: not scored",
            circuit.source,
            sorted(circuit.tasks),
            task,
        )
    used = circuit if scores is not None else None
    return RobustnessResult(
        experiment,
        grid,
        cells,
        rb.verdicts(cells, explained, used),
        rb.pairwise_agreement(grid),
        explained,
        scores,
        source,
    )


# ----------------------------------------------------------------------------- recommendations
def _names(df: pd.DataFrame, limit: int | None = None) -> str:
    names = list(df["component"])
    more = len(names) - limit if limit is not None and len(names) > limit else 0
    shown = names[:limit] if limit is not None else names
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _detected_under(res: RobustnessResult, comp: str, axis: str) -> set:
    c = res.cells
    rows = c[(c["component"] == comp) & c["status"].isin(["positive", "negative"])]
    return set(rows[axis])


def _leaning(found: pd.DataFrame, axis: str) -> str:
    """Unstable components whose detections at the full data would depend on ``axis`` (a sentence or '')."""
    lean = found[(found["verdict"] == "unstable") & found["point_verdict"].str.contains(axis)]
    if not len(lean):
        return ""
    return (
        f" At the full data, without their uncertainty, {len(lean)} unstable component(s) would depend on the "
        f"{axis}: {_names(lean, 8)}."
    )


def recommendations(res: RobustnessResult) -> list[str]:
    """The paper's §6 advice, instantiated with this experiment's findings (plain-text bullets)."""
    v = res.verdicts
    found = v[v["verdict"] != "not detected"]
    out: list[str] = []
    n = res.info["n_prompts"]
    counts = found["verdict"].value_counts()
    robust = found[found["verdict"] == "robust"]
    out.append(
        f"{len(found)} of {len(v)} components are detected somewhere in the grid of {len(res.grid.cells)} cells: "
        f"{len(robust)} robust, {int(counts.filter(like='depends').sum())} depend on the setting, "
        f"{int(counts.get('unstable', 0))} unstable."
        + (f" Robust: {_names(robust, 8)}." if len(robust) else " None is robust across the grid.")
    )
    n_comp, k = len(res.grid.comps), res.grid.settings.k
    if np.sqrt(max(n_comp - 1, 0)) <= k:
        out.append(
            f"Detection is impossible here: with {n_comp} component(s) no effect can lie more than "
            f"√(n−1) = {np.sqrt(max(n_comp - 1, 0)):.2f} SD from their mean, not more than {k:g}; read the "
            "effects and their intervals instead (the cells table and the figure)."
        )
    ex = res.explained
    corr_dep = found[found["axes"].str.contains("corruption")]
    if res.grid.cells["corruption"].nunique() > 1:
        if len(corr_dep):
            only = {c: _detected_under(res, c, "corruption") for c in corr_dep["component"]}
            str_only = [c for c, s in only.items() if s == {"STR"}]
            gn_only = [c for c, s in only.items() if s == {"GN"}]
            parts = [f"{len(corr_dep)} finding(s) depend on the corruption"]
            if str_only:
                parts.append(f"STR only: {', '.join(str_only[:8])}")
            if gn_only:
                parts.append(f"GN only: {', '.join(gn_only[:8])}")
            sec3 = ex[ex["section"] == "3"]
            tail = (
                f" §3 applies to {', '.join(sorted(set(sec3['component']))[:8])} (detected under GN, by no metric under STR)."
                if len(sec3)
                else ""
            )
            out.append(
                "Corruption: " + "; ".join(parts) + "." + tail + _leaning(found, "corruption")
                + " The paper recommends STR (in-distribution counterfactuals) and reading GN-only findings with care."
            )  # fmt: skip
        else:
            out.append(
                "Corruption: STR and GN agree on every reliable detection." + _leaning(found, "corruption")
            )
    metric_dep = found[found["axes"].str.contains("metric")]
    sec42 = ex[ex["section"] == "4.2"]
    if len(sec42):
        p_star = res.grid.cells.set_index(["corruption", "metric", "window"])["p_answer_corrupted"]
        where = sorted({(r.corruption, r.window) for r in sec42.itertuples()})
        floors = "; ".join(f"{c} w{w}: P_*(answer) = {p_star[(c, 'prob', w)]:.3g}" for c, w in where)
        out.append(
            f"Metric: probability misses the negative component(s) {', '.join(sorted(set(sec42['component'])))} "
            f"that another metric detects, because the corrupted run leaves almost no probability to lose ({floors}; "
            "§4.2). Use logit difference, as the paper recommends." + _leaning(found, "metric")
        )
    elif len(metric_dep):
        by = []
        for c in metric_dep["component"][:8]:
            ms = sorted(_detected_under(res, c, "metric"), key=lambda m: list(METRICS).index(m))
            by.append(f"{c} ({'/'.join(metric_short(m) for m in ms) or 'none reliably'})")
        out.append(
            f"Metric: {len(metric_dep)} finding(s) depend on the metric: {', '.join(by)}." + _leaning(found, "metric")
            + " The paper recommends logit difference (it controls for components that boost every answer; "
            "probability misses negative ones)."
        )  # fmt: skip
    elif res.grid.cells["metric"].nunique() > 1:
        out.append("Metric: the metrics agree on every reliable detection." + _leaning(found, "metric"))
    if res.grid.cells["window"].nunique() > 1:
        win_dep = found[found["axes"].str.contains("window")]
        sec5 = ex[ex["section"] == "5"]
        text = (
            f"Window: {len(win_dep)} finding(s) depend on the window size ({_names(win_dep, 8)})."
            if len(win_dep)
            else "Window: no reliable finding depends on the window size."
        ) + _leaning(found, "window")
        if len(sec5):
            text += (
                f" {len(sec5)} sliding-window peak(s) exceed the summed single layers with the interval above 1 (§5): "
                "read them as joint effects of the window."
            )
        out.append(
            text
            + " The paper recommends single-layer patching first, windows only when single layers are weak."
        )
    unstable = found[found["verdict"] == "unstable"]
    if len(unstable):
        out.append(
            f"Uncertainty: {len(unstable)} component(s) are detected in between "
            f"{res.grid.settings.unstable:.0%} and {res.grid.settings.robust:.0%} of the bootstrap resamples in some cell "
            f"({_names(unstable, 8)}): with {n} prompts their detection is a coin toss; report them as tentative or "
            "add prompts."
        )
    if res.circuit is not None and len(res.circuit):
        allc = res.circuit[res.circuit["class"] == "all"].copy()
        allc["f1"] = 2 * allc["precision"] * allc["recall"] / (allc["precision"] + allc["recall"])
        best = allc.sort_values(["f1", "recall"], ascending=False, na_position="last").iloc[0]
        worst = allc.sort_values(["f1", "recall"], ascending=True, na_position="first").iloc[0]
        cls = res.circuit[res.circuit["class"] != "all"]
        never = sorted(set(cls["class"]) - set(cls.loc[cls["recall"] > 0, "class"]))
        out.append(
            f"Known circuit ({Path(res.circuit_source).name}, {int(best['size'])} members here): {best['cell']} agrees "
            f"best (recall {best['recall']:.2f} [{best['recall_low']:.2f}, {best['recall_high']:.2f}], precision "
            f"{best['precision']:.2f}), {worst['cell']} least (recall {worst['recall']:.2f}, precision "
            f"{worst['precision']:.2f})." + (f" No cell finds any of: {', '.join(never)}." if never else "")
        )
    if len(res.pairs):
        low = res.pairs.sort_values(["jaccard", "spearman"]).iloc[0]
        out.append(
            f"Agreement: the least agreeing cells are {low['cell_a']} and {low['cell_b']} (Jaccard {low['jaccard']:.2f} "
            f"[{low['jaccard_low']:.2f}, {low['jaccard_high']:.2f}], Spearman {low['spearman']:.2f}); "
            f"median Jaccard over all pairs {res.pairs['jaccard'].median():.2f}."
        )
    return out


# ----------------------------------------------------------------------------- files
def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) if len(df) else "_(none)_"


def _round(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    return df.round({c: digits for c in df.columns if df[c].dtype.kind == "f"})


def markdown_page(res: RobustnessResult) -> str:
    """The one-page summary of one experiment (Markdown)."""
    i = res.info
    s = res.grid.settings
    method = (
        f"{s.n_boot} bootstrap resamples of the prompts (seed {s.seed}; the normalisation recomputed per resample)"
        if i["ci_method"] == "bootstrap"
        else f"a normal approximation from the effects frames ({s.n_boot} draws, seed {s.seed}; no raw frames)"
    )
    lines = [
        f"# Localization robustness: {i['experiment']} on {i['model']}",
        "",
        f"Task {i['task']}, site {i['site']}, positions {i['positions']}; {i['n_prompts']} prompts, "
        f"{i['n_components']} components, {i['n_cells']} cells (corruption x metric x window). Intervals: "
        f"{s.ci:.0%} percentile, from {method}. Detection: the paper's rule (more than {s.k:g} SD from the mean "
        f"over the plot's components; with {i['n_components']} components no effect can lie more than "
        f"√(n−1) = {np.sqrt(max(i['n_components'] - 1, 0)):.2f} SD from the mean); detection probability = share of "
        "resamples that detect it with that sign. "
        f"Reliable: >= {s.robust:g}; uncertain: between {s.unstable:g} and {s.robust:g}.",
        "",
        "## Recommendations",
        "",
        *[f"- {r}" for r in recommendations(res)],
        "",
        "## Findings",
        "",
        "Components detected with probability above "
        f"{s.unstable:g} in some cell; cells as corruption/metric(/window), sign and detection probability. "
        "`point_verdict`: what the detections at the full data say, without their uncertainty.",
        "",
    ]
    found = res.verdicts[res.verdicts["verdict"] != "not detected"]
    cols = [
        "component",
        "verdict",
        "point_verdict",
        "detected_in",
        "uncertain_in",
        *(["classes"] if res.circuit is not None else []),
    ]
    lines += [_md_table(found[cols]), ""]
    if len(found):
        lines += [f"## Effects of the findings ({s.ci:.0%} CI)", ""]
        if res.cells["cell"].nunique() <= MAX_MD_CELLS:
            sub = res.cells[res.cells["component"].isin(found["component"])]
            text = [
                f"{e:.3g} [{lo:.3g}, {hi:.3g}]"
                for e, lo, hi in zip(sub["effect"], sub["ci_low"], sub["ci_high"], strict=True)
            ]
            wide = sub.assign(text=text).pivot(index="component", columns="cell", values="text")
            wide = wide.loc[found["component"], list(dict.fromkeys(sub["cell"]))]
            lines += [_md_table(wide.reset_index()), ""]
        else:
            lines += [f"{res.cells['cell'].nunique()} cells: see the `_cells.csv` table and the figure.", ""]
    if len(res.explained):
        lines += ["## The paper's explanations", "", *[f"- {t}" for t in res.explained["text"]], ""]
    lines += ["## Agreement between cells", ""]
    pairs = res.pairs.sort_values(["jaccard", "spearman"])
    shown = pairs if len(pairs) <= 28 else pairs.head(15)
    if len(pairs) > len(shown):
        lines += [
            f"The {len(shown)} least agreeing of {len(pairs)} pairs (all in the `_pairs.csv` table).",
            "",
        ]
    pcols = ["cell_a", "cell_b", "n_a", "n_b", "n_both", "jaccard", "jaccard_low", "jaccard_high", "spearman",
             "spearman_low", "spearman_high"]  # fmt: skip
    lines += [_md_table(_round(shown[pcols], 2)), ""]
    if res.circuit is not None:
        lines += [f"## Known circuit ({res.circuit_source})", ""]
        c = res.circuit
        wide = c.pivot_table(index="cell", columns="class", values="recall", sort=False).round(2)
        allc = c[c["class"] == "all"].set_index("cell")
        wide.insert(0, "precision", allc["precision"].round(2))
        wide.insert(
            1,
            "precision CI",
            [
                f"[{a:.2f}, {b:.2f}]"
                for a, b in zip(allc["precision_low"], allc["precision_high"], strict=True)
            ],
        )
        wide.insert(
            3,
            "recall CI",
            [f"[{a:.2f}, {b:.2f}]" for a, b in zip(allc["recall_low"], allc["recall_high"], strict=True)],
        )
        wide = wide.rename(columns={"all": "recall (all)"})
        lines += ["Recall per class (either sign), precision against the whole circuit.", "",
                  wide.reset_index().to_markdown(index=False, disable_numparse=True), ""]  # fmt: skip
    return "\n".join(lines)


def write_experiment(res: RobustnessResult, files: Mapping[str, str | Path]) -> dict[str, Path]:
    """Write the experiment's tables, page and JSON, and its figure when ``files`` names one; returns the paths.

    ``files``: kind -> path, every kind of :data:`patchbench.layout.ROBUSTNESS_TABLES` and, for the
    figure, those of :data:`~patchbench.layout.ROBUSTNESS_FIGURES` (PNG).
    """
    missing = sorted(set(ROBUSTNESS_TABLES) - set(files))
    if missing:
        raise ValueError(f"robustness files {missing} have no path (Layout.robustness_files names them all)")
    paths = {k: Path(p) for k, p in files.items()}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    res.verdicts.to_csv(paths["verdicts"], index=False)
    res.cells.to_csv(paths["cells"], index=False)
    res.pairs.to_csv(paths["pairs"], index=False)
    circuit = res.circuit if res.circuit is not None else pd.DataFrame(columns=["cell", *rb.AXES, "class"])
    circuit.to_csv(paths["circuit"], index=False)
    paths["markdown"].write_text(markdown_page(res) + "\n")
    found = res.verdicts[res.verdicts["verdict"] != "not detected"]
    facts = {
        **res.info,
        "counts": {str(k): int(v) for k, v in found["verdict"].value_counts().items()},
        "robust": found.loc[found["verdict"] == "robust", "component"].tolist(),
        "fragile": [
            {
                "component": r.component,
                "verdict": r.verdict,
                "detected_in": r.detected_in,
                "uncertain_in": r.uncertain_in,
                "explanation": r.explanation,
            }
            for r in found[found["verdict"] != "robust"].itertuples()
        ],  # fmt: skip
        "recommendations": recommendations(res),
        "files": {k: p.name for k, p in paths.items() if k in ROBUSTNESS_TABLES},
    }
    figs = [paths[k] for k in ROBUSTNESS_FIGURES if k in paths]
    if figs:
        from patchbench.analysis.robustness_figure import robustness_figure  # matplotlib: only when drawn

        i = res.info
        robustness_figure(
            res.cells, res.verdicts, figs, title=f"{i['experiment']} on {i['model']} ({i['task']})"
        )
        facts["files"]["figure"] = figs[0].name
    paths["json"].write_text(json.dumps(facts, indent=1, default=_json_default) + "\n")
    log.info("robustness of %s on %s: %s", res.experiment, res.info["model"], facts["counts"])
    return paths


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")
