"""Attribution patching beside exact patching: attribution sweeps of every grid cell, and their agreement.

`attribution_<experiment>` estimates every effect of an experiment's sweeps on one model from one
forward and a few backward passes each (patchbench.attribution), and writes per cell the raw frame
(`.raw.parquet`, the engine's raw schema) and its effects with detection (the effects schema,
method = attribution); like the exact sweeps, it is one job per (model, experiment), and its params
carry the job's attribution Cells (patchbench.cell.attribution_cells). `agreement` pairs those
effects with the exact ones of the same cells, per (model, task).

Config (defaults in the schema): attribution.qk_fix applies AtP*'s QK fix to whole-head sweeps
(attn_head, position all); attribution.k the detection threshold in SDs; attribution.top the
disagreeing components listed per plot; attribution.tasks the tasks whose agreement
`agreement_targets()` asks for; attribution.windows the window sizes whose cells enter it.
"""


ATTRIB = config["attribution"]


def agreement_targets():
    """Agreement tables and figures for every configured model of attribution.tasks."""
    out = []
    for task in ATTRIB["tasks"]:
        for m in sorted({c.model for c in all_cells() if c.task == task}):
            name = f"agreement_{m}_{task}"
            out += [LAYOUT.table(name, ext) for ext in ("csv", "md")]
            out += [LAYOUT.figure_file(name, ext) for ext in ("png", "pdf")]
    return out


def _attribution_rule(name):
    """The rule that estimates experiment ``name``'s cells by attribution for one model."""
    exp = EXPERIMENTS[name]
    patterns = attribution_cells(config, name, model="{model}")

    def records(w):
        cells = attribution_cells(config, name, model=w.model)
        return {p: cell_fingerprint(c) for c in cells for p in (c.raw_path, c.effects_path)}

    rule:
        name:
            f"attribution_{name}"
        input:
            prompts=LAYOUT.prompts("{model}", exp["task"]),
            cache=LAYOUT.cache("{model}", exp["task"]),
            weights=weight_files,
            references=lambda w: sorted({c.reference_path for c in attribution_cells(config, name, model=w.model)} - {None}),
            stamp=stamped(f"attribution_{name}", [dict(model=m) for m in exp["models"]], records),
        output:
            raw=[c.raw_path for c in patterns],
            effects=[c.effects_path for c in patterns],
        log:
            [c.log_path for c in patterns],
        wildcard_constraints:
            model=one_of(exp["models"]),
        params:
            cells=lambda w: attribution_cells(config, name, model=w.model),
            records=records,
            fingerprint=fingerprint(cells=lambda w: attribution_cells(config, name, model=w.model)),
        threads: model_threads
        resources:
            **model_job_resources(len(patterns)),
        script:
            "../scripts/sweep.py"


for _name in EXPERIMENTS:
    if attribution_cells(config, _name):
        _attribution_rule(_name)


rule agreement:
    input:
        exact=lambda w: [c.as_method("exact").effects_path for c in agreement_cells(config, w.model, w.task)],
        attribution=lambda w: [c.effects_path for c in agreement_cells(config, w.model, w.task)],
    output:
        csv=LAYOUT.table("agreement_{model}_{task}", "csv"),
        md=LAYOUT.table("agreement_{model}_{task}", "md"),
        png=LAYOUT.figure_file("agreement_{model}_{task}", "png"),
        pdf=LAYOUT.figure_file("agreement_{model}_{task}", "pdf"),
    log:
        LOG("tables/agreement_{model}_{task}.log"),
    params:
        k=ATTRIB["k"],
        top=ATTRIB["top"],
        fingerprint=fingerprint("attribution"),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/attribution_agreement.py"


rule agreement_all:
    input:
        agreement_targets(),
