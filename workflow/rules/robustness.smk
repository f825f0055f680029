"""Localization robustness (issue 15): which findings survive the choice of corruption, metric and window.

`robustness_experiment` bootstraps one experiment's raw sweeps on one model (prompts resampled,
metrics recomputed per resample) and writes its verdict table, cell / pair / circuit tables, a
one-page Markdown summary, the JSON the front page reads, and the figure
(`R/tables/robustness_<experiment>_<model>*`, `F/robustness_<experiment>_<model>.png|pdf`).
`robustness_summary` writes the report's front page (`R/robustness/summary.rst`), which the
Snakefile's `report:` directive shows once it exists.

Targets: `robustness` (everything), `robustness_<experiment>` (one experiment, all its models).

Config (defaults in the schema): robustness.n_boot, .ci, .seed, .robust, .unstable, .floor_room;
models.<name>.circuit, a known-circuit JSON (GPT-2 small's IOI experiments default to Wang et
al.'s heads in data/, toy models to `circuit.json` beside their weights when it exists).

Uses from common.smk / analysis.smk / attribution.smk: R, F, LOG, EXPERIMENTS, experiment_cells,
sweep_path, attrib_raw_path, model_spec, one_of, _is_gpt2_small.
"""

import os

from patchbench.analysis.robustness_report import OUTPUT_SUFFIXES


ROBUSTNESS = config["robustness"]  # defaults from the schema


def robustness_stem(experiment, model):
    return R("tables", f"robustness_{experiment}_{model}")


def robustness_figures(experiment, model):
    return [F(f"robustness_{experiment}_{model}.{ext}") for ext in ("png", "pdf")]


def robustness_pairs():
    """(experiment, model) of every configured experiment."""
    return [(name, m) for name, exp in EXPERIMENTS.items() for m in exp["models"]]


def robustness_json(experiment, model):
    return robustness_stem(experiment, model) + OUTPUT_SUFFIXES["json"]


def robustness_targets():
    """Every experiment's robustness outputs and the report's front page (used by ``rule all``)."""
    out = []
    for name, m in robustness_pairs():
        out += [robustness_stem(name, m) + s for s in OUTPUT_SUFFIXES.values()]
        out += robustness_figures(name, m)
    return out + [R("robustness", "summary.rst")]


def robustness_raws(experiment, model):
    """The raw per-prompt frames of an experiment's cells on one model (attribution's when it replaces exact)."""
    cells = [c for c in experiment_cells(experiment) if c[0] == model]
    if config["engine"]["method"] == "attribution":
        return [attrib_raw_path(*c) for c in cells]
    return [sweep_path(*c) for c in cells]


def known_circuit_file(model, task):
    """The known-circuit JSON for (model, task), or None: models.<name>.circuit, Wang et al.'s
    GPT-2-small heads for the IOI tasks, or a toy model's `circuit.json` beside its weights."""
    entry = config["models"][model]
    if entry.get("circuit"):
        return entry["circuit"]
    if _is_gpt2_small(model) and task.startswith("ioi"):
        return str(Path(workflow.basedir, "data", "ioi_heads_gpt2_small.json"))
    spec = model_spec(model)
    beside = Path(spec.path, "circuit.json") if spec.source == "toy" and spec.path else None
    return str(beside) if beside is not None and beside.is_file() else None


def _circuit_input(wildcards):
    path = known_circuit_file(wildcards.model, EXPERIMENTS[wildcards.experiment]["task"])
    return [path] if path else []


def robustness_front_page():
    """The report's front page: the generated summary once it exists, else the static page."""
    generated = R("robustness", "summary.rst")
    return os.path.abspath(generated) if os.path.exists(generated) else "workflow/report/workflow.rst"


rule robustness_experiment:
    input:
        raws=lambda w: robustness_raws(w.experiment, w.model),
        circuit=_circuit_input,
    output:
        verdicts=report(
            R("tables/robustness_{experiment}_{model}.csv"),
            caption="../report/robustness_table.rst",
            category="Robustness",
            subcategory="{experiment}",
            labels={"model": "{model}", "experiment": "{experiment}", "output": "table"},
        ),
        cells=R("tables/robustness_{experiment}_{model}_cells.csv"),
        pairs=R("tables/robustness_{experiment}_{model}_pairs.csv"),
        circuit=R("tables/robustness_{experiment}_{model}_circuit.csv"),
        markdown=R("tables/robustness_{experiment}_{model}.md"),
        json=R("tables/robustness_{experiment}_{model}.json"),
        png=report(
            F("robustness_{experiment}_{model}.png"),
            caption="../report/robustness_figure.rst",
            category="Robustness",
            subcategory="{experiment}",
            labels={"model": "{model}", "experiment": "{experiment}", "output": "figure"},
        ),
        pdf=F("robustness_{experiment}_{model}.pdf"),
    log:
        LOG("robustness/{experiment}_{model}.log"),
    wildcard_constraints:
        experiment=one_of(EXPERIMENTS),
        model=one_of(config["models"]),
    params:
        settings=ROBUSTNESS,
        task=lambda w: EXPERIMENTS[w.experiment]["task"],
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/robustness.py"


rule robustness_summary:
    input:
        [robustness_json(name, m) for name, m in robustness_pairs()],
    output:
        R("robustness/summary.rst"),
    log:
        LOG("robustness/summary.log"),
    params:
        title=config["report"]["title"],
        suite=config["suite"],
    script:
        "../scripts/robustness_summary.py"


rule robustness:
    input:
        robustness_targets(),


def _robustness_experiment_rule(name):
    rule:
        name:
            f"robustness_{name}"
        input:
            [f for m in EXPERIMENTS[name]["models"] for f in [robustness_json(name, m), *robustness_figures(name, m)]],


for _name in EXPERIMENTS:
    _robustness_experiment_rule(_name)
