"""Attribution patching beside exact patching: attribution sweeps of every grid cell, and their agreement.

`attribution_<experiment>` estimates every effect of an experiment's sweeps on one model from one
forward and a few backward passes each (patchbench.attribution), and writes per cell the raw frame
(`.raw.parquet`, the engine's raw schema) and its effects with detection (the effects schema,
method = attribution); like the exact sweeps, it is one job per (model, experiment). `agreement`
pairs those effects with the exact ones of the same cells, per (model, task).

Config (all optional; defaults in brackets): attribution.qk_fix [false] applies AtP*'s QK fix to
whole-head sweeps (attn_head, position all); attribution.k [2.0] the detection threshold in SDs;
attribution.top [5] disagreeing components listed per plot; attribution.tasks [ioi, factual] the
tasks whose agreement `agreement_targets()` asks for; attribution.windows [all] the window sizes
whose cells enter it.
"""


ATTRIB = config["attribution"]  # defaults from the schema


def attrib_raw_path(model, task, corruption, site, position, window):
    return R("attrib", model, task, corruption, f"{site}-{position}_w{window}.raw.parquet")


def attrib_effects_path(model, task, corruption, site, position, window):
    return R("attrib", model, task, corruption, f"{site}-{position}_w{window}.parquet")


def cells_of(model, task):
    """Every configured sweep cell of (model, task) whose window is in attribution.windows (when set)."""
    windows = ATTRIB.get("windows")
    return sorted(
        {
            c
            for n in EXPERIMENTS
            for c in experiment_cells(n)
            if c[0] == model and c[1] == task and (windows is None or c[5] in windows)
        }
    )


def agreement_targets():
    """Agreement tables and figures for every configured model of attribution.tasks."""
    out = []
    for task in ATTRIB.get("tasks", ["ioi", "factual"]):
        models = sorted({c[0] for n in experiments_of(task=task) for c in experiment_cells(n)})
        for m in models:
            out += [
                R("tables", f"agreement_{m}_{task}.csv"),
                R("tables", f"agreement_{m}_{task}.md"),
                F(f"agreement_{m}_{task}.png"),
                F(f"agreement_{m}_{task}.pdf"),
            ]
    return out


def attribution_grid(name):
    """(corruption, window) of experiment ``name`` that attribution estimates: the windows of
    attribution.windows, or every window when attribution replaces exact patching (engine.method)."""
    windows = ATTRIB.get("windows")
    every = windows is None or config["engine"]["method"] == "attribution"
    return [(c, w) for c, w in experiment_grid(name) if every or w in windows]


def _attribution_rule(name):
    """The rule that estimates experiment ``name``'s cells by attribution for one model."""
    exp = EXPERIMENTS[name]
    cells = attribution_grid(name)
    task, site, position = exp["task"], exp["site"], exp.get("position", "all")

    rule:
        name:
            f"attribution_{name}"
        input:
            prompts=R("prompts", "{model}", f"{task}.parquet"),
            cache=R("cache", "{model}", f"{task}.clean.safetensors"),
            weights=weight_files,
        output:
            raw=[attrib_raw_path("{model}", task, c, site, position, w) for c, w in cells],
            effects=[attrib_effects_path("{model}", task, c, site, position, w) for c, w in cells],
        log:
            [LOG("attrib", "{model}", task, c, f"{site}-{position}_w{w}.log") for c, w in cells],
        wildcard_constraints:
            model=one_of(exp["models"]),
        params:
            model=lambda w: config["models"][w.model],
            results_dir=RESULTS,
            experiment=exp,
            cells=cells,
            noise=config["noise"],
            qk_fix=ATTRIB.get("qk_fix", False),
            k=ATTRIB.get("k", 2.0),
        threads: lambda w: model_resources(w.model, "threads", 2)
        resources:
            mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
            runtime=lambda w: model_resources(w.model, "runtime", 30) * len(cells),
            gpu=lambda w: model_resources(w.model, "gpu", 0),
        script:
            "../scripts/attribution_sweep.py"


for _name in EXPERIMENTS:
    if attribution_grid(_name):
        _attribution_rule(_name)


rule agreement:
    input:
        exact=lambda w: [exact_effects_path(*c) for c in cells_of(w.model, w.task)],
        attribution=lambda w: [attrib_effects_path(*c) for c in cells_of(w.model, w.task)],
    output:
        csv=R("tables/agreement_{model}_{task}.csv"),
        md=R("tables/agreement_{model}_{task}.md"),
        png=F("agreement_{model}_{task}.png"),
        pdf=F("agreement_{model}_{task}.pdf"),
    log:
        LOG("tables/agreement_{model}_{task}.log"),
    params:
        k=ATTRIB.get("k", 2.0),
        top=ATTRIB.get("top", 5),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/attribution_agreement.py"


rule agreement_all:
    input:
        agreement_targets(),
