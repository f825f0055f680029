"""One paper figure for one model (rules ``fig_*_model``): frames -> PNG + PDF."""

import pandas as pd

from patchbench.analysis import figures
from patchbench.analysis.frames import read_effects
from patchbench.plot import load_circuit
from patchbench.prompts import PromptSet
from patchbench.runlog import rule_log

sm = snakemake  # noqa: F821  (injected by Snakemake)
#: head-heatmap figures: the paper's figure they reproduce (the title's second line)
PAPER = {
    "ioi_heads": "Zhang & Nanda Tables 1, 5; App. H.1, Figs 28-29",
    "ioi_s1io_heads": "Zhang & Nanda Table 4; App. F, Fig. 11",
    "ioi_abc_heads": "Zhang & Nanda §4.2; App. H.3, Fig. 30",
    "greater_than_heads": "Zhang & Nanda Table 3; App. E, Figs 9-10",
}
with rule_log(sm.log[0]) as log:
    fig, model = sm.params.figure, sm.wildcards.model
    outs = [sm.output.png, sm.output.pdf]
    circuit = load_circuit(sm.input.circuit[0] if sm.input.circuit else None, sm.params.task)
    log.info("known circuit: %s", circuit)
    if fig in PAPER:  # layer x head heatmaps
        metrics = ("prob", "logit_diff") if fig == "ioi_abc_heads" else ("logit_diff", "prob", "kl")
        figures.fig_head_heatmaps(
            read_effects(list(sm.input.effects)), outs, metrics=metrics, title=PAPER[fig], circuit=circuit
        )
    elif fig == "docstring_heads":
        prompts = PromptSet.from_parquet(sm.input.prompts)
        from patchbench.analysis.tables import constant_position

        labels = {
            constant_position(prompts.positions["C_def"], "C_def"): "C_def",
            constant_position(prompts.answer_pos, "last"): "last",
        }
        figures.fig_docstring_heads(
            read_effects(list(sm.input.effects)),
            outs,
            position_labels=labels,
            title="Zhang & Nanda Table 2; App. D",
            circuit=circuit,
        )
    elif fig == "arithmetic_mlp":
        figures.fig_arithmetic_mlp(read_effects(list(sm.input.effects)), outs, model=model, circuit=circuit)
    elif fig == "factual_mlp_last":
        figures.fig_factual_mlp_last(read_effects(list(sm.input.effects)), outs, model=model, circuit=circuit)
    elif fig == "sliding_vs_summed":
        figures.fig_sliding_vs_summed(
            read_effects(list(sm.input.effects)), outs, model=model, circuit=circuit
        )
    elif fig == "factual_mlp_all":
        figures.fig_mlp_positions(pd.read_parquet(sm.input.categories), outs, model=model, circuit=circuit)
    elif fig == "nm_attention":
        recovery = pd.concat([pd.read_parquet(p) for p in sm.input.recovery], ignore_index=True)
        figures.fig_nm_attention(pd.read_parquet(sm.input.attention), recovery, outs, model=model)
    else:
        raise ValueError(f"unknown figure {fig!r}")
    log.info("wrote %s", outs)
