"""Indirect object identification (Wang et al. 2023), p_IOI as Easy-Transformer builds it.

Clean prompt: a template such as ``"Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to"``
filled with two distinct single-token names (IO = [A], S = [B]), a place and an object, cut
before the final IO. Easy-Transformer's ``IOIDataset(prompt_type="mixed")`` samples templates
uniformly from the first 7 BABA and the first 7 ABBA templates (``nb_templates // 2`` of the 15
each); ``templates="all"`` uses all 15 + 15. No BOS (``prepend_bos=False``), as Easy-Transformer.

Named positions (Easy-Transformer ``get_name_idxs``): IO = first IO token, S1 = first S token,
S2 = last S token, END = last token (" to" etc.), whose next-token logits are read.
Answer r = IO, wrong answer r' = S for every variant (LD = Logit(IO) - Logit(S)).

Corruption variants (one task each, same clean prompts for a given seed):

- ``ioi``: STR puts the IO name at S2 (flip ``("S2", "IO")``); GN on S2.
- ``ioi_s1io``: STR puts two random names at IO and S1 (the paper's App. F); GN on S1 and IO.
- ``ioi_abc``: STR puts three random names at IO, S1 and S2 (p_ABC); GN on IO, S1 and S2.

Random names are drawn from the single-token names, distinct from each other and from the
prompt's IO and S. Easy-Transformer's ``gen_flipped_prompts`` excludes IO and S only for the IO
replacement and draws the S / S1 replacements without exclusion, so a flip there can be a no-op
or repeat a name; here every corrupted position really changes and p_ABC has three new names.
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
    substitute,
)

__all__ = ["IOI_VARIANTS", "VOCAB_FILE", "build_ioi", "ioi_templates", "single_token_names"]

log = logging.getLogger(__name__)

VOCAB_FILE = "ioi/ioi_vocab.json"
IOI_VARIANTS = {"ioi": ("S2",), "ioi_s1io": ("IO", "S1"), "ioi_abc": ("IO", "S1", "S2")}
TEMPLATE_SETS = ("mixed", "all", "baba", "abba")
_MAX_TRIES_PER_PROMPT = 100


def ioi_templates(vocab: dict, templates: str = "mixed") -> list[tuple[str, str]]:
    """(kind, template) pairs: "mixed" = first half of BABA + first half of ABBA (Easy-Transformer)."""
    baba = list(require_key(vocab, "baba_templates", VOCAB_FILE))
    abba = list(require_key(vocab, "abba_templates", VOCAB_FILE))
    if templates == "mixed":
        return [("BABA", t) for t in baba[: len(baba) // 2]] + [("ABBA", t) for t in abba[: len(abba) // 2]]
    if templates == "all":
        return [("BABA", t) for t in baba] + [("ABBA", t) for t in abba]
    if templates == "baba":
        return [("BABA", t) for t in baba]
    if templates == "abba":
        return [("ABBA", t) for t in abba]
    raise ValueError(f"unknown IOI template set {templates!r}; choose one of {TEMPLATE_SETS}")


def single_token_names(tokenizer, names: list[str]) -> dict[str, int]:
    """Names whose " Name" is one token under ``tokenizer`` (name -> id), in file order."""
    out = {}
    for name in names:
        ids = encode(tokenizer, " " + name)
        if len(ids) == 1:
            out[name] = ids[0]
    return out


def build_ioi(
    tokenizer,
    data_dir: str | Path,
    n_prompts: int = 500,
    seed: int = 0,
    *,
    variant: str = "ioi",
    templates: str = "mixed",
    prepend_bos: bool = False,
) -> PromptSet:
    """Build ``n_prompts`` p_IOI prompts with the STR corruption of ``variant``."""
    if variant not in IOI_VARIANTS:
        raise ValueError(f"unknown IOI variant {variant!r}; choose one of {sorted(IOI_VARIANTS)}")
    vocab = load_task_json(data_dir, VOCAB_FILE)
    temps = ioi_templates(vocab, templates)
    names = single_token_names(tokenizer, list(require_key(vocab, "names", VOCAB_FILE)))
    dropped = len(vocab["names"]) - len(names)
    if dropped:
        log.info(
            "IOI: %d of %d names are not one token under this tokenizer and are not used",
            dropped,
            len(vocab["names"]),
        )
    if len(names) < 5:
        raise TaskDataError(f"IOI needs at least 5 single-token names, the tokenizer leaves {len(names)}")
    name_list = list(names)
    places = list(require_key(vocab, "places", VOCAB_FILE))
    objects = list(require_key(vocab, "objects", VOCAB_FILE))
    bos = [bos_id(tokenizer)] if prepend_bos else []

    rng = rng_for(seed)  # clean prompts: identical for every variant
    rng_corrupt = rng_for(seed, 1 + sorted(IOI_VARIANTS).index(variant))
    rows: dict[str, list] = {
        k: [] for k in ("clean", "corrupted", "answers", "wrong", "noise", "IO", "S1", "S2", "END")
    }
    meta: list[dict] = []
    seen: set = set()
    tries = 0
    while len(meta) < n_prompts:
        tries += 1
        if tries > _MAX_TRIES_PER_PROMPT * max(n_prompts, 1):
            out_of_draws("IOI", len(meta), n_prompts, tries - 1)
            break
        t_idx = int(rng.integers(len(temps)))
        kind, template = temps[t_idx]
        io, s = (name_list[i] for i in rng.choice(len(name_list), size=2, replace=False))
        place = places[int(rng.integers(len(places)))]
        obj = objects[int(rng.integers(len(objects)))]
        cut = template.rindex("[A]")
        prompt_t = template[:cut].rstrip(" ")
        text = (
            prompt_t.replace("[PLACE]", place).replace("[OBJECT]", obj).replace("[A]", io).replace("[B]", s)
        )
        ids = bos + encode(tokenizer, text)
        if decode(tokenizer, ids[len(bos) :]) != text:
            continue  # not faithfully tokenisable (unknown words)
        io_id, s_id = names[io], names[s]
        io_pos = [i for i, t in enumerate(ids) if t == io_id]
        s_pos = [i for i, t in enumerate(ids) if t == s_id]
        if len(io_pos) != 1 or len(s_pos) != 2:
            continue  # a name merged with its neighbour or occurs elsewhere: not a p_IOI prompt here
        pos = {"IO": io_pos[0], "S1": s_pos[0], "S2": s_pos[-1], "END": len(ids) - 1}
        corrupted = _corrupt(tokenizer, ids, pos, variant, names, name_list, (io, s), rng_corrupt, len(bos))
        if corrupted is None:
            continue
        cids, ctext, rand = corrupted
        if repeated(seen, ids, cids):
            continue
        for k in ("IO", "S1", "S2", "END"):
            rows[k].append(pos[k])
        rows["clean"].append(ids)
        rows["corrupted"].append(cids)
        rows["answers"].append([io_id])
        rows["wrong"].append([s_id])
        rows["noise"].append(sorted(pos[k] for k in IOI_VARIANTS[variant]))
        meta.append(
            {
                "text": text,
                "corrupted_text": ctext,
                "template": template,
                "template_idx": t_idx,
                "template_kind": kind,
                "IO": io,
                "S": s,
                "place": place,
                "object": obj,
                "rand_names": ",".join(rand),
            }
        )
    return prompt_set(
        variant, tokenizer, clean=rows["clean"], corrupted=rows["corrupted"], answers=rows["answers"],
        wrong=rows["wrong"], noise=rows["noise"], positions={k: rows[k] for k in ("IO", "S1", "S2", "END")},
        meta=meta, variant=f"templates={templates}",
    )  # fmt: skip


def _corrupt(tokenizer, ids, pos, variant, names, name_list, orig, rng, n_special):
    """STR corruption by token substitution; None if the result does not re-tokenise identically."""
    io, s = orig
    if variant == "ioi":
        out = substitute(tokenizer, ids, {pos["S2"]: names[io]}, n_special)
        return None if out is None else (*out, [])
    slots = IOI_VARIANTS[variant]
    pool = [n for n in name_list if n not in orig]
    for _ in range(20):
        rand = [pool[i] for i in rng.choice(len(pool), size=len(slots), replace=False)]
        out = substitute(
            tokenizer, ids, {pos[k]: names[r] for k, r in zip(slots, rand, strict=True)}, n_special
        )
        if out is not None:
            return (*out, rand)
    return None
