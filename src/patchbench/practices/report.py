"""The practice benchmark's files: one table per task (CSV and Markdown), its figure, and the summary of the advice.

``practices_<task>.csv`` has one row per practice (:data:`ID_COLUMNS`, then every score with its
interval and seed SD, :func:`patchbench.practices.scores.score_names`), undefined practices
included with their reason; ``practices_<task>.md`` lists the defined ones by F1 and the undefined
ones grouped by reason; ``practices_<task>.png`` draws each practice's F1 with its interval, one
panel per axis; ``practices_summary.md`` gives each recommendation's comparisons and verdicts
(:mod:`patchbench.practices.advice`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchbench.analysis.labels import corruption_label, metric_short
from patchbench.atomic import write_text
from patchbench.practices.advice import RECOMMENDATIONS, VERDICT_RULE
from patchbench.practices.grid import AXES

__all__ = [
    "ID_COLUMNS",
    "METHOD_LABELS",
    "RULE_LABELS",
    "practice_figure",
    "summary_markdown",
    "table_markdown",
]

#: The identity columns of a practice table, in order (scores follow).
ID_COLUMNS: tuple[str, ...] = (
    "task", "experiment", "organism", "site", "position", "circuit", "circuit_size", "corruption", "direction",
    "metric", "window", "method", "rule", "defined", "reason", "n_seeds", "seeds", "n_prompts",
)  # fmt: skip
#: How tables name methods and rules.
METHOD_LABELS: dict[str, str] = {
    "exact": "exact",
    "attribution": "attribution",
    "attribution_qk": "attribution+QK",
}
RULE_LABELS: dict[str, str] = {"two_sd": "2 SD", "top_k": "top-k", "permutation": "permutation"}


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(row: Mapping[str, Any], name: str) -> str:
    v = row.get(name, np.nan)
    if not np.isfinite(v):
        return "–"
    return f"{_fmt(v)} [{_fmt(row[f'{name}_low'])}, {_fmt(row[f'{name}_high'])}]"


def _practice(row: Mapping[str, Any]) -> str:
    return (
        f"{corruption_label(row['corruption'])} {row['direction']} {metric_short(row['metric'])} w{row['window']} "
        f"{METHOD_LABELS.get(row['method'], row['method'])} {RULE_LABELS.get(row['rule'], row['rule'])}"
    )


def table_markdown(table: pd.DataFrame, task: str, header: Sequence[str] = ()) -> str:
    """The Markdown page of one task's practice table (defined practices by F1, then the undefined)."""
    lines = [f"# Practice benchmark: {task}", "", *header, ""]
    ok = table[table["defined"]].sort_values(
        ["f1", "auroc"], ascending=False, kind="stable", na_position="last"
    )
    classes = [
        c for c in table.columns if c.startswith("recall_") and not c.endswith(("_low", "_high", "_sd"))
    ]
    cols = ["#", "organism", "corruption", "direction", "metric", "window", "method", "rule", "F1 [95 %]",
            "precision", "recall", "neg. recall", "AUROC", "F1 seed SD", *(c[len("recall_"):] for c in classes),
            "found"]  # fmt: skip
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, r in enumerate(ok.to_dict("records"), 1):
        cells = [str(i), r["organism"], corruption_label(r["corruption"]), r["direction"], metric_short(r["metric"]),
                 str(r["window"]), METHOD_LABELS.get(r["method"], r["method"]), RULE_LABELS.get(r["rule"], r["rule"]),
                 _ci(r, "f1"), _ci(r, "precision"), _ci(r, "recall"), _ci(r, "neg_recall"), _ci(r, "auroc"),
                 _fmt(r["f1_seed_sd"]), *(_fmt(r[c]) for c in classes), r["found"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    missing = table[~table["defined"]]
    if len(missing):
        lines += ["", f"## Not defined ({len(missing)} practices)", ""]
        lines += ["| organism | corruption | direction | window | method | metrics x rules | reason |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        keys = ["organism", "corruption", "direction", "window", "method", "reason"]
        for k, g in missing.groupby(keys, sort=False):
            org, corr, d, w, m, reason = k
            n = f"{g['metric'].nunique()} x {g['rule'].nunique()}"
            lines.append(
                f"| {org} | {corruption_label(corr)} | {d} | {w} | {METHOD_LABELS.get(m, m)} | {n} | {reason} |"
            )
    return "\n".join(lines) + "\n"


def practice_figure(table: pd.DataFrame, outputs: Sequence[str | Path], title: str) -> list[Path]:
    """Each defined practice's F1 with its interval, one panel per axis (its values on the x axis; the
    practices of a value jittered side by side, their mean as a black bar)."""
    from matplotlib.lines import Line2D

    from patchbench.analysis.style import figure_legend, new_figure, save_figure

    ok = table[table["defined"] & np.isfinite(table["f1"])].reset_index(drop=True)
    axes_shown = [a for a in AXES if ok[a].nunique() > 1] or list(AXES[:1])
    fig, axes = new_figure(1, len(axes_shown), panel=(2.4, 2.8), sharey=True)
    rng = np.random.default_rng(0)
    organisms = list(dict.fromkeys(ok["organism"]))
    colours = {o: f"C{i}" for i, o in enumerate(organisms)}
    for ax, axis in zip(axes[0], axes_shown, strict=True):
        values = list(dict.fromkeys(ok[axis]))
        for j, v in enumerate(values):
            g = ok[ok[axis] == v]
            x = j + rng.uniform(-0.3, 0.3, len(g))
            for org, sub in g.groupby("organism", sort=False):
                xs = x[g.index.get_indexer(sub.index)]
                err = np.vstack([sub["f1"] - sub["f1_low"], sub["f1_high"] - sub["f1"]]).clip(min=0)
                ax.errorbar(xs, sub["f1"], yerr=err, fmt="o", ms=2, lw=0.3, alpha=0.4, color=colours[org])
            ax.hlines(g["f1"].mean(), j - 0.38, j + 0.38, color="black", lw=1.6)
        labels = [_value_label(axis, v) for v in values]
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right")
        ax.set_title(axis)
        ax.set_ylim(-0.03, 1.03)
    axes[0, 0].set_ylabel("F1 against circuit.json (95 % CI)")
    fig.suptitle(title, fontsize=9)
    # below the panels (constrained layout makes room), so that no panel's points hide under it
    figure_legend(
        fig, [Line2D([], [], ls="", marker="o", ms=4, color=colours[o], label=o) for o in organisms]
    )
    return save_figure(fig, outputs)


def _value_label(axis: str, value: Any) -> str:
    if axis == "corruption":
        return corruption_label(value)
    if axis == "metric":
        return metric_short(value)
    if axis == "method":
        return METHOD_LABELS.get(value, value)
    if axis == "rule":
        return RULE_LABELS.get(value, value)
    return str(value)


def summary_markdown(comparisons: Sequence[Mapping[str, Any]], facts: Sequence[str]) -> str:
    """``practices_summary.md``: for each recommendation, its comparisons per organism and overall."""
    lines = [
        "# What ground truth says about the paper's advice",
        "",
        *facts,
        "",
        f"**Verdict rule.** {VERDICT_RULE}",
        "",
    ]
    lines += ["| recommendation | recommended vs advised against (score) | organism | pairs | recommended | "
              "advised against | difference | verdict |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for rec in RECOMMENDATIONS:
        rows = [r for r in comparisons if r["recommendation"] == rec.title]
        for r in rows:
            vs = f"{_value_label(r['axis'], r['recommended'])} vs {_value_label(r['axis'], r['against'])} ({r['score']})"
            cells = [rec.title, vs, r["organism"], str(r["pairs"]), _ci(r, "value_recommended"),
                     _ci(r, "value_against"), _ci(r, "difference"), f"**{r['verdict']}**" if r["organism"] ==
                     "all organisms" else r["verdict"]]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Sources of the advice:", ""]
    lines += [f"- {rec.title}: {rec.source}" for rec in RECOMMENDATIONS]
    return "\n".join(lines) + "\n"


def front_page_facts(comparisons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``practices_summary.json``: the verdict over all organisms of each comparison, as the
    report's front page shows it (:func:`patchbench.analysis.report_page.summary_rst`)."""
    rows = []
    for rec in RECOMMENDATIONS:
        for r in comparisons:
            if r["recommendation"] == rec.title and r["organism"] == "all organisms":
                rows.append({
                    "recommendation": rec.title,
                    "comparison": f"{_value_label(r['axis'], r['recommended'])} vs "
                    f"{_value_label(r['axis'], r['against'])} ({r['score']})",
                    "pairs": int(r["pairs"]),
                    "difference": _ci(r, "difference"),
                    "verdict": r["verdict"],
                })  # fmt: skip
    return {"rows": rows, "verdict_rule": VERDICT_RULE}


def write_table(
    table: pd.DataFrame, csv: str | Path, md: str | Path, task: str, header: Sequence[str]
) -> None:
    """Write one task's table as CSV (every row) and Markdown."""
    write_text(csv, table.to_csv(index=False, float_format="%.6g"))
    write_text(md, table_markdown(table, task, header))
