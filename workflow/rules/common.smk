"""Shared helpers: config validation and the one place where output paths are spelled."""

import json
import re
from pathlib import Path

from snakemake.utils import validate

from patchbench.models import ModelSpec


validate(config, schema="../schemas/config.schema.yaml")


class ConfigError(ValueError):
    """A config that passes the schema but refers to things that do not exist."""


def _check_references(cfg):
    models, tasks = set(cfg["models"]), set(cfg["tasks"])
    for name, exp in cfg["experiments"].items():
        for m in exp["models"]:
            if m not in models:
                raise ConfigError(
                    f"experiment {name!r}: unknown model {m!r}; define it under `models:` "
                    f"(defined: {sorted(models)})"
                )
        if exp["task"] not in tasks:
            raise ConfigError(
                f"experiment {name!r}: task {exp['task']!r} has no entry under `tasks:` "
                f"(defined: {sorted(tasks)}); add `{exp['task']}: {{n_prompts: N}}`"
            )
        if exp["site"] != "mlp" and exp.get("windows", [1]) != [1]:
            raise ConfigError(
                f"experiment {name!r}: windows {exp['windows']} only apply to site mlp "
                f"(site is {exp['site']}); use windows: [1]"
            )
        if exp["site"] == "head_v" and not exp.get("heads"):
            raise ConfigError(f"experiment {name!r}: site head_v needs `heads: [[layer, head], ...]`")


_check_references(config)

RESULTS = config["results_dir"]
FIGURES = config["figures_dir"]
EXPERIMENTS = config["experiments"]


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    task=r"[a-z_0-9]+",
    corruption=r"str|gn",
    site=r"attn_head|head_v|mlp|resid_pre",
    position=r"[A-Za-z0-9_]+",
    window=r"[0-9]+",


def R(*parts):
    """A path under results_dir."""
    return str(Path(RESULTS, *parts))


def F(*parts):
    """A path under figures_dir."""
    return str(Path(FIGURES, *parts))


def LOG(*parts):
    """A rule's log file (under results_dir/logs, so each config keeps its own)."""
    return str(Path(RESULTS, "logs", *parts))


def model_spec(model):
    return ModelSpec.from_config(model, config["models"][model], results_dir=RESULTS)


def model_resources(model, key, default):
    return config["models"][model].get("resources", {}).get(key, default)


def tokenizer_files(wildcards):
    """Inputs needed to tokenize for a model: the toy tokenizer, nothing for hub / local models."""
    spec = model_spec(wildcards.model)
    if spec.source == "toy" and spec.path == R("models", spec.name):
        return [R("models", spec.name, "tokenizer.json")]
    return []


def weight_files(wildcards):
    """Inputs needed to load a model's weights: the trained toy model, nothing for hub / local models."""
    spec = model_spec(wildcards.model)
    if spec.source == "toy" and spec.path == R("models", spec.name):
        if spec.init == "random":
            return [R("models", spec.name, "tokenizer.json")]
        return [R("models", spec.name, "model.safetensors")]
    return []


def prompts_path(model, task, unfiltered=False):
    return R("prompts", model, f"{task}.all.parquet" if unfiltered else f"{task}.parquet")


def cache_path(model, task):
    return R("cache", model, f"{task}.clean.safetensors")


def sweep_path(model, task, corruption, site, position, window):
    return R("sweeps", model, task, corruption, f"{site}-{position}_w{window}.parquet")


def exact_effects_path(model, task, corruption, site, position, window):
    return R("effects", model, task, corruption, f"{site}-{position}_w{window}.parquet")


def effects_path(model, task, corruption, site, position, window):
    """The effects the tables and figures are drawn from: exact, or attribution (`engine.method`)."""
    if config["engine"]["method"] == "attribution":
        return R("attrib", model, task, corruption, f"{site}-{position}_w{window}.parquet")
    return exact_effects_path(model, task, corruption, site, position, window)


def experiment_grid(name):
    """(corruption, window) of every sweep an experiment runs on each of its models."""
    exp = EXPERIMENTS[name]
    return [(c, w) for c in exp.get("corruptions", ["str", "gn"]) for w in exp.get("windows", [1])]


def one_of(names):
    """A wildcard constraint that matches exactly ``names`` (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def experiment_cells(name):
    """(model, task, corruption, site, position, window) of every sweep an experiment runs."""
    exp = EXPERIMENTS[name]
    return [
        (m, exp["task"], c, exp["site"], exp.get("position", "all"), w)
        for m in exp["models"]
        for c, w in experiment_grid(name)
    ]


def experiment_effects(name):
    return [effects_path(*cell) for cell in experiment_cells(name)]


def _check_unique_cells():
    """Each sweep cell belongs to one experiment: two would write (and configure) the same file."""
    owner = {}
    for name in EXPERIMENTS:
        for cell in experiment_cells(name):
            m, task, c, site, position, w = cell
            if cell in owner:
                raise ConfigError(
                    f"experiments {owner[cell]!r} and {name!r} both sweep {task} {c} {site}-{position} "
                    f"window {w} on {m}; they would write the same file: keep that cell in one of them"
                )
            owner[cell] = name


_check_unique_cells()


def experiments_of(task=None, site=None):
    """Names of the configured experiments, optionally restricted to a task / site."""
    return [
        n
        for n, e in EXPERIMENTS.items()
        if (task is None or e["task"] == task) and (site is None or e["site"] == site)
    ]


def long_sweep_priority(model, task):
    """Scheduling priority of a (model, task)'s prompts, filter, cache and sweep jobs: 10 when an
    experiment sweeps it at every position separately (the longest sweeps: one target per position
    and component), else 0. Those chains then start first and do not end up running alone at the
    end of a run while the other cores idle. Toy training (priority 50) still goes before them."""
    each = any(
        c[0] == model and c[1] == task and c[4] == "each" for n in EXPERIMENTS for c in experiment_cells(n)
    )
    return 10 if each else 0


def sites_for(model, task):
    """The sites any experiment patches for (model, task): what the clean cache must hold."""
    return sorted(
        {c[3] for n in EXPERIMENTS for c in experiment_cells(n) if c[0] == model and c[1] == task}
    )


def all_effects():
    return sorted({p for n in EXPERIMENTS for p in experiment_effects(n)})


def all_accuracy():
    return sorted(
        {
            R("prompts", m, f"{e['task']}.accuracy.json")
            for e in EXPERIMENTS.values()
            for m in e["models"]
        }
    )


def toy_accuracy_targets():
    """The toy models' held-out accuracy table, when the config trains toy models."""
    toy = [e for e in config["models"].values() if e.get("source") == "toy"]
    if toy and all(e.get("init", "trained") == "trained" for e in toy):
        return [R("toy", "accuracy.csv"), R("toy", "accuracy.md")]
    return []


def all_targets():
    """Everything `rule all` builds: effects of every experiment, accuracies, the analysis outputs."""
    return all_effects() + all_accuracy() + toy_accuracy_targets() + analysis_targets() + agreement_targets()
