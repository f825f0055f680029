"""Paper outputs: Tables 1-5, the figure set and claims.csv (issue 6).

Each table / figure is its own target named after it (``snakemake --cores 2 table1``,
``fig_ioi_heads``, ``claims``); the per-model files come from the wildcard rules ``*_model``.
Which models a target covers follows the experiments of the config, selected by task / site /
position (not by experiment name), so partial configs build what they can. Every output is
registered with ``report()`` and a caption in workflow/report/.

Uses from common.smk: R, F, LOG, EXPERIMENTS, experiment_cells, effects_path, sweep_path,
prompts_path, weight_files, model_resources; it defines ``analysis_targets()`` for ``rule all``.
"""

from patchbench.analysis.ioi_classes import GPT2_SMALL_ALIASES


# ----------------------------------------------------------------------------- selection helpers
def _exps(task_prefix, site, position=None, exclude_position=None):
    """Experiment names whose task starts with ``task_prefix`` (exact unless it ends in '_')."""
    out = []
    for name, e in EXPERIMENTS.items():
        task = e["task"]
        ok = task.startswith(task_prefix) if task_prefix.endswith("_") else task == task_prefix
        pos = e.get("position", "all")
        if ok and e["site"] == site and (position is None or pos == position) and pos != exclude_position:
            out.append(name)
    return out


def _models(names):
    return sorted({m for n in names for m in EXPERIMENTS[n]["models"]})


def _cells(names, model):
    return [c for n in names for c in experiment_cells(n) if c[0] == model]


def _effects_of(names, model):
    return sorted({effects_path(*c) for c in _cells(names, model)})


def _sweeps_of(names, model):
    return sorted({sweep_path(*c) for c in _cells(names, model)})


def _windows(names, model):
    return sorted({c[5] for c in _cells(names, model)})


def _is_gpt2_small(model):
    entry = config["models"].get(model, {})
    return model in GPT2_SMALL_ALIASES or entry.get("hub_name") in GPT2_SMALL_ALIASES


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

#: target name -> (experiments, the models it covers)
HEAD_FIGURES = {
    "ioi_heads": IOI,
    "ioi_s1io_heads": IOI_S1IO,
    "ioi_abc_heads": IOI_ABC,
    "greater_than_heads": GREATER_THAN,
}
TABLE_EXPS = {"table1": IOI, "table2": DOCSTRING, "table3": GREATER_THAN, "table4": IOI_S1IO, "table5": IOI}
TABLE_EXTS = ("csv", "md", "tex")
FIG_EXTS = ("png", "pdf")


def _table_files(name):
    return [R("tables", f"{name}_{m}.{ext}") for m in _models(TABLE_EXPS[name]) for ext in TABLE_EXTS]


def _fig_files(name, models):
    return [F(f"{name}_{m}.{ext}") for m in models for ext in FIG_EXTS]


FIGURE_MODELS = {
    **{f"fig_{k}": _models(v) for k, v in HEAD_FIGURES.items()},
    "fig_docstring_heads": _models(DOCSTRING),
    "fig_arithmetic_mlp": _models(ARITHMETIC),
    "fig_factual_mlp_last": _models(FACTUAL_LAST),
    "fig_sliding_vs_summed": SLIDING_MODELS,
    "fig_factual_mlp_all": _models(FACTUAL_ALL),
    "fig_nm_attention": _models(IOI),
}


def analysis_targets():
    """Every table, figure and claims.csv the config's experiments allow (used by ``rule all``)."""
    files = [f for name in TABLE_EXPS for f in _table_files(name)]
    files += [f for name, models in FIGURE_MODELS.items() for f in _fig_files(name, models)]
    return files + [R("claims.csv")]


def _recovery_paths(model):
    """§3.2 (b): the engine's head_v sweep effects when configured, else the nm_attention rule's frame."""
    if model in _models(IOI_SI_VALUES):
        return _effects_of(IOI_SI_VALUES, model)
    return [R("analysis", "nm_recovery", f"{model}.parquet")]


def _classes_input(wildcards):
    """Table 1's head classes: the published GPT-2-small lists or this model's classifier output."""
    if _is_gpt2_small(wildcards.model):
        return str(Path(workflow.basedir, "data", "ioi_heads_gpt2_small.json"))
    return R("analysis", "ioi_classes", f"{wildcards.model}.csv")


# ----------------------------------------------------------------------------- IOI head classes
rule ioi_head_classes:
    input:
        prompts=R("prompts/{model}/ioi.parquet"),
        weights=weight_files,
    output:
        stats=R("analysis/ioi_head_stats/{model}.csv"),
        classes=R("analysis/ioi_classes/{model}.csv"),
    log:
        LOG("analysis/ioi_head_classes_{model}.log"),
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 30),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/analysis_ioi_classes.py"


# ----------------------------------------------------------------------------- tables
rule table1_model:
    input:
        effects=lambda w: _effects_of(IOI, w.model),
        classes=_classes_input,
    output:
        csv=report(R("tables/table1_{model}.csv"), caption="../report/table1.rst", category="Tables", subcategory="Table 1", labels={"model": "{model}", "table": "1"}),
        md=R("tables/table1_{model}.md"),
        tex=R("tables/table1_{model}.tex"),
    log:
        LOG("analysis/table1_{model}.log"),
    params:
        table="table1",
        published=lambda w: _is_gpt2_small(w.model),
    script:
        "../scripts/analysis_tables.py"


rule table2_model:
    input:
        effects=lambda w: _effects_of(DOCSTRING, w.model),
        prompts=R("prompts/{model}/docstring.parquet"),
    output:
        csv=report(R("tables/table2_{model}.csv"), caption="../report/table2.rst", category="Tables", subcategory="Table 2", labels={"model": "{model}", "table": "2"}),
        md=R("tables/table2_{model}.md"),
        tex=R("tables/table2_{model}.tex"),
    log:
        LOG("analysis/table2_{model}.log"),
    params:
        table="table2",
    script:
        "../scripts/analysis_tables.py"


rule table3_model:
    input:
        effects=lambda w: _effects_of(GREATER_THAN, w.model),
    output:
        csv=report(R("tables/table3_{model}.csv"), caption="../report/table3.rst", category="Tables", subcategory="Table 3", labels={"model": "{model}", "table": "3"}),
        md=R("tables/table3_{model}.md"),
        tex=R("tables/table3_{model}.tex"),
    log:
        LOG("analysis/table3_{model}.log"),
    params:
        table="table3",
    script:
        "../scripts/analysis_tables.py"


rule table4_model:
    input:
        effects=lambda w: _effects_of(IOI_S1IO, w.model),
    output:
        csv=report(R("tables/table4_{model}.csv"), caption="../report/table4.rst", category="Tables", subcategory="Table 4", labels={"model": "{model}", "table": "4"}),
        md=R("tables/table4_{model}.md"),
        tex=R("tables/table4_{model}.tex"),
    log:
        LOG("analysis/table4_{model}.log"),
    params:
        table="table4",
    script:
        "../scripts/analysis_tables.py"


rule table5_model:
    input:
        effects=lambda w: _effects_of(IOI, w.model),
    output:
        csv=report(R("tables/table5_{model}.csv"), caption="../report/table5.rst", category="Tables", subcategory="Table 5", labels={"model": "{model}", "table": "5"}),
        md=R("tables/table5_{model}.md"),
        tex=R("tables/table5_{model}.tex"),
    log:
        LOG("analysis/table5_{model}.log"),
    params:
        table="table5",
    script:
        "../scripts/analysis_tables.py"


rule table1:
    input:
        _table_files("table1"),


rule table2:
    input:
        _table_files("table2"),


rule table3:
    input:
        _table_files("table3"),


rule table4:
    input:
        _table_files("table4"),


rule table5:
    input:
        _table_files("table5"),


rule tables:
    input:
        [f for name in TABLE_EXPS for f in _table_files(name)],


# ----------------------------------------------------------------------------- figures
rule fig_heads_model:
    wildcard_constraints:
        which="|".join(HEAD_FIGURES) or "none",
    input:
        effects=lambda w: _effects_of(HEAD_FIGURES[w.which], w.model),
    output:
        png=report(F("fig_{which}_{model}.png"), caption="../report/fig_heads.rst", category="Figures", subcategory="Head patching", labels={"model": "{model}", "figure": "{which}"}),
        pdf=F("fig_{which}_{model}.pdf"),
    log:
        LOG("analysis/fig_{which}_{model}.log"),
    params:
        figure="heads",
    script:
        "../scripts/analysis_figures.py"


rule fig_docstring_heads_model:
    input:
        effects=lambda w: _effects_of(DOCSTRING, w.model),
        prompts=R("prompts/{model}/docstring.parquet"),
    output:
        png=report(F("fig_docstring_heads_{model}.png"), caption="../report/fig_docstring_heads.rst", category="Figures", subcategory="Head patching", labels={"model": "{model}", "figure": "docstring_heads"}),
        pdf=F("fig_docstring_heads_{model}.pdf"),
    log:
        LOG("analysis/fig_docstring_heads_{model}.log"),
    params:
        figure="docstring_heads",
    script:
        "../scripts/analysis_figures.py"


rule fig_arithmetic_mlp_model:
    input:
        effects=lambda w: _effects_of(ARITHMETIC, w.model),
    output:
        png=report(F("fig_arithmetic_mlp_{model}.png"), caption="../report/fig_arithmetic_mlp.rst", category="Figures", subcategory="MLP patching", labels={"model": "{model}", "figure": "arithmetic_mlp"}),
        pdf=F("fig_arithmetic_mlp_{model}.pdf"),
    log:
        LOG("analysis/fig_arithmetic_mlp_{model}.log"),
    params:
        figure="arithmetic_mlp",
    script:
        "../scripts/analysis_figures.py"


rule fig_factual_mlp_last_model:
    input:
        effects=lambda w: _effects_of(FACTUAL_LAST, w.model),
    output:
        png=report(F("fig_factual_mlp_last_{model}.png"), caption="../report/fig_factual_mlp_last.rst", category="Figures", subcategory="MLP patching", labels={"model": "{model}", "figure": "factual_mlp_last"}),
        pdf=F("fig_factual_mlp_last_{model}.pdf"),
    log:
        LOG("analysis/fig_factual_mlp_last_{model}.log"),
    params:
        figure="factual_mlp_last",
    script:
        "../scripts/analysis_figures.py"


rule fig_sliding_vs_summed_model:
    input:
        effects=lambda w: _effects_of(FACTUAL_LAST, w.model),
    output:
        png=report(F("fig_sliding_vs_summed_{model}.png"), caption="../report/fig_sliding_vs_summed.rst", category="Figures", subcategory="Sliding window", labels={"model": "{model}", "figure": "sliding_vs_summed"}),
        pdf=F("fig_sliding_vs_summed_{model}.pdf"),
    log:
        LOG("analysis/fig_sliding_vs_summed_{model}.log"),
    params:
        figure="sliding_vs_summed",
    script:
        "../scripts/analysis_figures.py"


rule factual_categories:
    input:
        sweeps=lambda w: _sweeps_of(FACTUAL_ALL, w.model),
        prompts=R("prompts/{model}/factual.parquet"),
    output:
        R("analysis/factual_categories/{model}.parquet"),
    log:
        LOG("analysis/factual_categories_{model}.log"),
    resources:
        mem_mb=4000,
    script:
        "../scripts/analysis_factual_categories.py"


rule fig_factual_mlp_all_model:
    input:
        categories=R("analysis/factual_categories/{model}.parquet"),
    output:
        png=report(F("fig_factual_mlp_all_{model}.png"), caption="../report/fig_factual_mlp_all.rst", category="Figures", subcategory="MLP patching", labels={"model": "{model}", "figure": "factual_mlp_all"}),
        pdf=F("fig_factual_mlp_all_{model}.pdf"),
    log:
        LOG("analysis/fig_factual_mlp_all_{model}.log"),
    params:
        figure="factual_mlp_all",
    script:
        "../scripts/analysis_figures.py"


rule nm_attention:
    input:
        prompts=R("prompts/{model}/ioi.parquet"),
        weights=weight_files,
        classes=_classes_input,
    output:
        attention=R("analysis/nm_attention/{model}.parquet"),
        recovery=R("analysis/nm_recovery/{model}.parquet"),
    log:
        LOG("analysis/nm_attention_{model}.log"),
    params:
        model=lambda w: config["models"][w.model],
        results_dir=RESULTS,
        noise=config["noise"],
    threads: lambda w: model_resources(w.model, "threads", 2)
    resources:
        mem_mb=lambda w: model_resources(w.model, "mem_mb", 4000),
        runtime=lambda w: model_resources(w.model, "runtime", 30),
        gpu=lambda w: model_resources(w.model, "gpu", 0),
    script:
        "../scripts/analysis_nm_attention.py"


rule fig_nm_attention_model:
    input:
        attention=R("analysis/nm_attention/{model}.parquet"),
        recovery=lambda w: _recovery_paths(w.model),
    output:
        png=report(F("fig_nm_attention_{model}.png"), caption="../report/fig_nm_attention.rst", category="Figures", subcategory="IOI name movers", labels={"model": "{model}", "figure": "nm_attention"}),
        pdf=F("fig_nm_attention_{model}.pdf"),
    log:
        LOG("analysis/fig_nm_attention_{model}.log"),
    params:
        figure="nm_attention",
    script:
        "../scripts/analysis_figures.py"


rule fig_ioi_heads:
    input:
        _fig_files("fig_ioi_heads", FIGURE_MODELS["fig_ioi_heads"]),


rule fig_ioi_s1io_heads:
    input:
        _fig_files("fig_ioi_s1io_heads", FIGURE_MODELS["fig_ioi_s1io_heads"]),


rule fig_ioi_abc_heads:
    input:
        _fig_files("fig_ioi_abc_heads", FIGURE_MODELS["fig_ioi_abc_heads"]),


rule fig_greater_than_heads:
    input:
        _fig_files("fig_greater_than_heads", FIGURE_MODELS["fig_greater_than_heads"]),


rule fig_docstring_heads:
    input:
        _fig_files("fig_docstring_heads", FIGURE_MODELS["fig_docstring_heads"]),


rule fig_arithmetic_mlp:
    input:
        _fig_files("fig_arithmetic_mlp", FIGURE_MODELS["fig_arithmetic_mlp"]),


rule fig_factual_mlp_last:
    input:
        _fig_files("fig_factual_mlp_last", FIGURE_MODELS["fig_factual_mlp_last"]),


rule fig_sliding_vs_summed:
    input:
        _fig_files("fig_sliding_vs_summed", FIGURE_MODELS["fig_sliding_vs_summed"]),


rule fig_factual_mlp_all:
    input:
        _fig_files("fig_factual_mlp_all", FIGURE_MODELS["fig_factual_mlp_all"]),


rule fig_nm_attention:
    input:
        _fig_files("fig_nm_attention", FIGURE_MODELS["fig_nm_attention"]),


rule figures:
    input:
        [f for name, models in FIGURE_MODELS.items() for f in _fig_files(name, models)],


# ----------------------------------------------------------------------------- claims
def _claims_inputs():
    """Every input a claim may use; the script turns absent ones into 'not run' rows."""
    return {
        "factual_last": [f for m in _models(FACTUAL_LAST) for f in _effects_of(FACTUAL_LAST, m)],
        "factual_categories": [R("analysis", "factual_categories", f"{m}.parquet") for m in _models(FACTUAL_ALL)],
        "ioi_effects": [f for m in _models(IOI) for f in _effects_of(IOI, m)],
        "abc_effects": [f for m in _models(IOI_ABC) for f in _effects_of(IOI_ABC, m)],
        "ioi_sweeps": [f for m in _models(IOI) for f in _sweeps_of(IOI, m)],
        "abc_sweeps": [f for m in _models(IOI_ABC) for f in _sweeps_of(IOI_ABC, m)],
        "nm_attention": [R("analysis", "nm_attention", f"{m}.parquet") for m in _models(IOI)],
        "nm_recovery": [f for m in _models(IOI) for f in _recovery_paths(m)],
    }


rule claims:
    input:
        **_claims_inputs(),
    output:
        report(R("claims.csv"), caption="../report/claims.rst", category="Claims"),
    log:
        LOG("analysis/claims.log"),
    resources:
        mem_mb=4000,
    script:
        "../scripts/analysis_claims.py"
