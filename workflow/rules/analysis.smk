"""Paper outputs: Tables 1-5, the figure set and claims.csv (issue 6).

Each table / figure is its own target named after it (``snakemake --cores 2 table1``,
``fig_ioi_heads``, ``claims``); the per-model files come from the rules ``<target>_model``,
generated from ``TABLES`` and ``FIGURES`` below. Which models a target covers follows the
experiments of the config, selected by task / site / position (not by experiment name), so
partial configs build what they can. Every output is registered with ``report()`` and a caption
in workflow/report/.

Uses from common.smk: LAYOUT, LOG, CELLS, EXPERIMENTS, weight_files, model_spec, model_threads,
model_job_resources; it defines ``analysis_targets()`` for ``rule all``.
"""

from types import SimpleNamespace

from patchbench.analysis.ioi_classes import GPT2_SMALL_ALIASES
from patchbench.practices.grid import circuit_file
from patchbench.toy.circuit import read_circuit


# ----------------------------------------------------------------------------- selection helpers
def _builtin(task):
    """Whether ``task`` is the built-in generator of that name (a task read from a file is a user's, not the paper's)."""
    return "file" not in (config["tasks"].get(task) or {})


def _exps(task_prefix, site, position=None, exclude_position=None):
    """Experiment names whose built-in task starts with ``task_prefix`` (exact unless it ends in '_')."""
    out = []
    for name, e in EXPERIMENTS.items():
        task = e["task"]
        ok = task.startswith(task_prefix) if task_prefix.endswith("_") else task == task_prefix
        ok = ok and _builtin(task)
        pos = e["position"]
        if ok and e["site"] == site and (position is None or pos == position) and pos != exclude_position:
            out.append(name)
    return out


def _models(names):
    return sorted({m for n in names for m in EXPERIMENTS[n]["models"]})


def _cells(names, model):
    return [c for n in names for c in CELLS[n] if c.model == model]


def _effects_of(names, model):
    return sorted({c.reported().effects_path for c in _cells(names, model)})


def _sweeps_of(names, model):
    return sorted({c.raw_path for c in _cells(names, model)})


def _windows(names, model):
    return sorted({c.window for c in _cells(names, model)})


def _is_gpt2_small(model):
    configured = model in config["models"] and config["models"][model]["hub_name"] in GPT2_SMALL_ALIASES
    return model in GPT2_SMALL_ALIASES or configured


IOI = _exps("ioi", "attn_head")
IOI_S1IO = _exps("ioi_s1io", "attn_head")
IOI_ABC = _exps("ioi_abc", "attn_head")
IOI_SI_VALUES = _exps("ioi", "head_v")  # §3.2: the S-inhibition heads' values patched together
GREATER_THAN = _exps("greater_than", "attn_head")
DOCSTRING = _exps("docstring", "attn_head", position="each")
ARITHMETIC = _exps("arithmetic_", "mlp")
FACTUAL_LAST = _exps("factual", "mlp", exclude_position="each")
FACTUAL_ALL = _exps("factual", "mlp", position="each")
SLIDING_MODELS = [m for m in _models(FACTUAL_LAST) if 1 in _windows(FACTUAL_LAST, m) and len(_windows(FACTUAL_LAST, m)) > 1]


def _recovery_paths(model):
    """§3.2 (b): the engine's head_v sweep effects when configured, else the nm_attention rule's frame."""
    if model in _models(IOI_SI_VALUES):
        return _effects_of(IOI_SI_VALUES, model)
    return [LAYOUT.analysis("nm_recovery", model)]


#: Wang et al.'s IOI head classes of GPT-2 small (Table 1's published lists; robustness's known circuit)
GPT2_SMALL_HEADS = str(Path(workflow.basedir, "data", "ioi_heads_gpt2_small.json"))


def known_circuit_file(model, task):
    """The known-circuit JSON for (model, task), or None: models.<name>.circuit, Wang et al.'s
    GPT-2-small heads for the IOI tasks, or the `circuit.json` beside a toy or local model's weights
    (patchbench.practices.grid.circuit_file)."""
    if not config["models"][model]["circuit"] and _is_gpt2_small(model) and task.startswith("ioi"):
        return GPT2_SMALL_HEADS
    return circuit_file(config, model)


def ioi_truth(model):
    """A toy model's `circuit.json` when it holds an IOI circuit (the truth by construction), else None."""
    spec = model_spec(model)
    if spec.source != "toy" or not spec.path:
        return None
    circuit = read_circuit(spec.path)
    return str(Path(spec.path, "circuit.json")) if circuit is not None and "ioi" in circuit.tasks else None


def _classes_source(model):
    if _is_gpt2_small(model):
        return "Wang et al. (2023)"
    return "circuit.json (known by construction)" if ioi_truth(model) else "automatic classifier"


def _classes_input(wildcards):
    """Table 1's head classes: the published GPT-2-small lists, an organism's circuit.json, or
    this model's classifier output."""
    if _is_gpt2_small(wildcards.model):
        return GPT2_SMALL_HEADS
    return ioi_truth(wildcards.model) or LAYOUT.analysis("ioi_classes", wildcards.model, "csv")


def _effects(names):
    return lambda w: _effects_of(names, w.model)


#: table -> the experiments it reads, and its inputs beside their effects
TABLES = {
    "table1": (IOI, {"classes": _classes_input}),
    "table2": (DOCSTRING, {"prompts": LAYOUT.prompts("{model}", "docstring")}),
    "table3": (GREATER_THAN, {}),
    "table4": (IOI_S1IO, {}),
    "table5": (IOI, {}),
}
#: figure -> (the models it covers, its inputs, report subcategory, caption file in workflow/report/,
#: the task whose known circuit it outlines)
FIGURES = {
    "fig_ioi_heads": (_models(IOI), {"effects": _effects(IOI)}, "Head patching", "fig_heads", "ioi"),
    "fig_ioi_s1io_heads": (_models(IOI_S1IO), {"effects": _effects(IOI_S1IO)}, "Head patching", "fig_heads", "ioi_s1io"),
    "fig_ioi_abc_heads": (_models(IOI_ABC), {"effects": _effects(IOI_ABC)}, "Head patching", "fig_heads", "ioi_abc"),
    "fig_greater_than_heads": (_models(GREATER_THAN), {"effects": _effects(GREATER_THAN)}, "Head patching", "fig_heads", "greater_than"),
    "fig_docstring_heads": (
        _models(DOCSTRING),
        {"effects": _effects(DOCSTRING), "prompts": LAYOUT.prompts("{model}", "docstring")},
        "Head patching",
        "fig_docstring_heads",
        "docstring",
    ),
    "fig_arithmetic_mlp": (_models(ARITHMETIC), {"effects": _effects(ARITHMETIC)}, "MLP patching", "fig_arithmetic_mlp", "arithmetic"),
    "fig_factual_mlp_last": (_models(FACTUAL_LAST), {"effects": _effects(FACTUAL_LAST)}, "MLP patching", "fig_factual_mlp_last", "factual"),
    "fig_sliding_vs_summed": (SLIDING_MODELS, {"effects": _effects(FACTUAL_LAST)}, "Sliding window", "fig_sliding_vs_summed", "factual"),
    "fig_factual_mlp_all": (
        _models(FACTUAL_ALL),
        {"categories": LAYOUT.analysis("factual_categories", "{model}")},
        "MLP patching",
        "fig_factual_mlp_all",
        "factual",
    ),
    "fig_nm_attention": (
        _models(IOI),
        {"attention": LAYOUT.analysis("nm_attention", "{model}"), "recovery": lambda w: _recovery_paths(w.model)},
        "IOI name movers",
        "fig_nm_attention",
        "ioi",
    ),
}
TABLE_EXTS = ("csv", "md", "tex")
FIG_EXTS = ("png", "pdf")


def _table_files(name):
    return [LAYOUT.table(f"{name}_{m}", ext) for m in _models(TABLES[name][0]) for ext in TABLE_EXTS]


def _fig_files(name):
    return [LAYOUT.figure_file(f"{name}_{m}", ext) for m in FIGURES[name][0] for ext in FIG_EXTS]


def _experiment_fig_files():
    """Every experiment's generic figure on every model (built-in and user tasks alike)."""
    return [LAYOUT.figure_file(f"experiment_{e}_{m}", ext) for e, exp in EXPERIMENTS.items()
            for m in exp["models"] for ext in FIG_EXTS]  # fmt: skip


def _agreement_files():
    """The classifier-vs-truth table of every Table-1 model whose IOI circuit is known by construction."""
    return [LAYOUT.table(f"table1_classifier_{m}", ext) for m in _models(IOI) if ioi_truth(m) for ext in ("csv", "md")]


#: every named target: its files
TARGETS = {
    **{name: _table_files(name) for name in TABLES},
    **{name: _fig_files(name) for name in FIGURES},
    "experiment_figures": _experiment_fig_files(),
}
TARGETS["table1"] += _agreement_files()


def analysis_targets():
    """Every table, figure and claims file the config's experiments allow (used by ``rule all``)."""
    return [f for files in TARGETS.values() for f in files] + [LAYOUT.claims(), LAYOUT.claims(applied=True)]


# ----------------------------------------------------------------------------- per-model analysis frames
CLASSES_FINGERPRINT = fingerprint(("models", "{model}"), model_files="weights")
NM_FINGERPRINT = fingerprint(("models", "{model}"), "noise", model_files="weights")
IOI_MODEL_JOBS = [dict(model=m) for m in _models(IOI)]


rule ioi_head_classes:
    input:
        prompts=LAYOUT.prompts("{model}", "ioi"),
        weights=weight_files,
        stamp=stamped(
            "ioi_head_classes",
            IOI_MODEL_JOBS,
            each_output([LAYOUT.analysis(k, "{model}", "csv") for k in ("ioi_head_stats", "ioi_classes")], CLASSES_FINGERPRINT),
        ),
    output:
        stats=LAYOUT.analysis("ioi_head_stats", "{model}", "csv"),
        classes=LAYOUT.analysis("ioi_classes", "{model}", "csv"),
    log:
        LOG("analysis/ioi_head_classes_{model}.log"),
    params:
        model=lambda w: model_spec(w.model),
        fingerprint=CLASSES_FINGERPRINT,
    threads: model_threads
    resources:
        **model_job_resources(),
    script:
        "../scripts/analysis_ioi_classes.py"


rule ioi_class_agreement:
    """Beside Table 1 of an organism: the automatic classifier's classes against circuit.json."""
    input:
        truth=lambda w: ioi_truth(w.model),
        classifier=LAYOUT.analysis("ioi_classes", "{model}", "csv"),
    output:
        csv=report(LAYOUT.table("table1_classifier_{model}", "csv"), caption="../report/table1_classifier.rst",
                   category="Tables", subcategory="Table 1", labels={"model": "{model}", "table": "1 (classes)"}),
        md=LAYOUT.table("table1_classifier_{model}", "md"),
    log:
        LOG("analysis/table1_classifier_{model}.log"),
    params:
        fingerprint=fingerprint(),
    localrule: True
    script:
        "../scripts/analysis_class_agreement.py"


rule factual_categories:
    input:
        sweeps=lambda w: _sweeps_of(FACTUAL_ALL, w.model),
        prompts=LAYOUT.prompts("{model}", "factual"),
    output:
        LAYOUT.analysis("factual_categories", "{model}"),
    log:
        LOG("analysis/factual_categories_{model}.log"),
    params:
        fingerprint=fingerprint(),
    resources:
        mem_mb=4000,
    script:
        "../scripts/analysis_factual_categories.py"


rule nm_attention:
    input:
        prompts=LAYOUT.prompts("{model}", "ioi"),
        weights=weight_files,
        classes=_classes_input,
        stamp=stamped(
            "nm_attention",
            IOI_MODEL_JOBS,
            each_output([LAYOUT.analysis(k, "{model}") for k in ("nm_attention", "nm_recovery")], NM_FINGERPRINT),
        ),
    output:
        attention=LAYOUT.analysis("nm_attention", "{model}"),
        recovery=LAYOUT.analysis("nm_recovery", "{model}"),
    log:
        LOG("analysis/nm_attention_{model}.log"),
    params:
        model=lambda w: model_spec(w.model),
        noise=config["noise"],
        fingerprint=NM_FINGERPRINT,
    threads: model_threads
    resources:
        **model_job_resources(),
    script:
        "../scripts/analysis_nm_attention.py"


# ----------------------------------------------------------------------------- tables and figures
def _table_rule(name):
    """The rule that writes Table ``name`` (CSV, Markdown, LaTeX) for one model."""
    exps, extra = TABLES[name]
    stem = f"{name}_{{model}}"

    rule:
        name:
            f"{name}_model"
        input:
            effects=_effects(exps),
            **extra,
        output:
            csv=report(LAYOUT.table(stem, "csv"), caption=f"../report/{name}.rst", category="Tables",
                       subcategory=f"Table {name[-1]}", labels={"model": "{model}", "table": name[-1]}),
            md=LAYOUT.table(stem, "md"),
            tex=LAYOUT.table(stem, "tex"),
        log:
            LOG("analysis", f"{stem}.log"),
        params:
            table=name,
            source=lambda w: _classes_source(w.model),
            fingerprint=fingerprint(),
        script:
            "../scripts/analysis_tables.py"


def _circuit_input(task):
    """A figure's known-circuit file (``known_circuit_file`` of robustness.smk), or none."""
    return lambda w: [f for f in [known_circuit_file(w.model, task)] if f]


def _figure_rule(name):
    """The rule that draws figure ``name`` (PNG and PDF) for one model."""
    _, inputs, subcategory, caption, task = FIGURES[name]
    stem, short = f"{name}_{{model}}", name.removeprefix("fig_")

    rule:
        name:
            f"{name}_model"
        input:
            **inputs,
            circuit=_circuit_input(task),
        output:
            png=report(LAYOUT.figure_file(stem, "png"), caption=f"../report/{caption}.rst", category="Figures",
                       subcategory=subcategory, labels={"model": "{model}", "figure": short}),
            pdf=LAYOUT.figure_file(stem, "pdf"),
        log:
            LOG("analysis", f"{stem}.log"),
        params:
            figure=short,
            task=task,
            fingerprint=fingerprint(),
        script:
            "../scripts/analysis_figures.py"


def _target_rule(name, files):
    """The named target ``name``: every model's files of one table or figure."""

    rule:
        name:
            name
        input:
            files,


for _name in TABLES:
    _table_rule(_name)
for _name in FIGURES:
    _figure_rule(_name)
for _name, _files in TARGETS.items():
    _target_rule(_name, _files)


rule experiment_figure:
    """The generic figure of one experiment on one model, whatever its task (patchbench.plot.experiment_figure)."""
    input:
        effects=lambda w: _effects_of([w.experiment], w.model),
        circuit=lambda w: [f for f in [known_circuit_file(w.model, EXPERIMENTS[w.experiment]["task"])] if f],
    output:
        png=report(LAYOUT.figure_file("experiment_{experiment}_{model}", "png"), caption="../report/experiment_figure.rst",
                   category="Experiments", subcategory="{experiment}", labels={"model": "{model}", "figure": "{experiment}"}),
        pdf=LAYOUT.figure_file("experiment_{experiment}_{model}", "pdf"),
    log:
        LOG("analysis", "experiment_{experiment}_{model}.log"),
    wildcard_constraints:
        experiment=one_of(EXPERIMENTS),
        model=one_of(config["models"]),  # "experiment_a_b_c": only configured names split it
    params:
        task=lambda w: EXPERIMENTS[w.experiment]["task"],
        fingerprint=fingerprint(),
    resources:
        mem_mb=2000,
    script:
        "../scripts/experiment_figure.py"


rule tables:
    input:
        [f for name in TABLES for f in TARGETS[name]],


rule figures:
    input:
        [f for name in [*FIGURES, "experiment_figures"] for f in TARGETS[name]],


# ----------------------------------------------------------------------------- claims
def _claims_inputs():
    """Every input a claim may use (the paper's tasks only); the script turns absent ones into 'not run' rows."""
    ioi_models = _models(IOI)
    return {
        "factual_last": [f for m in _models(FACTUAL_LAST) for f in _effects_of(FACTUAL_LAST, m)],
        "factual_categories": [LAYOUT.analysis("factual_categories", m) for m in _models(FACTUAL_ALL)],
        "ioi_effects": [f for m in ioi_models for f in _effects_of(IOI, m)],
        "abc_effects": [f for m in _models(IOI_ABC) for f in _effects_of(IOI_ABC, m)],
        "baseline_effects": sorted({f for names in (FACTUAL_ALL, FACTUAL_LAST, IOI, IOI_ABC)
                                    for m in _models(names) for f in _effects_of(names, m)}),  # fmt: skip
        "nm_attention": [LAYOUT.analysis("nm_attention", m) for m in ioi_models],
        "nm_recovery": [f for m in ioi_models for f in _recovery_paths(m)],
        "classes": [_classes_input(SimpleNamespace(model=m)) for m in ioi_models],
    }


rule claims:
    input:
        **_claims_inputs(),
    output:
        paper=report(LAYOUT.claims(), caption="../report/claims.rst", category="Claims"),
        applied=report(LAYOUT.claims(applied=True), caption="../report/claims_applied.rst", category="Claims"),
    log:
        LOG("analysis/claims.log"),
    params:
        ioi_models=_models(IOI),
        hub_names={m: model_spec(m).hub_name for m in config["models"]},
        fingerprint=fingerprint(),
    resources:
        mem_mb=4000,
    script:
        "../scripts/analysis_claims.py"
