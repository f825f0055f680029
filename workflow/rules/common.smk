"""Shared helpers: the validated config, its sweep cells, the output layout, target lists, fingerprints.

The config is checked before any rule is defined (patchbench.preflight.check_workflow_config: the
config files re-read strictly, the schema, task options, model directories, windows and heads
against the models' shapes); a bad one stops the run here with one message and no traceback.

Paths come from the package: ``LAYOUT`` (patchbench.layout.Layout) spells every output path and
each sweep cell (patchbench.cell.Cell) owns its files; ``CELL`` is the cell whose fields are
wildcards, i.e. the patterns of the per-cell rules. Rules spell only their log files (``LOG``,
the same sub-path as the output under ``<results_dir>/logs``).

Cluster requests: with ``cluster_device`` set (the SLURM profile sets it), a model-loading job's
unwritten ``mem_mb`` / ``runtime`` come from the cost estimate times ``cluster_safety_factor``, and with
``cluster_partitions`` every request is checked against the partitions' limits here, before any
submission (patchbench.cost.cluster).

Every rule has a ``fingerprint`` param (``fingerprint(...)`` below): the engine's format version,
the config sections the rule's numbers depend on and the fingerprints of the Cells it computes.
Snakemake reruns a job when a param changes, so a config change reruns exactly the jobs it
affects, and every job downstream of them through their inputs.
"""

import re
from pathlib import Path

from patchbench.cell import Cell, agreement_cells, attribution_cells, experiment_cells
from patchbench.cost.cluster import cluster_requests, job_key, written_resources
from patchbench.errors import refusing
from patchbench.fingerprint import digest
from patchbench.layout import Layout
from patchbench.models import ModelSpec
from patchbench.preflight import check_workflow_config


WRITTEN = written_resources(config)  # models' resources as written, before the schema's defaults
with refusing("patchbench"):  # the schema's defaults filled in, everything checkable before a job checked
    CELLS = check_workflow_config(config, list(dict.fromkeys(map(str, workflow.configfiles))))
    # cluster requests from the cost estimate and the partition-limit check (patchbench.cost.cluster)
    REQUESTS = cluster_requests(config, WRITTEN)
EXPERIMENTS = config["experiments"]
LAYOUT = Layout.of(config)
R, F, LOG = LAYOUT.result, LAYOUT.figure, LAYOUT.log
CELL = Cell.pattern(LAYOUT)


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    task=r"[A-Za-z][A-Za-z0-9_]*",
    corruption=r"str|gn",
    site=r"attn_head|head_v|mlp|resid_pre",
    position=r"[A-Za-z0-9_]+",
    window=r"[0-9]+",


def fingerprint(*keys, cells=None):
    """A rule's ``fingerprint`` param: a function of the job's wildcards hashing the format version,
    the config sections ``keys`` (a top-level key, or a tuple path whose parts may name wildcards:
    ``("models", "{model}")``) and, with ``cells`` (wildcards -> Cells), each Cell's fingerprint."""

    def param(wildcards):
        names = dict(wildcards.items())
        facts = {}
        for key in keys:
            node = config
            for part in (key,) if isinstance(key, str) else key:
                node = node[part.format(**names)]
            facts[str(key)] = node
        if cells is not None:
            facts["cells"] = {c.raw_path: c.fingerprint() for c in cells(wildcards)}
        return digest(facts)

    return param


def model_spec(model):
    return ModelSpec.from_config(model, config["models"][model], LAYOUT.results_dir)


def model_resource(model, key):
    """One of ``models.<model>.resources`` (defaults from the schema)."""
    return config["models"][model]["resources"][key]


def model_job_resources(cells=1):
    """Snakemake resources of a job that loads the wildcard ``model`` (runtime per cell it runs); with
    ``cluster_device`` set, the request of patchbench.cost.cluster (``REQUESTS``: unwritten mem_mb and
    runtime from the cost estimate)."""

    def request(key, written):
        def value(wildcards, rulename):
            found = REQUESTS.get(job_key(rulename, wildcards.model, getattr(wildcards, "task", "")))
            return found[key] if found is not None else written(wildcards)

        return value

    return dict(
        mem_mb=request("mem_mb", lambda w: model_resource(w.model, "mem_mb")),
        runtime=request("runtime", lambda w: model_resource(w.model, "runtime") * cells),
        gpu=lambda w: model_resource(w.model, "gpu"),
    )


def model_threads(wildcards):
    return model_resource(wildcards.model, "threads")


def _trained_here(spec):
    return spec.source == "toy" and spec.path == LAYOUT.model_dir(spec.name)


def tokenizer_files(wildcards):
    """Inputs needed to tokenize for a model: the toy tokenizer, nothing for hub / local models."""
    spec = model_spec(wildcards.model)
    return [R("models", spec.name, "tokenizer.json")] if _trained_here(spec) else []


def weight_files(wildcards):
    """Inputs needed to load a model's weights: the trained toy model, nothing for hub / local models."""
    spec = model_spec(wildcards.model)
    if not _trained_here(spec):
        return []
    return [R("models", spec.name, "tokenizer.json" if spec.init == "random" else "model.safetensors")]


def one_of(names):
    """A wildcard constraint that matches exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def all_cells():
    """Every exact sweep cell of the config."""
    return [c for cells in CELLS.values() for c in cells]


def experiment_effects(name):
    """The effects files of an experiment that the tables and figures read (``engine.method``)."""
    return [c.reported().effects_path for c in CELLS[name]]


def long_sweep_priority(model, task):
    """Scheduling priority of a (model, task)'s prompts, filter, cache and sweep jobs: 10 when an
    experiment sweeps it at every position separately (the longest sweeps: one target per position
    and component), else 0. Those chains then start first and do not end up running alone at the
    end of a run while the other cores idle. Toy training (priority 50) still goes before them."""
    each = any(c.model == model and c.task == task and c.position == "each" for c in all_cells())
    return 10 if each else 0


def sites_for(model, task):
    """The sites any experiment patches for (model, task): what the clean cache must hold."""
    return sorted({c.site for c in all_cells() if c.model == model and c.task == task})


def all_effects():
    return sorted({c.reported().effects_path for c in all_cells()})


def all_accuracy():
    return sorted({LAYOUT.accuracy(c.model, c.task) for c in all_cells()})


def toy_accuracy_targets():
    """The toy models' held-out accuracy table, when the config patches trained toy models (trained
    in this run or shipped, such as the model organisms)."""
    return [R("toy", "accuracy.csv"), R("toy", "accuracy.md")] if CONFIG_TOYS else []


def all_targets():
    """Everything `rule all` builds: effects of every experiment, accuracies, the analysis outputs,
    the robustness outputs and the report's front page."""
    return (
        all_effects()
        + all_accuracy()
        + toy_accuracy_targets()
        + analysis_targets()
        + agreement_targets()
        + robustness_targets()
    )
