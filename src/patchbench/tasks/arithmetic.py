"""Two-operand arithmetic (Stolfo et al. 2023), 2-shot, as the paper's App. C.

Stolfo's ``get_arithmetic_data_two_operands`` with the template ``"{x} + {y} ="`` (index 5 of
``arithmetic/arithmetic_templates.json``): the shots ``"{x} {op} {y} = {z}\\n"`` are drawn once
per dataset and shared by every prompt (Stolfo draws them once per template; option
``shared_shots=False`` draws them per prompt), then the query ``"{x} {op} {y} ="``::

    12 + 5 = 17
    34 + 2 = 36
    56 + 7 =

Operands are uniform on {1..max_n} and the result must be an integer in [1, max_n)
(Stolfo's ``generate_operands_pair``; max_n = 250 for + and -, 23 for *, option ``max_n``;
``result_max`` bounds the result separately, default max_n as in Stolfo's code).
The query operands X3 (no leading space, after the newline) and Y3 and the answer " z" must be
single tokens under the tokenizer (Stolfo asserts this; here failing draws are redrawn).
STR redraws X3 and Y3 under the same constraints, requiring a result different from the clean
one (so r' != r); r' = that result. GN noises X3 and Y3. No BOS (Stolfo encodes without special
tokens). Named positions: X3, Y3, END (the final "=").
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from patchbench.prompts import PromptSet
from patchbench.tasks.common import (
    TaskDataError,
    bos_id,
    checked_corruption,
    decode,
    encode,
    find_token_range,
    load_task_json,
    out_of_draws,
    prompt_set,
    repeated,
    require_key,
    rng_for,
    single_token_id,
)

__all__ = ["OPERATORS", "TEMPLATES_FILE", "build_arithmetic"]

log = logging.getLogger(__name__)

TEMPLATES_FILE = "arithmetic/arithmetic_templates.json"
OPERATORS = {"add": "+", "sub": "-", "mul": "*"}
DEFAULT_MAX_N = {"+": 250, "-": 250, "*": 23}


def _apply(op: str, x: int, y: int) -> int:
    return {"+": x + y, "-": x - y, "*": x * y}[op]


def _draw_pair(
    rng: np.random.Generator, op: str, max_n: int, result_max: int, exclude_result: int | None = None
) -> tuple[int, int, int]:
    for _ in range(100_000):
        x, y = (int(v) for v in rng.integers(1, max_n + 1, size=2))
        z = _apply(op, x, y)
        if 1 <= z < result_max and z != exclude_result:
            return x, y, z
    raise TaskDataError(f"no operands in 1..{max_n} give a result in [1, {result_max}) for {op!r}")


def build_arithmetic(
    tokenizer,
    data_dir: str | Path,
    n_prompts: int = 200,
    seed: int = 0,
    *,
    operator: str = "+",
    n_shots: int = 2,
    max_n: int | None = None,
    result_max: int | None = None,
    template_index: int = 5,
    shared_shots: bool = True,
    prepend_bos: bool = False,
) -> PromptSet:
    """Build ``n_prompts`` Stolfo-style prompts for one operator (+, - or *)."""
    op = OPERATORS.get(operator, operator)
    if op not in DEFAULT_MAX_N:
        raise ValueError(
            f"unknown operator {operator!r}; choose one of {sorted(OPERATORS)} or {sorted(DEFAULT_MAX_N)}"
        )
    max_n = DEFAULT_MAX_N[op] if max_n is None else int(max_n)
    result_max = max_n if result_max is None else int(result_max)
    templates = require_key(load_task_json(data_dir, TEMPLATES_FILE), "templates", TEMPLATES_FILE)
    if op not in templates:
        raise TaskDataError(f"{TEMPLATES_FILE} has no templates for {op!r}")
    template = str(templates[op][template_index])
    prefix = [bos_id(tokenizer)] if prepend_bos else []
    rng = rng_for(seed)
    rng_corrupt = rng_for(seed, 1)

    def shots() -> str:
        out = ""
        for _ in range(n_shots):
            x, y, z = _draw_pair(rng, op, max_n, result_max)
            out += template.replace("{x}", str(x)).replace("{y}", str(y)) + f" {z}\n"
        return out

    few_shots = shots() if shared_shots else ""
    clean, corrupted, answers, wrong, noise, meta = [], [], [], [], [], []
    pos: dict[str, list[int]] = {"X3": [], "Y3": [], "END": []}
    tries = 0
    seen: set = set()
    while len(clean) < n_prompts:
        tries += 1
        if tries > 200 * max(n_prompts, 1):
            out_of_draws(f"arithmetic {op}", len(clean), n_prompts, tries - 1)
            break
        if not shared_shots:
            few_shots = shots()
        x, y, z = _draw_pair(rng, op, max_n, result_max)
        located = _locate(tokenizer, prefix, few_shots, template, x, y)
        z_id = single_token_id(tokenizer, f" {z}")
        if located is None or z_id is None:
            continue
        ids, px, py = located
        for _ in range(100):
            xc, yc, zc = _draw_pair(rng_corrupt, op, max_n, result_max, exclude_result=z)
            loc_c = _locate(tokenizer, prefix, few_shots, template, xc, yc)
            zc_id = single_token_id(tokenizer, f" {zc}")
            if loc_c is not None and zc_id is not None and checked_corruption(ids, loc_c[0], [px, py]):
                break
        else:
            continue
        cids = loc_c[0]
        if repeated(seen, ids, cids):
            continue
        clean.append(ids)
        corrupted.append(cids)
        answers.append([z_id])
        wrong.append([zc_id])
        noise.append([px, py])
        pos["X3"].append(px)
        pos["Y3"].append(py)
        pos["END"].append(len(ids) - 1)
        meta.append(
            {
                "text": few_shots + template.replace("{x}", str(x)).replace("{y}", str(y)),
                "corrupted_text": few_shots + template.replace("{x}", str(xc)).replace("{y}", str(yc)),
                "operator": op,
                "template": template,
                "few_shots": few_shots,
                "x": x,
                "y": y,
                "result": z,
                "x_corrupt": xc,
                "y_corrupt": yc,
                "result_corrupt": zc,
            }
        )
    name = {v: k for k, v in OPERATORS.items()}[op]
    variant = f"shots={n_shots},max_n={max_n},result_max={result_max},template={template_index},shared_shots={shared_shots}"
    return prompt_set(
        f"arithmetic_{name}", tokenizer, clean=clean, corrupted=corrupted, answers=answers, wrong=wrong,
        noise=noise, positions=pos, meta=meta, variant=variant,
    )  # fmt: skip


def _locate(tokenizer, prefix: list[int], few_shots: str, template: str, x: int, y: int):
    """Token ids of the prompt and the single-token positions of the query's x and y, or None."""
    query = template.replace("{x}", str(x)).replace("{y}", str(y))
    text = few_shots + query
    body = encode(tokenizer, text)
    if decode(tokenizer, body) != text:
        return None  # not faithfully tokenisable
    ids = prefix + body
    xs = len(few_shots) + template.index("{x}")
    ys = len(few_shots) + template.replace("{x}", str(x)).index("{y}")
    rx = find_token_range(tokenizer, body, str(x), char_start=xs)
    ry = find_token_range(tokenizer, body, str(y), char_start=ys)
    if rx[1] - rx[0] != 1 or ry[1] - ry[0] != 1:
        return None
    # the operand token must be the operand alone (optionally with its leading space)
    if decode(tokenizer, body[rx[0] : rx[1]]).strip() != str(x) or decode(
        tokenizer, body[ry[0] : ry[1]]
    ).strip() != str(y):
        return None
    return ids, rx[0] + len(prefix), ry[0] + len(prefix)
