"""Localization robustness (issue 15): which findings survive the choice of corruption, metric and window.

`robustness_analysis` bootstraps the raw sweeps of every experiment on every model (prompts
resampled, metrics recomputed per resample) and writes per (experiment, model) the files of
`LAYOUT.robustness_files` (verdict, cell, pair and circuit tables, a one-page Markdown summary,
the JSON of its headline facts, the figure). `report_front_page` writes the report's front page
(`LAYOUT.front_page()`) from those facts and each experiment's figure (rule `experiment_figure`,
embedded in the page); the Snakefile's `report:` shows that page once it exists. It is one job: the
work per experiment is a second or less, so starting Python, pandas and matplotlib once for the
whole grid, instead of once per model plus a job for the front page, is most of what it costs.

Targets: `robustness` (everything), `robustness_<experiment>` (one experiment, all its models).

Config (defaults in the schema): the `robustness` block (the rule's `settings` param);
`models.<name>.circuit`, a known-circuit JSON (null: Wang et al.'s heads for GPT-2 small's IOI
tasks, a toy model's `circuit.json` beside its weights when it exists, else none).

Uses from common.smk: LAYOUT, LOG, CELLS, EXPERIMENTS, model_spec; from analysis.smk:
known_circuit_file. Defines robustness_targets() for all_targets().
"""

import os

def robustness_plan():
    """What the job reads and writes, per (experiment, model) in the config's order (the front
    page's order): the task, the raw frames of its cells (the method the tables report,
    ``engine.method``), the known circuit, the output files and the experiment's figure, which the
    front page embeds (written by the rule ``experiment_figure``)."""
    plan = []
    for name, exp in EXPERIMENTS.items():
        for model in exp["models"]:
            plan.append(
                dict(
                    experiment=name,
                    model=model,
                    task=exp["task"],
                    raws=[c.reported().raw_path for c in CELLS[name] if c.model == model],
                    circuit=known_circuit_file(model, exp["task"]),
                    files=LAYOUT.robustness_files(name, model),
                    key_figure=LAYOUT.figure_file(f"experiment_{name}_{model}", "png"),
                )
            )
    return plan


ROBUSTNESS_PLAN = robustness_plan()


def robustness_targets():
    """Every experiment's robustness files on every model, and the report's front page."""
    return [f for p in ROBUSTNESS_PLAN for f in p["files"].values()] + [LAYOUT.front_page()]


def robustness_front_page():
    """The report's front page: the generated summary once it exists, else the static page."""
    generated = LAYOUT.front_page()
    return os.path.abspath(generated) if os.path.exists(generated) else "workflow/report/workflow.rst"


def _robustness_outputs():
    """The job's outputs; each experiment's verdict table and figure are report items."""
    out = []
    for p in ROBUSTNESS_PLAN:
        labels = {"model": p["model"], "experiment": p["experiment"]}
        for kind, path in p["files"].items():
            caption = {"verdicts": "robustness_table", "png": "robustness_figure"}.get(kind)
            if caption is None:
                out.append(path)
                continue
            item = report(path, caption=f"../report/{caption}.rst", category="Robustness",
                          subcategory=p["experiment"], labels={**labels, "output": "table" if kind == "verdicts" else "figure"})  # fmt: skip
            out.append(item)
    return out


#: The job's fingerprint: the robustness settings, the plan and the known circuits' contents.
ROBUSTNESS_FINGERPRINT = fingerprint(
    "robustness", files=lambda w: sorted({p["circuit"] for p in ROBUSTNESS_PLAN if p["circuit"]})
)


rule robustness_analysis:
    input:
        raws=sorted({r for p in ROBUSTNESS_PLAN for r in p["raws"]}),
        circuits=sorted({p["circuit"] for p in ROBUSTNESS_PLAN if p["circuit"]}),
        stamp=stamped(
            "robustness_analysis",
            [{}],
            each_output([f for p in ROBUSTNESS_PLAN for f in p["files"].values()], ROBUSTNESS_FINGERPRINT),
        ),
    output:
        files=_robustness_outputs(),
    log:
        LOG("robustness", "robustness.log"),
    params:
        plan=ROBUSTNESS_PLAN,
        settings=config["robustness"],
        fingerprint=ROBUSTNESS_FINGERPRINT,
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/robustness.py"


rule report_front_page:
    """The report's front page: the practice benchmark's verdicts on the paper's advice (when the
    config's practice grid has an organism), then every experiment's robustness facts beside its
    figure."""
    input:
        facts=[p["files"]["json"] for p in ROBUSTNESS_PLAN],
        figures=[p["key_figure"] for p in ROBUSTNESS_PLAN],
        practices=lambda w: practices_front_page_files(),
    output:
        LAYOUT.front_page(),
    log:
        LOG("robustness", "front_page.log"),
    params:
        figures=[p["key_figure"] for p in ROBUSTNESS_PLAN],
        practices=lambda w: practices_front_page(),
    resources:
        mem_mb=1000,
    script:
        "../scripts/report_front_page.py"


rule robustness:
    input:
        robustness_targets(),


def _robustness_experiment_rule(name):
    rule:
        name:
            f"robustness_{name}"
        input:
            [f for p in ROBUSTNESS_PLAN if p["experiment"] == name for f in p["files"].values()],


for _name in EXPERIMENTS:
    _robustness_experiment_rule(_name)
