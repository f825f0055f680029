"""The sweep cell: one (model, task, corruption, site, position, window, heads, method, direction) of the grid.

A config's experiments expand into cells exactly once, here (:func:`cells_of`,
:func:`experiment_cells`, :func:`attribution_cells`), from the validated config of
:mod:`patchbench.config`. A :class:`Cell` then owns every fact that follows from its identity:

* its files (raw frame, effects, resumable chunks, logs; spelled by :mod:`patchbench.layout`),
* the :class:`~patchbench.sites.SweepSpec` the engine runs and the ``ModelSpec`` it loads,
* the identity written into its frames' metadata, and its human-readable label,
* its :meth:`Cell.fingerprint`, a hash of everything the config knows that determines its numbers.

The workflow's rules get Cells from ``common.smk`` and hand them to scripts as params; the CLI
builds none (it has no config) and passes its own identity to the engine.

A Cell built by :meth:`Cell.pattern` has Snakemake wildcards (``{model}``, ``{window}``, …) as
its fields: its paths are the rules' wildcard patterns, so a rule and a script cannot spell a
path differently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from patchbench.config import ConfigError
from patchbench.fingerprint import FORMAT_VERSION, digest
from patchbench.interventions import corruptions, directions
from patchbench.interventions.corruptions.gn import NoiseSpec
from patchbench.interventions.sites import SITES
from patchbench.layout import CellKind, Layout
from patchbench.sites import SweepSpec, check_windows

__all__ = [
    "NOT_IN_FINGERPRINT",
    "Cell",
    "Method",
    "agreement_cells",
    "attribution_cells",
    "cells_of",
    "experiment_cells",
]

Method = Literal["exact", "attribution"]
#: Keys of a model's config entry that do not fix a sweep's numbers, so no cell's fingerprint holds them.
NOT_IN_FINGERPRINT: frozenset[str] = frozenset({"resources", "circuit"})
Heads = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Cell:
    """One sweep of the grid and everything decided by it (see the module docstring)."""

    model: str
    task: str
    corruption: str
    site: str
    position: str
    window: int
    heads: Heads | None
    method: Method
    layout: Layout
    #: the validated config the cell was built from (settings its numbers depend on)
    config: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)
    #: denoising (the paper's) or noising (:mod:`patchbench.interventions.directions`)
    direction: str = directions.DEFAULT
    #: attribution only: AtP*'s QK fix for this cell (None: the config's ``attribution.qk_fix``)
    qk_fix_setting: bool | None = None

    # ------------------------------------------------------------------ identity and labels
    @property
    def identity(self) -> dict[str, Any]:
        """The cell's identity as written into its frames' metadata (``heads`` is in the spec; the
        direction only when it is not the default, so a denoising cell's identity is unchanged)."""
        out = {
            "model": self.model,
            "task": self.task,
            "corruption": self.corruption,
            "site": self.site,
            "position": self.position,
            "window": int(self.window),
            "method": self.method,
        }
        if self.direction != directions.DEFAULT:
            out["direction"] = self.direction
        return out

    @property
    def intervention(self) -> str:
        """The cell's intervention key: its corruption, suffixed for a non-default direction
        (``str``, ``str_noising``); the folder of its files and the ``corruption`` of its effects."""
        return directions.key(self.corruption, self.direction)

    @property
    def label(self) -> str:
        """``task corruption[ direction] site-position window w on model`` (messages, logs)."""
        d = "" if self.direction == directions.DEFAULT else f" {self.direction}"
        return f"{self.task} {self.corruption}{d} {self.site}-{self.position} window {self.window} on {self.model}"

    def as_method(self, method: Method) -> Cell:
        """The same cell estimated by another method (exact patching or attribution)."""
        return replace(self, method=method)

    def with_qk_fix(self, qk_fix: bool) -> Cell:
        """The same attribution cell with AtP*'s QK fix on or off, whatever ``attribution.qk_fix`` says."""
        return replace(self, qk_fix_setting=bool(qk_fix))

    def reported(self) -> Cell:
        """The cell whose effects the tables and figures read: this one, by ``engine.method``."""
        return self.as_method(self.config["engine"]["method"])

    # ------------------------------------------------------------------ files
    def _file(self, kind: CellKind, suffix: str, *, log: bool = False) -> str:
        where = (self.model, self.task, self.intervention, self.site, self.position, self.window)
        if kind == "attrib" and self.qk_fix:  # AtP*'s estimate beside the plain one: ``….qk.raw.parquet``
            suffix = ".qk" + suffix
        return self.layout.cell_file(kind, *where, suffix, log=log)

    @property
    def raw_path(self) -> str:
        """The raw frame: ``sweeps/…parquet`` (exact) or ``attrib/…raw.parquet`` (attribution)."""
        exact = self.method == "exact"
        return self._file("sweeps", ".parquet") if exact else self._file("attrib", ".raw.parquet")

    @property
    def effects_path(self) -> str:
        """The effects frame with detections: ``effects/…parquet`` (exact) or ``attrib/…parquet``."""
        return (
            self._file("effects", ".parquet") if self.method == "exact" else self._file("attrib", ".parquet")
        )

    @property
    def chunks_dir(self) -> str:
        """Where an exact sweep keeps its finished chunks (resumes from them after a kill)."""
        return str(Path(self.raw_path).with_suffix(".chunks"))

    @property
    def log_path(self) -> str:
        """The log of the job that writes the raw frame."""
        return self._file("sweeps" if self.method == "exact" else "attrib", ".log", log=True)

    @property
    def effects_log_path(self) -> str:
        """The log of the step that writes the effects (the sweep's own log for attribution)."""
        return self._file("effects", ".log", log=True) if self.method == "exact" else self.log_path

    # ------------------------------------------------------------------ what runs
    @property
    def noise(self) -> NoiseSpec:
        return NoiseSpec(**self.config["noise"])

    @property
    def corruption_class(self) -> type[corruptions.Corruption]:
        return corruptions.parse(self.corruption)[0]

    def _settings(self) -> dict[str, Any]:
        """The corruption's config section (its settings' defaults; the spec applies the value's overrides)."""
        cls = self.corruption_class
        return {} if cls.section is None or cls.noise else dict(self.config[cls.section])

    @property
    def sweep_spec(self) -> SweepSpec:
        """The engine's description of this cell (noise, corruption settings and memory budget from the config)."""
        return SweepSpec(
            corruption=self.corruption,
            site=self.site,
            position=self.position,
            window=int(self.window),
            heads=self.heads,
            noise=self.noise,
            memory_budget_mb=int(self.config["models"][self.model]["memory_budget_mb"]),
            settings=tuple(self._settings().items()),
            direction=self.direction,
        )

    @property
    def reference_path(self) -> str | None:
        """The prompt set of the corruption's named reference task (mean ablation), or None."""
        task = self.sweep_spec.intervention.reference_task()
        return None if task is None else self.layout.prompts(self.model, task)

    def reference(self):
        """The corruption's named reference prompt set (:attr:`reference_path`, read), or None."""
        from patchbench.prompts import PromptSet

        path = self.reference_path
        return None if path is None else PromptSet.from_parquet(path)

    @property
    def model_spec(self):
        """How to load the cell's model (:class:`patchbench.models.ModelSpec`)."""
        from patchbench.models import ModelSpec

        return ModelSpec.from_config(self.model, self.config["models"][self.model], self.layout.results_dir)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics its effects report (:func:`patchbench.metrics.metrics_for`)."""
        from patchbench.metrics import metrics_for

        return metrics_for(self.task)

    @property
    def qk_fix(self) -> bool:
        """Whether attribution applies AtP*'s QK fix: :attr:`qk_fix_setting`, else ``attribution.qk_fix``;
        on whole-head sweeps under a token-level corruption only (:func:`patchbench.qk_fix.qk_fix_applies`).
        A QK-fixed cell's attribution files are named ``….qk.raw.parquet``, ``….qk.parquet``."""
        from patchbench.attribution import qk_fix_applies

        wanted = self.config["attribution"]["qk_fix"] if self.qk_fix_setting is None else self.qk_fix_setting
        return self.method == "attribution" and bool(wanted) and qk_fix_applies(self)

    @property
    def check_identities(self) -> bool:
        """Whether the exact sweep checks the sanity identities: ``engine.check_identities``."""
        return bool(self.config["engine"]["check_identities"])

    @property
    def detection_k(self) -> float:
        """The detection threshold (SDs) of an attribution cell's effects: ``attribution.k``."""
        return float(self.config["attribution"]["k"])

    # ------------------------------------------------------------------ staleness
    def fingerprint_facts(self) -> dict[str, Any]:
        """Everything the config knows that determines this cell's numbers (see :meth:`fingerprint`)."""
        cfg = self.config
        facts: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "cell": {**self.identity, "heads": None if self.heads is None else [list(h) for h in self.heads]},
            "model": {k: v for k, v in cfg["models"][self.model].items() if k not in NOT_IN_FINGERPRINT},
            "task": cfg["tasks"][self.task],
            "prompts": {k: cfg[k] for k in ("data_dir", "filter_correct", "min_prompts")},
            "engine": {k: v for k, v in cfg["engine"].items() if k != "method"},
        }
        cls, overrides = corruptions.parse(self.corruption)
        section = {**(cfg[cls.section] if cls.section else {}), **overrides}
        facts.update(cls.config_facts(cfg, section))
        if self.method == "attribution":
            facts["attribution"] = {"qk_fix": self.qk_fix, "k": cfg["attribution"]["k"]}
        return facts

    def fingerprint(self, **extra: Any) -> str:
        """A stable hash (16 hex digits of sha256, :func:`patchbench.fingerprint.digest`) of what
        determines the cell's numbers, as far as the config knows it.

        Covered, from the config: the engine's format version; the cell's fields (``identity``
        and ``heads``); the model's entry without its ``resources`` and ``circuit``
        (:data:`NOT_IN_FINGERPRINT`: the job's resources and the known circuit the robustness
        report scores against do not change the sweep's numbers), i.e. source, name, path, dtype,
        device, memory budget, init, arch; the task's entry; ``data_dir``, ``filter_correct`` and
        ``min_prompts`` (which prompts are patched); the engine settings other than
        ``engine.method`` (which picks the tables' method, not this cell's numbers); the noise
        settings for GN cells; whether the QK fix applies (:attr:`qk_fix`) and ``attribution.k`` for
        attribution cells.
        It is a param of the cell's Snakemake rule (``common.smk``), so a config change reruns
        exactly the jobs of the cells it changes, and everything downstream of them. The prompt ids
        and the model weights, which the config does not know, reach Snakemake as the rule's file
        inputs and the engine through its checkpoint fingerprint
        (:func:`patchbench.engine.checkpoint.sweep_fingerprint`); ``extra`` (JSON-serialisable
        keyword arguments) joins the hash under its names.
        """
        return digest({**self.fingerprint_facts(), **extra})

    # ------------------------------------------------------------------ wildcard patterns
    @classmethod
    def pattern(cls, layout: Layout, method: Method = "exact", **fixed: Any) -> Cell:
        """A cell whose unfixed fields are Snakemake wildcards: its paths are rule patterns.

        ``Cell.pattern(layout).raw_path`` is ``R/sweeps/{model}/{task}/{corruption}/{site}-{position}_w{window}.parquet``.
        Only its path properties are meaningful.
        """
        names = ("model", "task", "corruption", "site", "position", "window")
        values = {n: fixed.get(n, "{" + n + "}") for n in names}
        return cls(**values, heads=None, method=method, layout=layout)  # type: ignore[arg-type]


def _heads(value: Sequence[Sequence[int]] | None) -> Heads | None:
    return None if value is None else tuple((int(a), int(b)) for a, b in value)


def experiment_cells(config: Mapping[str, Any], name: str, *, model: str | None = None) -> list[Cell]:
    """The exact cells of experiment ``name`` (models x corruptions x directions x windows, in that order).

    ``model`` restricts them to one model, which may be a Snakemake wildcard (``"{model}"``): then
    only the cells' paths are meaningful. Raises ConfigError when the experiment breaks a per-site
    rule of :data:`patchbench.interventions.sites.SITES` (windows only on sites that take them;
    heads only on sites with heads; a site whose heads are patched jointly needs them).
    """
    exp = config["experiments"][name]
    site = SITES[exp["site"]]
    try:
        check_windows(exp["site"], exp["windows"])
    except ValueError as err:
        raise ConfigError(f"experiment {name!r}: {err}") from None
    key = f"experiment {name!r} (config key 'experiments.{name}.heads')"
    if exp["heads"] and not site.has_heads:
        heads_sites = ", ".join(s.name for s in SITES.values() if s.has_heads)
        raise ConfigError(
            f"{key}: site {exp['site']} has no heads, so `heads` cannot restrict it. Fix: drop `heads`, or "
            f"use a site with heads ({heads_sites})"
        )
    if site.joint_heads and not exp["heads"]:
        raise ConfigError(
            f"{key}: site {exp['site']} needs `heads: [[layer, head], ...]` (it patches the given heads "
            "together). Fix: list the heads to patch together"
        )
    layout = Layout.of(config)
    return [
        Cell(
            m,
            exp["task"],
            c,
            exp["site"],
            exp["position"],
            int(w),
            _heads(exp["heads"]),
            "exact",
            layout,
            config,
            d,
        )
        for m in ([model] if model is not None else exp["models"])
        for c in exp["corruptions"]
        for d in exp["directions"]
        for w in exp["windows"]
    ]


def _in_agreement(config: Mapping[str, Any], cell: Cell) -> bool:
    """Whether a cell's window enters the exact-vs-attribution agreement (``attribution.windows``)."""
    windows = config["attribution"]["windows"]
    return windows is None or cell.window in windows


def attribution_cells(config: Mapping[str, Any], name: str, *, model: str | None = None) -> list[Cell]:
    """The cells of experiment ``name`` that attribution patching estimates (``method='attribution'``).

    Those that enter the agreement (``attribution.windows``; null: every window); every cell when
    attribution replaces exact patching for the tables (``engine.method: attribution``).
    """
    every = config["engine"]["method"] == "attribution"
    cells = experiment_cells(config, name, model=model)
    return [c.as_method("attribution") for c in cells if every or _in_agreement(config, c)]


def agreement_cells(config: Mapping[str, Any], model: str, task: str) -> list[Cell]:
    """The attribution cells of (model, task) whose agreement with exact patching is reported."""
    cells = [
        c
        for name in config["experiments"]
        for c in attribution_cells(config, name, model=model)
        if c.task == task and model in config["experiments"][name]["models"] and _in_agreement(config, c)
    ]
    return sorted(cells, key=lambda c: (c.corruption, c.direction, c.site, c.position, c.window))


def cells_of(config: Mapping[str, Any]) -> dict[str, list[Cell]]:
    """Every experiment's exact cells, by experiment name; refuses two experiments sweeping one cell."""
    out = {name: experiment_cells(config, name) for name in config["experiments"]}
    owner: dict[str, str] = {}
    for name, cells in out.items():
        for cell in cells:
            if cell.raw_path in owner:
                raise ConfigError(
                    f"experiments {owner[cell.raw_path]!r} and {name!r} both sweep {cell.label}; they would "
                    "write the same file: keep that cell in one of them"
                )
            owner[cell.raw_path] = name
    return out
