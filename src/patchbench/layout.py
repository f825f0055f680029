"""Where every output of the workflow lives: the one place a result path is spelled.

``R`` is ``results_dir`` and ``F`` is ``figures_dir`` (both from the config):

==========================================  =====================================================
what                                        path
==========================================  =====================================================
a model's prompt set, all generated         ``R/prompts/{model}/{task}.all.parquet``
the prompts it answers, its accuracy        ``R/prompts/{model}/{task}.parquet``, ``….accuracy.json``
clean activations                           ``R/cache/{model}/{task}.clean.safetensors``
a sweep cell's files (:class:`~patchbench.  ``R/{sweeps|effects|attrib}/{model}/{task}/{corruption}/``
cell.Cell` names which)                     ``{site}-{position}_w{window}{suffix}``
a toy model's directory                     ``R/models/{model}/``
a per-model analysis frame                  ``R/analysis/{what}/{model}.{ext}``
tables, figures, claims                     ``R/tables/{name}.{ext}``, ``F/{name}.{ext}``, ``R/claims.csv``
an experiment's robustness on one model     ``R/tables/robustness_{experiment}_{model}{suffix}``,
                                            ``F/robustness_{experiment}_{model}.png``
the practice benchmark                      ``R/tables/practices_{task}.csv|md``, ``F/practices_{task}.png``,
                                            ``R/tables/practices_summary.md``; its plans
                                            ``R/practices/plans/{model}/{experiment}.json``
the report's front page                     ``R/robustness/summary.rst``
a step's log                                ``R/logs/…`` (the same sub-path as its output)
a job's staleness stamp                     ``R/.fingerprints/{rule}/{wildcards…}.json``
==========================================  =====================================================

Snakemake's wildcard patterns are these same paths with ``{model}``-style placeholders passed in
as the parts, so rules and scripts cannot disagree about a file name.

Every name that becomes part of a path (model, task and experiment names, ``--name``) passes
:func:`check_name` first: letters, digits, ``_``, ``-`` and ``.``, not starting with ``.`` or
``-``, no ``..`` (so no separator, no parent directory, no hidden file); anything else is refused
with one message naming it and the fix. The config check, the CLI and every path method of
:class:`Layout` call it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from patchbench.errors import InputError

__all__ = [
    "NAME_RULE",
    "ROBUSTNESS_FIGURES",
    "ROBUSTNESS_TABLES",
    "CellKind",
    "Layout",
    "PathNameError",
    "check_name",
]

#: What a name that becomes part of a path may be (the message of :func:`check_name`).
NAME_RULE = "letters, digits, '_', '-' and '.' only (at most 100), not starting with '.' or '-', and no '..'"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
#: A Snakemake wildcard placeholder (``{model}``): the part of a rule's path pattern, not a name.
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


class PathNameError(InputError, ValueError):
    """A name that would become part of a file path is not a safe path component."""


def check_name(name: object, what: str, fix: str | None = None) -> str:
    """``name`` when it is a safe path component (:data:`NAME_RULE`), else :class:`PathNameError`.

    ``what`` names the input in the message (``model name``, ``--name``, ``config key 'tasks'``);
    ``fix`` replaces the default advice. Snakemake placeholders (``{model}``) pass: they are
    patterns whose values Snakemake matches against the wildcard constraints.
    """
    text = name if isinstance(name, str) else ""
    if _PLACEHOLDER.fullmatch(text) or (_SAFE_NAME.fullmatch(text) and ".." not in text):
        return text
    problem = "is empty" if name == "" else "is not a safe file-name part"
    raise PathNameError.of(
        f"{what} {name!r}",
        f"{problem}: names become parts of output paths (results/prompts/<model>/<task>.parquet, ...), "
        f"so they may hold {NAME_RULE}",
        fix or "rename it, e.g. " + repr(_suggest(text)),
    )


def _suggest(text: str) -> str:
    """A safe name close to ``text``: its last path part with unsafe characters replaced by '_'."""
    last = re.split(r"[\\/]+", text.strip("/\\"))[-1] if text else ""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", last).lstrip(".-").replace("..", "_")[:100]
    return safe or "my_name"


#: The folders of a cell's files: exact raw sweeps, exact effects, attribution raw frames + effects.
CellKind = Literal["sweeps", "effects", "attrib"]

#: The robustness analysis's table-like files of one experiment on one model: kind -> name suffix
#: (verdicts; per component x cell; per pair of cells; known-circuit scores; one-page summary; the
#: facts the report's front page lists).
ROBUSTNESS_TABLES: dict[str, str] = {
    "verdicts": ".csv",
    "cells": "_cells.csv",
    "pairs": "_pairs.csv",
    "circuit": "_circuit.csv",
    "markdown": ".md",
    "json": ".json",
}
#: Its figure's files: kind -> suffix. PNG only (the report shows it): a PDF would double the cost
#: of the figures (font subsetting, ~0.3 s CPU each), the largest share of the analysis's time.
ROBUSTNESS_FIGURES: dict[str, str] = {"png": ".png"}


@dataclass(frozen=True)
class Layout:
    """The output tree of one config (its ``results_dir`` and ``figures_dir``)."""

    results_dir: str
    figures_dir: str = "figures"

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Layout:
        """The layout of a validated config."""
        return cls(str(config["results_dir"]), str(config["figures_dir"]))

    # ------------------------------------------------------------------ roots
    def result(self, *parts: str) -> str:
        """A path under ``results_dir``."""
        return str(Path(self.results_dir, *parts))

    def figure(self, *parts: str) -> str:
        """A path under ``figures_dir``."""
        return str(Path(self.figures_dir, *parts))

    def stamp(self, rule: str, *parts: str) -> str:
        """The staleness stamp of one job of ``rule`` (:mod:`patchbench.staleness`), named by its wildcards."""
        return str(
            Path(self.results_dir, ".fingerprints", rule, *parts[:-1], f"{parts[-1] if parts else rule}.json")
        )

    def digest_memo(self) -> str:
        """The memo of file digests the staleness checks keep (:class:`patchbench.staleness.Digests`)."""
        return self.result(".fingerprints", "digests.json")

    def log(self, *parts: str) -> str:
        """A step's log file, under ``results_dir/logs`` (so each config keeps its own)."""
        return str(Path(self.results_dir, "logs", *parts))

    # ------------------------------------------------------------------ per (model, task)
    @staticmethod
    def _names(model: str, task: str | None = None) -> None:
        check_name(model, "model name")
        if task is not None:
            check_name(task, "task name")

    def prompts(self, model: str, task: str, *, unfiltered: bool = False) -> str:
        """The prompt set of ``task`` tokenised for ``model``: all generated, or those it answers."""
        self._names(model, task)
        return self.result("prompts", model, f"{task}.all.parquet" if unfiltered else f"{task}.parquet")

    def accuracy(self, model: str, task: str) -> str:
        self._names(model, task)
        return self.result("prompts", model, f"{task}.accuracy.json")

    def cache(self, model: str, task: str) -> str:
        self._names(model, task)
        return self.result("cache", model, f"{task}.clean.safetensors")

    def model_dir(self, model: str) -> str:
        """A toy model's directory (weights, tokenizer, training curve)."""
        self._names(model)
        return self.result("models", model)

    # ------------------------------------------------------------------ sweep cells
    @staticmethod
    def cell_stem(site: str, position: str, window: int | str) -> str:
        """The file name of a cell inside its corruption folder, without suffix."""
        return f"{site}-{position}_w{window}"

    def cell_file(
        self,
        kind: CellKind,
        model: str,
        task: str,
        corruption: str,
        site: str,
        position: str,
        window: int | str,
        suffix: str = ".parquet",
        *,
        log: bool = False,
    ) -> str:
        """One file of a sweep cell (``log=True``: the log of the step that writes it)."""
        self._names(model, task)
        parts = (kind, model, task, corruption, self.cell_stem(site, position, window) + suffix)
        return self.log(*parts) if log else self.result(*parts)

    # ------------------------------------------------------------------ analysis outputs
    def analysis(self, what: str, model: str, ext: str = "parquet") -> str:
        """A per-model analysis frame (``ioi_classes``, ``nm_attention``, ``factual_categories``, …)."""
        self._names(model)
        return self.result("analysis", what, f"{model}.{ext}")

    def table(self, name: str, ext: str) -> str:
        return self.result("tables", f"{name}.{ext}")

    def figure_file(self, name: str, ext: str) -> str:
        return self.figure(f"{name}.{ext}")

    def claims(self, applied: bool = False) -> str:
        """``claims.csv`` (the paper's models) or, ``applied``, ``claims_applied.csv`` (its claims on other models)."""
        return self.result("claims_applied.csv" if applied else "claims.csv")

    # ------------------------------------------------------------------ robustness (issue 15)
    @staticmethod
    def robustness_names(experiment: str, model: str) -> dict[str, str]:
        """The file names of an experiment's robustness outputs on ``model``: kind -> name
        (:data:`ROBUSTNESS_TABLES`, then :data:`ROBUSTNESS_FIGURES`); the CLI writes them to one folder."""
        check_name(experiment, "experiment name")
        Layout._names(model)
        stem = f"robustness_{experiment}_{model}"
        return {k: stem + suffix for k, suffix in {**ROBUSTNESS_TABLES, **ROBUSTNESS_FIGURES}.items()}

    def robustness_files(self, experiment: str, model: str) -> dict[str, str]:
        """Those files in the workflow: tables under ``R/tables``, the figure under ``F``."""
        names = self.robustness_names(experiment, model)
        return {
            k: self.result("tables", n) if k in ROBUSTNESS_TABLES else self.figure(n)
            for k, n in names.items()
        }

    # ------------------------------------------------------------------ practice benchmark
    def practice_plan(self, model: str, experiment: str) -> str:
        """Which corruptions of the practice grid the prompt set of (model, experiment) takes (checkpoint)."""
        return self.result("practices", "plans", model, f"{experiment}.json")

    def practice_files(self, task: str) -> dict[str, str]:
        """The practice benchmark's table (CSV, Markdown) and figure of one task."""
        name = f"practices_{task}"
        return {
            "csv": self.table(name, "csv"),
            "md": self.table(name, "md"),
            "png": self.figure_file(name, "png"),
        }

    def practice_summary(self) -> str:
        """The practice benchmark's verdicts on the paper's advice."""
        return self.table("practices_summary", "md")

    def practice_front_page_facts(self) -> str:
        """The verdicts over all organisms, as the report's front page shows them."""
        return self.table("practices_summary", "json")

    def front_page(self) -> str:
        """The Snakemake report's front page, written from every experiment's robustness facts."""
        return self.result("robustness", "summary.rst")
