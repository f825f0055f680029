"""Tables 1-5 of Zhang & Nanda (ICLR 2024), laid out as in the paper, from effects frames.

Every table is one row per (intervention, metric) in the paper's row order (its two corruptions,
always; then every other corruption or direction the frame holds, in registry order, labelled
``Resample``, ``STR (noising)``, ...) and reads the
``detected`` column of the effects frame (the paper's 2-SD rule, applied by
``patchbench.detection`` over the components of one plot):

- **Table 1** (§3.1): IOI head classes found per corruption x metric, "found / total", a head
  counting as found when it is detected with either sign (the Negative Name Movers are detected
  negatively). Classes come from :mod:`patchbench.analysis.ioi_classes`.
- **Table 2** (App. D): docstring (head, position) detections at C_def and at the last position.
- **Table 3** (App. E): greater-than positive / negative heads.
- **Table 4** (App. F): IOI with S1 and IO corrupted, positive / negative heads.
- **Table 5** (App. H.2): IOI (S2 corrupted), negative / positive heads.

A (corruption, metric) cell whose sweep is not in the frame reads ``not run``; an empty cell
means the sweep ran and detected nothing, as in the paper. :func:`write_table` writes CSV,
Markdown and LaTeX side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from patchbench.analysis.frames import FrameError, detected_heads, one_model, select, validate_effects
from patchbench.analysis.ioi_classes import CLASS_LABELS, CLASSES
from patchbench.analysis.labels import intervention_order, metric_label
from patchbench.atomic import write_text

__all__ = [
    "NOT_RUN",
    "ROWS_TABLE1",
    "ROWS_APPENDIX",
    "rows_appendix",
    "rows_table1",
    "constant_position",
    "head_detections",
    "table1",
    "table2",
    "table3",
    "table4",
    "table5",
    "write_table",
]

log = logging.getLogger(__name__)

NOT_RUN = "not run"
#: Table 1's metric order (metrics outer, interventions inner) and Tables 2-5's (interventions outer).
METRICS_TABLE1: tuple[str, ...] = ("prob", "logit_diff", "kl")
METRICS_APPENDIX: tuple[str, ...] = ("logit_diff", "prob", "kl")


def rows_table1(labels: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Table 1's rows: (intervention, metric), metrics outer; the paper's corruptions and every other
    intervention of ``labels`` (:func:`patchbench.analysis.labels.intervention_order`)."""
    return [(c, m) for m in METRICS_TABLE1 for c in intervention_order(labels)]


def rows_appendix(labels: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Tables 2-5's rows: (intervention, metric), interventions outer."""
    return [(c, m) for c in intervention_order(labels) for m in METRICS_APPENDIX]


#: The paper's rows (its two corruptions): Table 1's and Tables 2-5's.
ROWS_TABLE1: tuple[tuple[str, str], ...] = tuple(rows_table1())
ROWS_APPENDIX: tuple[tuple[str, str], ...] = tuple(rows_appendix())


def _head_plot(
    effects: pd.DataFrame, model: str | None, task: str | None, site: str = "attn_head"
) -> tuple[pd.DataFrame, str]:
    """One model's single-window head effects of ``task`` (exact or attribution); one row per component."""
    df = validate_effects(effects)
    df, model = one_model(df, model)
    df = select(df, task=task, site=site, window=1)  # one method per call (the dup check below)
    dup = df.duplicated(["corruption", "metric", "component"])
    if dup.any():
        ex = df.loc[dup, ["corruption", "metric", "component"]].iloc[0].to_dict()
        raise FrameError(
            f"the effects frame has several rows for {ex}; pass the effects of one sweep per corruption "
            "(one task, one position mode)"
        )
    return df, model


def head_detections(
    effects: pd.DataFrame, corruption: str, metric: str, sign: str | None = None
) -> list[str] | None:
    """Detected ``L.H`` heads of one plot, or None when that plot is not in the frame."""
    plot = select(effects, corruption=corruption, metric=metric)
    if plot.empty:
        return None
    return detected_heads(plot, sign)


def _cell(heads: Sequence[str] | None) -> str:
    return NOT_RUN if heads is None else ", ".join(heads)


def _rows(order: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Corruption": c, "Metric": metric_label(m)} for c, m in order]


def table1(
    effects: pd.DataFrame, classes: pd.DataFrame, model: str | None = None, task: str | None = "ioi"
) -> pd.DataFrame:
    """Table 1: IOI head classes found per corruption x metric ("found/total").

    ``classes`` is the long class frame (class, layer, head) of
    :func:`~patchbench.analysis.ioi_classes.head_classes_for`.
    """
    df, model = _head_plot(effects, model, task)
    members = {
        c: {f"{la}.{h}" for la, h in zip(sub["layer"], sub["head"], strict=True)}
        for c, sub in classes.groupby("class")
    }
    order = rows_table1(df["corruption"])
    rows = _rows(order)
    for row, (corr, metric) in zip(rows, order, strict=True):
        found = head_detections(df, corr, metric)
        for cls in CLASSES:
            heads = members.get(cls, set())
            row[CLASS_LABELS[cls]] = NOT_RUN if found is None else f"{len(heads & set(found))}/{len(heads)}"
    return pd.DataFrame(rows, columns=["Corruption", "Metric", *(CLASS_LABELS[c] for c in CLASSES)])


def constant_position(values: Sequence[int] | np.ndarray, name: str) -> int:
    """The position all prompts share (the most common one, with a warning, when they differ).

    The docstring sweep patches absolute positions, so Table 2 needs C_def and the last token at
    one index; the docstring template keeps them fixed when every name is a single token.
    """
    vals = np.asarray(values, dtype=np.int64)
    if vals.size == 0:
        raise ValueError(f"no prompts: cannot determine position {name}")
    uniq, counts = np.unique(vals, return_counts=True)
    pos = int(uniq[np.argmax(counts)])
    if len(uniq) > 1:
        log.warning(
            "position %s differs between prompts (%s); Table 2 uses %d, shared by %.0f%% of them",
            name, dict(zip(uniq.tolist(), counts.tolist(), strict=True)), pos, 100 * counts.max() / vals.size,
        )  # fmt: skip
    return pos


def table2(
    effects: pd.DataFrame,
    c_def_pos: int,
    last_pos: int,
    model: str | None = None,
    task: str | None = "docstring",
) -> pd.DataFrame:
    """Table 2: docstring (head, position) detections at the position of C_def and at the last position.

    ``effects`` holds the per-position head effects (``position: each``), the 2-SD rule applied
    over all (head, position) pairs of a plot; ``c_def_pos`` / ``last_pos`` are the shared
    positions of C_def and of the last token (:func:`constant_position`).
    """
    df = validate_effects(effects)
    df, model = one_model(df, model)
    df = select(df, task=task, site="attn_head", window=1)
    order = rows_appendix(df["corruption"])
    rows = _rows(order)
    for row, (corr, metric) in zip(rows, order, strict=True):
        plot = select(df, corruption=corr, metric=metric)
        at = {
            "At the position of C_def": None
            if plot.empty
            else detected_heads(select(plot, position=c_def_pos)),
            "At the last position": None if plot.empty else detected_heads(select(plot, position=last_pos)),
        }
        row.update({k: _cell(v) for k, v in at.items()})
    return pd.DataFrame(
        rows, columns=["Corruption", "Metric", "At the position of C_def", "At the last position"]
    )


def _signed_table(effects, model, task, order: tuple[str, str]) -> pd.DataFrame:
    df, model = _head_plot(effects, model, task)
    names = {"positive": "Positive", "negative": "Negative"}
    if order == ("negative", "positive"):
        names = {"negative": "Negative heads", "positive": "Positive heads"}
    rows_order = rows_appendix(df["corruption"])
    rows = _rows(rows_order)
    for row, (corr, metric) in zip(rows, rows_order, strict=True):
        for sign in order:
            row[names[sign]] = _cell(head_detections(df, corr, metric, sign))
    return pd.DataFrame(rows, columns=["Corruption", "Metric", *(names[s] for s in order)])


def table3(
    effects: pd.DataFrame, model: str | None = None, task: str | None = "greater_than"
) -> pd.DataFrame:
    """Table 3: greater-than, positive and negative heads per corruption x metric."""
    return _signed_table(effects, model, task, ("positive", "negative"))


def table4(effects: pd.DataFrame, model: str | None = None, task: str | None = "ioi_s1io") -> pd.DataFrame:
    """Table 4: IOI with S1 and IO corrupted, positive and negative heads."""
    return _signed_table(effects, model, task, ("positive", "negative"))


def table5(effects: pd.DataFrame, model: str | None = None, task: str | None = "ioi") -> pd.DataFrame:
    """Table 5: IOI (S2 corrupted), negative and positive heads (the paper's column order)."""
    return _signed_table(effects, model, task, ("negative", "positive"))


def write_table(table: pd.DataFrame, outputs: Iterable[str | Path], caption: str | None = None) -> list[Path]:
    """Write ``table`` to each output by suffix: ``.csv``, ``.md`` (GitHub pipes) or ``.tex``."""
    written = []
    for out in outputs:
        out = Path(out)
        if out.suffix == ".csv":
            write_text(out, table.to_csv(index=False))
        elif out.suffix == ".md":
            text = table.to_markdown(index=False)
            write_text(out, (f"{caption}\n\n" if caption else "") + text + "\n")
        elif out.suffix == ".tex":
            write_text(
                out,
                table.to_latex(
                    index=False,
                    escape=True,
                    caption=caption,
                    column_format="ll" + "l" * (len(table.columns) - 2),
                ),
            )
        else:
            raise ValueError(f"table output {out} must end in .csv, .md or .tex")
        written.append(out)
        log.info("wrote %s", out)
    return written
