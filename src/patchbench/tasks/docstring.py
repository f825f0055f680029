"""Docstring (Heimersheim & Janiak 2023), as ACDC's ``docstring_induction_prompt_generator``.

Settings of the paper's App. D: style "rest", ``n_matching_args=3, n_def_prefix_args=2,
n_def_suffix_args=1, n_doc_prefix_args=0, met_desc_len=3, arg_desc_len=2``::

    \\ndef rand0(self, rand1, rand2, A_def, B_def, C_def, rand3):
        \"\"\"rand4 rand5 rand6

        :param A_def: rand7 rand8
        :param B_def: rand9 rand10
        :param

Per prompt, 15 distinct names are drawn from ``variable_names`` (the method name and ACDC's
14 argument names: random_answer, 3 + 2 "random random", 2 not matching, 3 matching, 2 def
prefix, 1 def suffix) and description words from ``common_single_token_nouns``, both filtered
to single tokens (" word") under the tokenizer. The answer is " C_def", the third matching
argument. BOS is prepended (ACDC ``prepend_bos=True``; option ``prepend_bos``).

STR = ACDC's ``random_answer`` corruption: C_def in the signature becomes the unused name
``random_answer``; GN noises C_def. Wrong answer r' = the replacement (the paper's general rule
for LD); ACDC's own LD uses the max over the 13 other argument names, recorded per prompt in
``meta["acdc_wrong"]`` (names) and ``meta["acdc_wrong_ids"]`` (ids).
Named positions: C_def, A_def, B_def (their first occurrence, in the signature) and END (the
final " :param" token). A description word may coincide with an argument name, as in ACDC.
"""

from __future__ import annotations

import logging
from pathlib import Path

from patchbench.prompts import PromptSet
from patchbench.tasks.common import (
    TaskDataError,
    bos_id,
    decode,
    encode,
    load_task_json,
    out_of_draws,
    prompt_set,
    repeated,
    require_key,
    rng_for,
    single_token_id,
    substitute,
)

__all__ = ["WORDS_FILE", "build_docstring", "docstring_text"]

log = logging.getLogger(__name__)

WORDS_FILE = "docstring/docstring_words.json"


def docstring_text(
    met_name: str, met_desc: list[str], def_args: list[str], doc_args: list[str], doc_desc: list[list[str]]
) -> str:
    """ACDC's ``docstring_prompt_templ`` for style "rest" without defaults."""
    ind4 = 4 * " "
    def_and_desc = f'def {met_name}(self, {", ".join(def_args)}):\n{ind4}"""{" ".join(met_desc)}\n'
    lines = "\n".join(f"{ind4}:param {a}: {' '.join(d)}" for a, d in zip(doc_args, doc_desc, strict=True))
    return f"\n{def_and_desc}\n{lines}\n{ind4}:param"


def build_docstring(
    tokenizer,
    data_dir: str | Path,
    n_prompts: int = 200,
    seed: int = 0,
    *,
    prepend_bos: bool = True,
    n_matching_args: int = 3,
    n_def_prefix_args: int = 2,
    n_def_suffix_args: int = 1,
    met_desc_len: int = 3,
    arg_desc_len: int = 2,
) -> PromptSet:
    """Build ``n_prompts`` docstring prompts with the ``random_answer`` STR corruption."""
    words = load_task_json(data_dir, WORDS_FILE)
    names = _single(tokenizer, require_key(words, "variable_names", WORDS_FILE))
    nouns = _single(tokenizer, require_key(words, "common_single_token_nouns", WORDS_FILE))
    n_not = n_matching_args - 1
    n_names = 2 + n_matching_args + n_not + n_not + n_matching_args + n_def_prefix_args + n_def_suffix_args
    if len(names) < n_names or len(nouns) < max(met_desc_len, arg_desc_len):
        raise TaskDataError(
            f"docstring needs {n_names} single-token variable names and {met_desc_len} nouns; "
            f"the tokenizer leaves {len(names)} and {len(nouns)}"
        )
    prefix = [bos_id(tokenizer)] if prepend_bos else []
    rng = rng_for(seed)
    clean, corrupted, answers, wrong, noise, meta = [], [], [], [], [], []
    pos: dict[str, list[int]] = {"C_def": [], "A_def": [], "B_def": [], "END": []}
    tries = 0
    seen: set = set()
    while len(clean) < n_prompts:
        tries += 1
        if tries > 50 * max(n_prompts, 1):
            out_of_draws("docstring", len(clean), n_prompts, tries - 1)
            break
        drawn = [names[i] for i in rng.choice(len(names), size=n_names, replace=False)]
        met_name, all_args = drawn[0], drawn[1:]
        random_answer, rest = all_args[0], all_args[1:]
        rest = rest[n_matching_args + n_not + n_not :]  # skip the "random random" and not-matching names
        matching, rest = rest[:n_matching_args], rest[n_matching_args:]
        def_prefix, def_suffix = rest[:n_def_prefix_args], rest[n_def_prefix_args:]
        def_args = def_prefix + matching + def_suffix
        doc_args = matching[:-1]
        met_desc = [nouns[i] for i in rng.choice(len(nouns), size=met_desc_len, replace=False)]
        doc_desc = [
            [nouns[i] for i in rng.choice(len(nouns), size=arg_desc_len, replace=False)] for _ in doc_args
        ]
        text = docstring_text(met_name, met_desc, def_args, doc_args, doc_desc)
        ids = prefix + encode(tokenizer, text)
        if decode(tokenizer, ids[len(prefix) :]) != text:
            continue  # not faithfully tokenisable (unknown words)
        c_id, r_id = names_ids = (
            single_token_id(tokenizer, " " + matching[-1]),
            single_token_id(tokenizer, " " + random_answer),
        )
        if None in names_ids:
            continue
        c_hits = [i for i, t in enumerate(ids) if t == c_id]
        sig = {}
        for label, arg in (("A_def", matching[0]), ("B_def", matching[1])):
            hits = [i for i, t in enumerate(ids) if t == single_token_id(tokenizer, " " + arg)]
            sig[label] = hits[0] if hits else -1
        if not c_hits or -1 in sig.values():
            continue
        p = c_hits[0]
        out = substitute(tokenizer, ids, {p: r_id}, n_special=len(prefix))
        if out is None:
            continue
        cids, ctext = out
        if repeated(seen, ids, cids):
            continue
        others = [a for a in all_args if a != matching[-1]]
        clean.append(ids)
        corrupted.append(cids)
        answers.append([c_id])
        wrong.append([r_id])
        noise.append([p])
        pos["C_def"].append(p)
        pos["A_def"].append(sig["A_def"])
        pos["B_def"].append(sig["B_def"])
        pos["END"].append(len(ids) - 1)
        meta.append(
            {
                "text": text,
                "corrupted_text": ctext,
                "template": "rest",  # ACDC's one docstring style (resample and mean group prompts by it)
                "met_name": met_name,
                "def_args": ",".join(def_args),
                "C_def": matching[-1],
                "replacement": random_answer,
                "acdc_wrong": ",".join(others),
                "acdc_wrong_ids": [int(single_token_id(tokenizer, " " + a)) for a in others],
            }
        )
    return prompt_set(
        "docstring", tokenizer, clean=clean, corrupted=corrupted, answers=answers, wrong=wrong, noise=noise,
        positions=pos, meta=meta, variant=f"bos={prepend_bos}",
    )  # fmt: skip


def _single(tokenizer, words: list[str]) -> list[str]:
    return [w for w in words if single_token_id(tokenizer, " " + w) is not None]
