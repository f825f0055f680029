"""The ground-truth benchmark of patching practices (patchbench.practices): target `practices`.

For every experiment of `practices.experiments` and each of its models with a known circuit
(circuit.json beside the weights, or models.<m>.circuit), the grid of the config's `practices`
section (corruptions x directions x windows x methods; metrics and detection rules are read from
each sweep after the fact) is swept and scored against the circuit:

- `practices_plan` (a checkpoint, one job per model and experiment) asks each corruption of the
  grid whether it can corrupt the prompt set (its own check, e.g. resample needs two prompts of
  each template); a refused corruption is listed as not defined, and its sweeps are not run.
- `practices_sweep_<experiment>_<model>[_<corruption>]` runs the grid's cells that no experiment
  computes (patchbench.practices.grid.new_sweeps): one job per model for every corruption that
  cannot refuse a prompt set (STR, GN, zero), one more per corruption that can (resample, mean),
  which runs only where the plan found it defined. The cells the experiments already sweep are the
  same Cells, so their files are read, never recomputed.
- `practices_analysis` (one job) scores every practice, pools seeds, judges the paper's advice and
  writes practices_<task>.csv|md, figures/practices_<task>.png and practices_summary.md.

Models without a circuit are skipped; the job's log and the summary name them.

Uses from common.smk: LAYOUT, LOG, EXPERIMENTS, weight_files, model_threads, model_job_resources, one_of.
Defines practices_targets() for all_targets().
"""

import re
from types import SimpleNamespace

from patchbench.practices.grid import new_sweeps, practice_plans


PRACTICE_PLANS, PRACTICE_SKIPPED = practice_plans(config)
#: (experiment, model) of every organism seed the grid runs on
PRACTICE_RUNS = [(p.experiment, m) for p in PRACTICE_PLANS for m in p.seeds.values()]
PRACTICE_TASKS = list(dict.fromkeys(p.task for p in PRACTICE_PLANS))


def practices_targets():
    """Every task's practice table and figure, and the summary."""
    files = [f for t in PRACTICE_TASKS for f in LAYOUT.practice_files(t).values()]
    return files + [LAYOUT.practice_summary()]


def practices_front_page():
    """What the report's front page shows of the practice benchmark: its verdicts and each task's
    figure (nothing when no experiment of the config has a model with a known circuit)."""
    if not PRACTICE_PLANS:
        return {}
    return {
        "facts": LAYOUT.practice_front_page_facts(),
        "summary": LAYOUT.practice_summary(),
        "figures": [LAYOUT.practice_files(t)["png"] for t in PRACTICE_TASKS],
    }


def practices_front_page_files():
    """The files of practices_front_page(), the inputs of the report's front page."""
    page = practices_front_page()
    return [page["facts"], *page["figures"]] if page else []


def _plan_cells(experiment, model):
    """One cell per corruption of the grid (its check on the prompts is what the plan records)."""
    plan = next(p for p in PRACTICE_PLANS if p.experiment == experiment and model in p.seeds.values())
    seed = next(s for s, m in plan.seeds.items() if m == model)
    out = {}
    for sweep in plan.sweeps[seed]:
        if sweep.cell is not None:
            out.setdefault(sweep.cell.corruption, sweep.cell)
    return list(out.values())


checkpoint practices_plan:
    input:
        prompts=lambda w: LAYOUT.prompts(w.model, EXPERIMENTS[w.experiment]["task"]),
        references=lambda w: sorted({c.reference_path for c in _plan_cells(w.experiment, w.model)} - {None}),
    output:
        LAYOUT.practice_plan("{model}", "{experiment}"),
    log:
        LOG("practices", "plans", "{model}", "{experiment}.log"),
    wildcard_constraints:
        model=one_of(sorted({m for _, m in PRACTICE_RUNS})),
        experiment=one_of(sorted({e for e, _ in PRACTICE_RUNS})),
    params:
        cells=lambda w: _plan_cells(w.experiment, w.model),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/practices_plan.py"


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_")


def _practice_sweep_rule(experiment, model, group, cells):
    """The job that runs one group of the grid's new cells on one model (both engines, one load)."""
    task = EXPERIMENTS[experiment]["task"]
    name = f"practices_sweep_{_slug(experiment)}_{_slug(model)}" + (f"_{_slug(group)}" if group else "")
    outputs = [(c, c.raw_path) for c in cells] + [(c, c.effects_path) for c in cells if c.method == "attribution"]
    records = lambda w: {path: cell_fingerprint(c) for c, path in outputs}

    rule:
        name:
            name
        input:
            prompts=LAYOUT.prompts(model, task),
            cache=LAYOUT.cache(model, task),
            weights=weight_files(SimpleNamespace(model=model)),
            references=sorted({c.reference_path for c in cells} - {None}),
            stamp=stamped(name, [{}], records),
        output:
            [path for _, path in outputs],
        log:
            [c.log_path for c in cells],
        params:
            cells=cells,
            records=records,
            fingerprint=fingerprint(cells=lambda w: cells),
        threads: config["models"][model]["resources"]["threads"]
        resources:
            mem_mb=config["models"][model]["resources"]["mem_mb"],
            runtime=config["models"][model]["resources"]["runtime"] * len(cells),
            gpu=config["models"][model]["resources"]["gpu"],
        script:
            "../scripts/sweep.py"


for _experiment, _model in PRACTICE_RUNS:
    for _group, _new_cells in new_sweeps(config, _experiment, _model).items():
        _practice_sweep_rule(_experiment, _model, _group, _new_cells)


def _practice_raws(wildcards):
    """The raw frames the benchmark reads: every defined sweep of every plan, minus the corruptions
    that a plan (checkpoint) records as refused by the prompt set."""
    from patchbench.practices.build import refusals

    out = set()
    for plan in PRACTICE_PLANS:
        for seed, model in plan.seeds.items():
            refused = refusals(checkpoints.practices_plan.get(model=model, experiment=plan.experiment).output[0])
            out |= {s.cell.raw_path for s in plan.sweeps[seed] if s.cell is not None and s.cell.corruption not in refused}
    return sorted(out)


def _practice_outputs():
    out = []
    for task in PRACTICE_TASKS:
        for kind, path in LAYOUT.practice_files(task).items():
            if kind == "csv":
                out.append(path)
                continue
            caption = f"../report/practices_{'table' if kind == 'md' else 'figure'}.rst"
            out.append(report(path, caption=caption, category="Practice benchmark", labels={"task": task, "output": kind}))
    return out


rule practices_analysis:
    input:
        raws=_practice_raws,
        plans=[LAYOUT.practice_plan(m, e) for e, m in PRACTICE_RUNS],
        circuits=sorted({p.circuit for p in PRACTICE_PLANS}),
    output:
        files=_practice_outputs(),
        summary=report(LAYOUT.practice_summary(), caption="../report/practices_summary.rst",
                       category="Practice benchmark", labels={"task": "all", "output": "summary"}),  # fmt: skip
        facts=LAYOUT.practice_front_page_facts(),
    log:
        LOG("practices", "practices.log"),
    params:
        plans=PRACTICE_PLANS,
        skipped=PRACTICE_SKIPPED,
        runs=PRACTICE_RUNS,
        outputs={t: LAYOUT.practice_files(t) for t in PRACTICE_TASKS},
        grid=config["practices"],
        robustness=config["robustness"],
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/practices.py"


rule practices:
    input:
        practices_targets(),
