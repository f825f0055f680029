"""The task suites: tokenizer-aware generators of PromptSets, one module per task.

``TASKS`` registers every task name the workflow knows; ``check_options`` refuses options a task's
generator does not take (``task_options_schema``: their JSON schema, from the generator's
signature); ``build_task`` builds one::

    from transformers import GPT2TokenizerFast
    tok = GPT2TokenizerFast.from_pretrained("../shared/data/gpt2-tokenizer")
    ps = build_task("ioi", tok, data_dir="../shared/data", n_prompts=500, seed=0)

Generators read only the data directory they are given (layout of ``../shared/data``; the toy
suite's ``data/toy`` has the same layout) and check every property they rely on against the
given tokenizer. Generation is deterministic in ``seed`` (``numpy.random.default_rng``).
Defaults follow ``../shared/notes/task-specs.md``; options expose the places where the
literature differs (templates, BOS, year lists, pairing rule, ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchbench.config import ConfigError
from patchbench.errors import InputError
from patchbench.prompts import PromptSet, PromptSetError
from patchbench.tasks.arithmetic import build_arithmetic
from patchbench.tasks.common import TaskInfo
from patchbench.tasks.docstring import build_docstring
from patchbench.tasks.factual import build_factual
from patchbench.tasks.greater_than import build_greater_than
from patchbench.tasks.ioi import build_ioi
from patchbench.tasks.pairs import FILE_VARIANT, build_file_task

__all__ = [
    "TASKS",
    "TaskInfo",
    "build_configured",
    "build_task",
    "check_options",
    "check_task_contract",
    "load_prompts",
    "task_info",
    "task_options_schema",
]

# tasks whose answer / wrong answer is a set of alternative tokens; all others have one token each
MULTI_ANSWER_TASKS = frozenset({"greater_than"})

_IOI = ("ioi/ioi_vocab.json",)
_GT = ("greater-than/greaterthan_nouns.json", "greater-than/greaterthan_years.json")
_AR = ("arithmetic/arithmetic_templates.json",)

TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo("ioi", "ioi", build_ioi, 500, "p_IOI; STR S2 -> IO; GN at S2", _IOI, {"variant": "ioi"}),
        TaskInfo(
            "ioi_s1io",
            "ioi",
            build_ioi,
            500,
            "p_IOI; STR S1, IO -> random names; GN at S1, IO (App. F)",
            _IOI,
            {"variant": "ioi_s1io"},
        ),
        TaskInfo(
            "ioi_abc",
            "ioi",
            build_ioi,
            500,
            "p_IOI; STR S1, S2, IO -> three random names (p_ABC)",
            _IOI,
            {"variant": "ioi_abc"},
        ),
        TaskInfo(
            "greater_than",
            "greater_than",
            build_greater_than,
            300,
            "Hanna et al.; STR YY -> 01; GN at YY",
            _GT,
        ),
        TaskInfo(
            "docstring",
            "docstring",
            build_docstring,
            200,
            "Heimersheim & Janiak / ACDC; STR C_def -> unused name; GN at C_def",
            ("docstring/docstring_words.json",),
        ),
        TaskInfo(
            "arithmetic_add",
            "arithmetic",
            build_arithmetic,
            200,
            "Stolfo et al. 2-shot +; STR redraws X3, Y3",
            _AR,
            {"operator": "+"},
        ),
        TaskInfo(
            "arithmetic_sub",
            "arithmetic",
            build_arithmetic,
            200,
            "Stolfo et al. 2-shot -; STR redraws X3, Y3",
            _AR,
            {"operator": "-"},
        ),
        TaskInfo(
            "arithmetic_mul",
            "arithmetic",
            build_arithmetic,
            200,
            "Stolfo et al. 2-shot *; STR redraws X3, Y3",
            _AR,
            {"operator": "*"},
        ),
        TaskInfo(
            "factual",
            "factual",
            build_factual,
            None,
            "PairedFacts rebuilt (App. B); STR = partner prompt; GN on subject tokens",
            ("rome/known_1000.json",),
        ),
    )
}


#: JSON Schema types of the Python types a task generator's options are annotated with.
_JSON_TYPES: dict[Any, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def task_options_schema(task: str, info: TaskInfo | None = None) -> dict[str, Any]:
    """The JSON schema of ``tasks.<task>.options``: the keyword-only parameters of the task's generator
    (those its registry entry does not fix), typed by their annotations; no other key is allowed.
    ``info``: the task's TaskInfo (default: the registry's; a task read from a file has its own)."""
    info = TASKS[task] if info is None else info
    hints = typing.get_type_hints(info.builder)
    props: dict[str, Any] = {}
    for p in inspect.signature(info.builder).parameters.values():
        if p.kind is not p.KEYWORD_ONLY or p.name in info.options:
            continue
        args = typing.get_args(hints.get(p.name)) or (hints.get(p.name),)
        allowed = [_JSON_TYPES[a] for a in args if a in _JSON_TYPES]
        props[p.name] = {"type": allowed} if allowed else {}
    return {"type": "object", "additionalProperties": False, "properties": props}


def check_options(task: str, options: Mapping[str, Any], info: TaskInfo | None = None) -> None:
    """Refuse ``options`` that task ``task``'s generator does not take, or of the wrong type, naming its options."""
    from jsonschema import Draft202012Validator

    sch = task_options_schema(task, info)
    errors = sorted(Draft202012Validator(sch).iter_errors(dict(options)), key=lambda e: list(e.path))
    if errors:
        where = ".".join(["tasks", task, "options", *map(str, errors[0].path)])
        raise ConfigError(
            f"config key {where!r}: {errors[0].message}; task {task} takes the options "
            f"{sorted(sch['properties'])}. Fix: correct or remove the option (config/README.md lists them)"
        )


def task_info(name: str, entry: Mapping[str, Any] | None = None) -> TaskInfo:
    """The TaskInfo of ``tasks.<name>``: the registry's for a built-in task, or, when the entry names
    a ``file``, a task read from that file of prompt pairs (:mod:`patchbench.tasks.pairs`)."""
    file = (entry or {}).get("file")
    if file is None:
        return TASKS[name]
    return TaskInfo(
        name, "file", build_file_task, None, f"prompt pairs from {file}", (str(file),), {"task": name}
    )


def build_configured(name: str, entry: Mapping[str, Any], tokenizer, data_dir: str | Path) -> PromptSet:
    """The PromptSet of a validated config's ``tasks.<name>`` entry, built-in or read from a file."""
    if entry.get("file") is None:
        return build_task(
            name, tokenizer, data_dir, n_prompts=entry["n_prompts"], seed=entry["seed"], **entry["options"]
        )
    info = task_info(name, entry)
    check_options(name, entry["options"], info)
    ps = build_file_task(
        tokenizer, entry["file"], entry.get("n_prompts"), entry["seed"], task=name, **entry["options"]
    )
    check_task_contract(ps)
    return ps


def build_task(
    name: str, tokenizer, data_dir: str | Path, n_prompts: int | None = None, seed: int = 0, **options: Any
) -> PromptSet:
    """Build the PromptSet of task ``name`` (``n_prompts=None``: the task's default count)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}")
    info = TASKS[name]
    fixed = set(info.options) & set(options)
    if fixed:
        raise ConfigError(
            f"task {name!r} fixes the options {sorted(fixed)}; use the task of that variant instead"
        )
    check_options(name, options)
    n = info.default_n_prompts if n_prompts is None else n_prompts
    try:
        ps = info.builder(tokenizer, data_dir, n, seed, **info.options, **options)
    except InputError:
        raise
    except ValueError as err:  # a generator refusing an option's value (an unknown bos mode, ...)
        raise ConfigError(
            f"task {name!r} with options {options}: {err}. Fix: correct tasks.{name}.options"
        ) from None
    if ps.task != name:  # e.g. the IOI builder names its variant; the registry name wins
        ps = dataclasses.replace(ps, task=name)
    check_task_contract(ps)
    return ps


def check_task_contract(ps: PromptSet) -> None:
    """Task-level checks on top of ``PromptSet.validate``; raise PromptSetError naming the prompt.

    A single-token-answer task (all built-in tasks but greater-than) must have exactly one answer and one
    wrong-answer token per prompt (a task read from a file may list alternatives, each checked to
    be one token when it was read) (a longer list would be a multi-token answer); ``answer_pos``
    must be the END position; every prompt needs at least one GN position and the ``text`` /
    ``corrupted_text`` metadata.
    """
    missing = {"text", "corrupted_text"} - set(ps.meta.columns)
    if missing:
        raise PromptSetError(f"{ps.task}: metadata columns {sorted(missing)} are missing")
    single = ps.task not in MULTI_ANSWER_TASKS and ps.variant != FILE_VARIANT  # a file's: alternatives
    end = ps.positions.get("END")
    for i in range(len(ps)):
        where = f"{ps.task} prompt {i} ({ps.meta['text'].iloc[i]!r})"
        if single and (len(ps.answers[i]) != 1 or len(ps.wrong[i]) != 1):
            raise PromptSetError(
                f"{where}: answer {ps.answers[i].tolist()} / wrong {ps.wrong[i].tolist()} must be one token each; "
                "a multi-token answer cannot be read at one position. Drop the prompt or choose a single-token answer."
            )
        if end is not None and end[i] != ps.answer_pos[i]:
            raise PromptSetError(f"{where}: answer_pos {ps.answer_pos[i]} is not the END position {end[i]}")
        if len(ps.noise_positions[i]) == 0:
            raise PromptSetError(f"{where}: no GN key position")


def load_prompts(path: str | Path, d_vocab: int | None = None) -> PromptSet:
    """``PromptSet.from_parquet`` plus ``check_task_contract``."""
    ps = PromptSet.from_parquet(path, d_vocab=d_vocab)
    check_task_contract(ps)
    return ps
