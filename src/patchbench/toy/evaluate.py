"""Held-out accuracy of a toy model on the five task shapes.

Prompts are built only from the combinations the corpus held out (``patchbench.toy.corpus.HeldOut``)
in the paper's prompt formats (``shared/notes/task-specs.md``):

==============  ==========================================================  ===========================
task            prompt (BOS)                                                score
==============  ==========================================================  ===========================
ioi             first 7 BABA + first 7 ABBA templates minus the last word    top-1 == IO
                (no BOS), held-out name pairs
greater_than    ``The {noun} lasted from the year {XX}{YY} to the year {XX}``  mean sum of P("ZZ") over
                (BOS), held-out start years                                  ZZ > YY (``prob_gt``); also
                                                                             top-1 > YY
docstring       ACDC ``rest`` prompt, 3 matching args, 2 prefix, 1 suffix    top-1 == " C_def"
                (BOS), (B_def, C_def) a held-out adjacent pair
arithmetic      2 shots + query ``{x} {op} {y} =`` (BOS), held-out queries   top-1 == " result"
factual         each fact's known_1000 prompt (BOS): a held-out paraphrase   top-1 == " attribute"
==============  ==========================================================  ===========================

The numbers go to ``accuracy.json`` next to the model and into the README / report.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the accuracy-table job needs no TransformerLens
    from patchbench.lm import LM

from patchbench.toy.corpus import ARITH_OPS, HeldOut, ToyVocab, arith_pairs, arith_result

__all__ = ["EvalPrompt", "heldout_prompts", "evaluate_model", "heldout_accuracy", "GOALS"]

log = logging.getLogger(__name__)

# Goals of issue 5 (held-out): never lowered; a miss is reported with its number.
GOALS = {"ioi": 0.90, "greater_than": 0.80, "arithmetic": 0.80, "factual": 0.80, "docstring": 0.50}


@dataclass(frozen=True)
class EvalPrompt:
    task: str
    text: str
    answer: str  # the answer token's text (with its leading space where it has one)
    bos: bool
    yy: int = -1  # greater-than only


def heldout_prompts(vocab: ToyVocab, held: HeldOut, n_per_task: int, seed: int) -> list[EvalPrompt]:
    """Prompts of every task built from held-out combinations only."""
    rng = random.Random(f"eval-{seed}")
    out: list[EvalPrompt] = []
    ioi = vocab.ioi
    templates = ioi["baba_templates"][:7] + ioi["abba_templates"][:7]
    for _ in range(n_per_task):
        a, b = rng.choice(held.ioi_pairs)
        if rng.random() < 0.5:
            a, b = b, a
        t = rng.choice(templates)
        text = t.replace("[A]", a).replace("[B]", b)
        text = text.replace("[PLACE]", rng.choice(ioi["places"])).replace(
            "[OBJECT]", rng.choice(ioi["objects"])
        )
        prompt, last = text.rsplit(" ", 1)
        assert last == a, (text, a)
        out.append(EvalPrompt("ioi", prompt, " " + a, bos=False))
    gt = vocab.gt_nouns
    for _ in range(n_per_task):
        y = rng.choice(held.gt_years)
        xx, yy = divmod(y, 100)
        text = gt["template"].format(noun=rng.choice(gt["nouns"]), XX=f"{xx:02d}", YY=f"{yy:02d}")
        out.append(EvalPrompt("greater_than", text, f"{min(yy + 1, 99):02d}", bos=True, yy=yy))
    var, nouns = vocab.doc_words["variable_names"], vocab.doc_words["common_single_token_nouns"]
    for _ in range(n_per_task):
        b_def, c_def = rng.choice(held.doc_pairs)
        rest = [v for v in var if v not in (b_def, c_def)]
        f, r1, r2, a_def, r3 = rng.sample(rest, 5)
        d = [rng.choice(nouns) for _ in range(7)]
        text = (
            f'\ndef {f}(self, {r1}, {r2}, {a_def}, {b_def}, {c_def}, {r3}):\n    """{d[0]} {d[1]} {d[2]}\n\n'
            f"    :param {a_def}: {d[3]} {d[4]}\n    :param {b_def}: {d[5]} {d[6]}\n    :param"
        )
        out.append(EvalPrompt("docstring", text, " " + c_def, bos=True))
    shots = {op: arith_pairs(vocab, op) for op in ARITH_OPS}
    held_set = set(held.arith)
    for _ in range(n_per_task):
        op, x, y = rng.choice(held.arith)
        tmpl = vocab.arith["templates"][op][-1]
        lines = []
        for _ in range(2):
            while True:
                sx, sy = rng.choice(shots[op])
                if (op, sx, sy) not in held_set:
                    break
            lines.append(tmpl.format(x=sx, y=sy) + f" {arith_result(op, sx, sy)}")
        lines.append(tmpl.format(x=x, y=y))
        out.append(EvalPrompt("arithmetic", "\n".join(lines), f" {arith_result(op, x, y)}", bos=True))
    for fact in vocab.facts:
        out.append(EvalPrompt("factual", fact["prompt"], " " + fact["attribute"], bos=True))
    return out


@torch.no_grad()
def evaluate_model(model: LM, prompts: list[EvalPrompt], batch_size: int = 64) -> dict:
    """Held-out scores per task (see the module docstring), plus the number of prompts."""
    tok = model.tokenizer
    vocab = tok.get_vocab()
    bos_id = tok.bos_token_id
    pad_id = tok.pad_token_id
    yy_ids = torch.tensor([vocab[f"{i:02d}"] for i in range(100)])
    rows, answer_ids = [], []
    for p in prompts:
        ids = tok(p.text, add_special_tokens=False)["input_ids"]
        if tok.unk_token_id in ids:
            raise ValueError(f"{p.task} prompt {p.text!r} has words outside the toy vocabulary")
        rows.append(([bos_id] if p.bos else []) + ids)
        ans = tok(p.answer, add_special_tokens=False)["input_ids"]
        if len(ans) != 1:
            raise ValueError(
                f"{p.task} answer {p.answer!r} is {len(ans)} tokens; toy answers must be one token"
            )
        answer_ids.append(ans[0])
    results: dict[str, list[float]] = {}
    extra: dict[str, list[float]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(len(r) for r in chunk)
        x = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        for i, r in enumerate(chunk):
            x[i, : len(r)] = torch.tensor(r)
        logits = model.logits(x)
        for i, r in enumerate(chunk):
            p = prompts[start + i]
            last = logits[i, len(r) - 1]
            top = int(last.argmax())
            if p.task == "greater_than":
                probs = last.softmax(-1)[yy_ids]
                results.setdefault(p.task, []).append(float(probs[p.yy + 1 :].sum()))
                top_yy = int(torch.nonzero(yy_ids == top).flatten()[0]) if top in yy_ids else -1
                extra.setdefault("greater_than_top1", []).append(float(top_yy > p.yy))
            else:
                results.setdefault(p.task, []).append(float(top == answer_ids[start + i]))
    out = {task: {"score": float(np.mean(v)), "n": len(v)} for task, v in results.items()}
    if "greater_than" in out:
        out["greater_than"]["metric"] = "mean P(ZZ > YY)"
        out["greater_than"]["top1_gt_yy"] = float(np.mean(extra["greater_than_top1"]))
    for task, goal in GOALS.items():
        if task in out:
            out[task]["goal"] = goal
            out[task]["met"] = bool(out[task]["score"] >= goal)
    for task in ("ioi", "docstring", "arithmetic", "factual"):
        if task in out:
            out[task]["metric"] = "top-1 accuracy"
    return out


def heldout_accuracy(model: LM, prompts: list[EvalPrompt], mix: dict[str, float] | None) -> dict:
    """accuracy.json's ``tasks`` (``evaluate_model``) and ``not_scored``: a task that the model's
    corpus ``mix`` gives no documents (organism-facts: IOI, docstring) is not scored, since the model
    never saw it and its prompts may hold words outside the model's own tokenizer."""
    unseen = sorted({p.task for p in prompts if mix is not None and mix.get(p.task, 0) <= 0})
    out: dict = {"tasks": evaluate_model(model, [p for p in prompts if p.task not in unseen])}
    if unseen:
        out["not_scored"] = {t: "no documents of this task in the model's corpus mix" for t in unseen}
    return out


def accuracy_table(
    accuracy_files: list, summary_files: list | None = None, patched: dict[str, list[str]] | None = None
):
    """Long table (model, task, metric, score, goal, met, n) of accuracy.json files, plus the
    training wall time and final loss of each model when its train_summary.json is given, and,
    with ``patched`` (model -> task families the workflow's experiments run on it), whether the
    workflow patches the model on that task: the score that its experiments rest on."""
    import json
    from pathlib import Path

    import pandas as pd

    summaries = {}
    for f in summary_files or []:
        s = json.loads(Path(f).read_text())
        summaries[s["model"]] = s
    rows = []
    for f in accuracy_files:
        acc = json.loads(Path(f).read_text())
        s = summaries.get(acc["model"], {})
        for task, r in acc["tasks"].items():
            rows.append(
                {
                    "model": acc["model"],
                    "task": task,
                    "metric": r.get("metric", ""),
                    "score": round(r["score"], 3),
                    "goal": r.get("goal"),
                    "met": r.get("met"),
                    "n": r["n"],
                    **({"patched": task in patched.get(acc["model"], [])} if patched is not None else {}),
                    "train_wall_s": round(s["wall_s"], 1) if s else None,
                    "final_loss": round(s["final_loss"], 3) if s else None,
                }
            )
    return pd.DataFrame(rows)


def markdown_table(df) -> str:
    """A GitHub markdown table of a DataFrame (no third-party dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
