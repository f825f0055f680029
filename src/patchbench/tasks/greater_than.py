"""Greater-than (Hanna et al. 2023): "The {noun} lasted from the year {XX}{YY} to the year {XX}".

The model should continue with a two-digit token larger than YY. Only years whose " XXYY"
tokenises as [" XX", "YY"] are used (checked against the given tokenizer; the year lists in
``greater-than/greaterthan_years.json`` are Hanna et al.'s 1000-1899 rule, ``years="hanna"``, the
default, or ACDC's centuries 11-17, ``years="acdc"``). Sampling follows Hanna's
``YearDataset(balanced=True)``: YY cycles through 02..98, each prompt takes a uniformly drawn
valid year with that YY and a noun drawn with replacement.

Answers r = the tokens "YY+1".."99", wrong r' = "00".."YY-1" (YY itself on neither side, as
task-specs §5 asks; Hanna's and ACDC's own metrics put YY on the "<=" side). STR sets YY to
"01"; GN noises YY. Named positions: YY (the second year token), END (the final " XX").

BOS, which the literature does not agree on, is an option: ``bos="hanna"`` (default) follows
Hanna's ``eos=True`` text "<|endoftext|> The ...", i.e. BOS then " The" with a space;
``bos="prepend"`` puts BOS before "The" (TransformerLens' ``to_tokens``); ``bos="none"`` is ACDC.

``template`` overrides the file's template, e.g. ``ACDC_TEMPLATE`` ("... to {XX}", no "the year").

Difference from Hanna's code: a year whose century's "XX01" does not split as [" XX", "01"]
is not used, so that STR changes the YY token only. Under GPT-2 this drops the 74 years
1021-1098 (" 1001" is [" 100", "1"]; Hanna keeps them, changing two tokens).
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

__all__ = ["NOUNS_FILE", "YEARS_FILE", "build_greater_than", "two_digit_ids", "split_years"]

log = logging.getLogger(__name__)

NOUNS_FILE = "greater-than/greaterthan_nouns.json"
YEARS_FILE = "greater-than/greaterthan_years.json"
BOS_MODES = ("hanna", "prepend", "none")
HANNA_TEMPLATE = "The {noun} lasted from the year {XX}{YY} to the year {XX}"
ACDC_TEMPLATE = "The {noun} lasted from the year {XX}{YY} to {XX}"


def two_digit_ids(tokenizer) -> list[int]:
    """Ids of the tokens "00".."99" (no space); every one must be a single token."""
    ids = []
    for y in range(100):
        tid = single_token_id(tokenizer, f"{y:02d}")
        if tid is None:
            raise TaskDataError(
                f"greater-than needs every two-digit string to be one token; {y:02d!r} is not"
            )
        ids.append(tid)
    return ids


def split_years(tokenizer, years: list[int]) -> list[int]:
    """The years whose " XXYY" tokenises as [" XX", "YY"] under ``tokenizer``."""
    out = []
    for year in years:
        xx, yy = divmod(int(year), 100)
        ids = encode(tokenizer, f" {year}")
        if (
            len(ids) == 2
            and ids[0] == single_token_id(tokenizer, f" {xx}")
            and ids[1] == single_token_id(tokenizer, f"{yy:02d}")
        ):
            out.append(int(year))
    return out


def build_greater_than(
    tokenizer,
    data_dir: str | Path,
    n_prompts: int = 300,
    seed: int = 0,
    *,
    years: str = "hanna",
    bos: str = "hanna",
    balanced: bool = True,
    template: str | None = None,
) -> PromptSet:
    """Build ``n_prompts`` greater-than prompts."""
    if bos not in BOS_MODES:
        raise ValueError(f"unknown bos mode {bos!r}; choose one of {BOS_MODES}")
    nouns_file = load_task_json(data_dir, NOUNS_FILE)
    years_file = load_task_json(data_dir, YEARS_FILE)
    nouns = list(require_key(nouns_file, "nouns", NOUNS_FILE))
    if template is None:
        template = str(nouns_file.get("template", HANNA_TEMPLATE))
    corrupt_yy = str(nouns_file.get("corrupt_YY", "01"))
    listed = list(require_key(years_file, f"{years}_years", YEARS_FILE))
    valid = split_years(tokenizer, listed)
    if len(valid) < len(listed):
        log.info(
            "greater-than: %d of %d listed years do not split as [XX][YY] here",
            len(listed) - len(valid),
            len(listed),
        )
    if not valid:
        raise TaskDataError(
            f"no year of {YEARS_FILE}:{years}_years tokenises as [XX][YY] under this tokenizer"
        )
    digits = two_digit_ids(tokenizer)
    corrupt_id = digits[int(corrupt_yy)]
    # STR must change YY only: " XX01" has to split as [" XX", "01"] too (GPT-2: " 1001" is [" 100", "1"])
    str_ok = set(split_years(tokenizer, sorted({(y // 100) * 100 + int(corrupt_yy) for y in valid})))
    n_split = len(valid)
    valid = [y for y in valid if (y // 100) * 100 + int(corrupt_yy) in str_ok]
    if len(valid) < n_split:
        log.info(
            "greater-than: %d years dropped: their century's XX%s does not split as [XX][%s]",
            n_split - len(valid),
            corrupt_yy,
            corrupt_yy,
        )
    if not valid:
        raise TaskDataError(
            f"no year of {YEARS_FILE}:{years}_years survives the STR check under this tokenizer"
        )
    by_yy: dict[int, list[int]] = {}
    for y in valid:
        by_yy.setdefault(y % 100, []).append(y)
    cycle = [yy for yy in range(2, 99) if yy in by_yy]
    prefix: list[int] = [] if bos == "none" else [bos_id(tokenizer)]
    lead = " " if bos == "hanna" else ""

    rng = rng_for(seed)
    clean, corrupted, answers, wrong, noise, pos_yy, pos_end, meta = [], [], [], [], [], [], [], []
    step, tries = 0, 0
    seen: set = set()
    while len(clean) < n_prompts:
        tries += 1
        if tries > 50 * max(n_prompts, 1):
            out_of_draws("greater-than", len(clean), n_prompts, tries - 1)
            break
        if balanced:
            pool = by_yy[cycle[step % len(cycle)]]
        else:
            pool = valid
        year = pool[int(rng.integers(len(pool)))]
        noun = nouns[int(rng.integers(len(nouns)))]
        xx, yy = divmod(year, 100)
        text = lead + template.format(noun=noun, XX=xx, YY=f"{yy:02d}")
        ids = prefix + encode(tokenizer, text)
        if decode(tokenizer, ids[len(prefix) :]) != text:
            continue  # not faithfully tokenisable (unknown words)
        xx_id, yy_id = single_token_id(tokenizer, f" {xx}"), digits[yy]
        hits = [i for i in range(len(ids) - 1) if ids[i] == xx_id and ids[i + 1] == yy_id]
        if len(hits) != 1 or ids[-1] != xx_id or not 0 < yy < 99:
            continue
        p = hits[0] + 1
        out = substitute(tokenizer, ids, {p: corrupt_id}, n_special=len(prefix))
        if out is None:
            continue
        cids, ctext = out
        if repeated(seen, ids, cids):
            continue
        step += 1
        clean.append(ids)
        corrupted.append(cids)
        answers.append(digits[yy + 1 :])
        wrong.append(digits[:yy])
        noise.append([p])
        pos_yy.append(p)
        pos_end.append(len(ids) - 1)
        meta.append(
            {
                "text": text,
                "corrupted_text": ctext,
                "template": template,
                "noun": noun,
                "year": year,
                "XX": f"{xx}",
                "YY": f"{yy:02d}",
                "bos": bos,
            }
        )
    return prompt_set(
        "greater_than", tokenizer, clean=clean, corrupted=corrupted, answers=answers, wrong=wrong, noise=noise,
        positions={"YY": pos_yy, "END": pos_end}, meta=meta, variant=f"years={years},bos={bos}",
    )  # fmt: skip
