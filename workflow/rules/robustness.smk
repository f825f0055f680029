"""Localization robustness (issue 15): which findings survive the choice of corruption, metric and window.

`robustness_model_<model>` bootstraps the raw sweeps of every experiment run on one model
(prompts resampled, metrics recomputed per resample) and writes per experiment its verdict table,
cell / pair / circuit tables, a one-page Markdown summary, the JSON the front page reads, and the
figure (`R/tables/robustness_<experiment>_<model>*`, `F/robustness_<experiment>_<model>.png|pdf`).
One job per model: the work per experiment is a second or two, so starting Python, pandas and
matplotlib once per model instead of once per experiment is most of the cost saved.
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
import re

from patchbench.analysis.robustness_report import OUTPUT_SUFFIXES


ROBUSTNESS = config["robustness"]  # defaults from the schema
as_report = report  # snakemake.io.report; a line may not start with `report` (the global keyword)


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


def robustness_front_page():
    """The report's front page: the generated summary once it exists, else the static page."""
    generated = R("robustness", "summary.rst")
    return os.path.abspath(generated) if os.path.exists(generated) else "workflow/report/workflow.rst"


def _rule_name(text):
    return re.sub(r"\W", "_", text)


def _robustness_rule(model):
    """The rule that writes the robustness outputs of every experiment run on ``model``: one job per
    model, so that Python and matplotlib start once for all its experiments (the demo's budget)."""
    names = [n for n, e in EXPERIMENTS.items() if model in e["models"]]
    outputs, plan = [], {}
    for n in names:
        stem = robustness_stem(n, model)
        labels = {"model": model, "experiment": n}
        files = {k: stem + s for k, s in OUTPUT_SUFFIXES.items()}
        png, pdf = robustness_figures(n, model)
        outputs += [
            as_report(files["verdicts"], caption="../report/robustness_table.rst", category="Robustness",
                   subcategory=n, labels={**labels, "output": "table"}),
            *[files[k] for k in OUTPUT_SUFFIXES if k != "verdicts"],
            as_report(png, caption="../report/robustness_figure.rst", category="Robustness", subcategory=n,
                   labels={**labels, "output": "figure"}),
            pdf,
        ]  # fmt: skip
        task = EXPERIMENTS[n]["task"]
        plan[n] = {"raws": robustness_raws(n, model), "task": task, "circuit": known_circuit_file(model, task),
                   "stem": stem, "figures": [png, pdf]}  # fmt: skip
    circuits = sorted({c["circuit"] for c in plan.values() if c["circuit"]})

    rule:
        name:
            f"robustness_model_{_rule_name(model)}"
        input:
            raws=[r for c in plan.values() for r in c["raws"]],
            circuits=circuits,
        output:
            outputs,
        log:
            LOG("robustness", f"{model}.log"),
        params:
            model=model,
            plan=plan,
            settings=ROBUSTNESS,
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/robustness.py"


for _model in sorted({m for e in EXPERIMENTS.values() for m in e["models"]}):
    _robustness_rule(_model)


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
