"""Localization robustness (issue 15): which findings survive the choice of corruption, metric and window.

`robustness_model_<model>` bootstraps the raw sweeps of every experiment run on one model
(prompts resampled, metrics recomputed per resample) and writes per experiment the files of
`LAYOUT.robustness_files` (verdict, cell, pair and circuit tables, a one-page Markdown summary,
the JSON the front page reads, the figure). One job per model: the work per experiment is a
second or two, so starting Python, pandas and matplotlib once per model instead of once per
experiment is most of the cost saved. `robustness_summary` writes the report's front page
(`LAYOUT.front_page()`), which the Snakefile's `report:` shows once it exists.

Targets: `robustness` (everything), `robustness_<experiment>` (one experiment, all its models).

Config (defaults in the schema): the `robustness` block (the rule's `settings` param);
`models.<name>.circuit`, a known-circuit JSON (null: Wang et al.'s heads for GPT-2 small's IOI
tasks, a toy model's `circuit.json` beside its weights when it exists, else none).

Uses from common.smk: LAYOUT, LOG, CELLS, EXPERIMENTS, model_spec; from analysis.smk:
_is_gpt2_small, GPT2_SMALL_HEADS. Defines robustness_targets() for all_targets().
"""

import os
import re


def robustness_models():
    return sorted({m for e in EXPERIMENTS.values() for m in e["models"]})


def robustness_experiments(model):
    """The experiments run on ``model``, in the config's order."""
    return [n for n, e in EXPERIMENTS.items() if model in e["models"]]


def robustness_targets():
    """Every experiment's robustness files on every model, and the report's front page."""
    files = [
        f for m in robustness_models() for n in robustness_experiments(m) for f in LAYOUT.robustness_files(n, m).values()
    ]
    return files + [LAYOUT.front_page()]


def known_circuit_file(model, task):
    """The known-circuit JSON for (model, task), or None: models.<name>.circuit, Wang et al.'s
    GPT-2-small heads for the IOI tasks, or a toy model's `circuit.json` beside its weights."""
    configured = config["models"][model]["circuit"]
    if configured:
        return configured
    if _is_gpt2_small(model) and task.startswith("ioi"):
        return GPT2_SMALL_HEADS
    spec = model_spec(model)
    beside = Path(spec.path, "circuit.json") if spec.source == "toy" and spec.path else None
    return str(beside) if beside is not None and beside.is_file() else None


def robustness_plan(model):
    """What the job of ``model`` reads and writes, per experiment: its task, the raw frames of its
    cells (the method the tables report, ``engine.method``), the known circuit and the output files."""
    plan = {}
    for name in robustness_experiments(model):
        task = EXPERIMENTS[name]["task"]
        plan[name] = dict(
            task=task,
            raws=[c.reported().raw_path for c in CELLS[name] if c.model == model],
            circuit=known_circuit_file(model, task),
            files=LAYOUT.robustness_files(name, model),
        )
    return plan


def robustness_front_page():
    """The report's front page: the generated summary once it exists, else the static page."""
    generated = LAYOUT.front_page()
    return os.path.abspath(generated) if os.path.exists(generated) else "workflow/report/workflow.rst"


def _robustness_outputs(model, plan):
    """The job's outputs; each experiment's verdict table and figure are report items."""
    out = []
    for name, p in plan.items():
        labels = {"model": model, "experiment": name}
        for kind, path in p["files"].items():
            caption = {"verdicts": "robustness_table", "png": "robustness_figure"}.get(kind)
            if caption is None:
                out.append(path)
                continue
            item = report(path, caption=f"../report/{caption}.rst", category="Robustness", subcategory=name,
                          labels={**labels, "output": "table" if kind == "verdicts" else "figure"})  # fmt: skip
            out.append(item)
    return out


def _robustness_rule(model):
    """The rule that writes the robustness files of every experiment run on ``model``."""
    plan = robustness_plan(model)
    rule_name = "robustness_model_" + re.sub(r"\W", "_", model)

    rule:
        name:
            rule_name
        input:
            raws=[r for p in plan.values() for r in p["raws"]],
            circuits=sorted({p["circuit"] for p in plan.values() if p["circuit"]}),
        output:
            _robustness_outputs(model, plan),
        log:
            LOG("robustness", f"{model}.log"),
        params:
            plan=plan,
            settings=config["robustness"],
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/robustness.py"


for _model in robustness_models():
    _robustness_rule(_model)


rule robustness_summary:
    input:
        [LAYOUT.robustness_files(n, m)["json"] for m in robustness_models() for n in robustness_experiments(m)],
    output:
        LAYOUT.front_page(),
    log:
        LOG("robustness", "summary.log"),
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
            [f for m in EXPERIMENTS[name]["models"] for f in LAYOUT.robustness_files(name, m).values()],


for _name in EXPERIMENTS:
    _robustness_experiment_rule(_name)
