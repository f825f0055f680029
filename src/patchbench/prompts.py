"""The PromptSet: one task's clean prompts, their STR corruptions and everything patching needs.

A PromptSet is the contract between the task generators (``patchbench.tasks``) and the engine
(``patchbench.engine``). It is model-agnostic apart from the tokenizer it was built with, and
it round-trips through Parquet, one row per prompt:

==================  ==============  ==========================================================
column              type            meaning
==================  ==============  ==========================================================
clean               list<int64>     clean token ids
corrupted           list<int64>     STR-corrupted token ids (same length as ``clean``)
answer_pos          int64           position whose next-token logits are read (END, last token)
answers             list<int64>     answer token id(s) r; several for greater-than (years > YY)
wrong               list<int64>     wrong-answer id(s) r' (answer of the corrupted prompt)
noise_positions     list<int64>     key positions that GN corrupts
pos_<NAME>          int64           named positions (IO, S1, S2, END, C_def, YY, X3, Y3,
                                    subject_first, subject_last, ...); -1 where absent
meta_<NAME>         any             per-prompt metadata (template, names, text, ...)
==================  ==============  ==========================================================

File-level metadata (Parquet key-value): ``task``, ``variant``, ``tokenizer`` and ``pad_id``.

Rows are validated on load and on construction: equal clean / corrupted lengths, positions
inside the prompt, non-empty answers, no answer id that is also a wrong-answer id (the logit
difference would be 0 and every normalised effect NaN); on load also no missing (None / NaN) or
non-integer values. Checked against a model (``validate(d_vocab, n_ctx)``): at least one prompt,
every id inside the vocabulary, no prompt longer than the context. Errors name the prompt and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from jaxtyping import Int

from patchbench import prompt_pairs
from patchbench.atomic import atomic_path
from patchbench.errors import InputError, MissingInputError

__all__ = ["PromptSet", "PromptSetError"]


#: The fix of a prompt that breaks the contract.
_FIX = (
    "Fix: rebuild the prompt set with its task's generator (the workflow's prompts rule), or drop the prompt "
    "(PromptSet.subset)"
)


class PromptSetError(InputError, ValueError):
    """A PromptSet violates its contract (the message names the prompt, the problem and the fix)."""


def _as_int_lists(rows: Sequence[Sequence[int]]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64).reshape(-1) for r in rows]  # copies: parquet arrays are read-only


@dataclass(frozen=True, eq=False)
class PromptSet:
    """Clean prompts, their STR corruptions, answers and named positions for one task.

    Token sequences may differ in length between prompts (IOI templates do); within a prompt
    the clean and corrupted sequences always have equal length. ``tokens()`` right-pads with
    ``pad_id``; causal attention makes right padding invisible at ``answer_pos``.
    """

    task: str
    clean: list[np.ndarray]
    corrupted: list[np.ndarray]
    answer_pos: np.ndarray
    answers: list[np.ndarray]
    wrong: list[np.ndarray]
    noise_positions: list[np.ndarray]
    positions: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)
    variant: str = ""
    tokenizer: str = ""
    pad_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "clean", _as_int_lists(self.clean))
        object.__setattr__(self, "corrupted", _as_int_lists(self.corrupted))
        object.__setattr__(self, "answers", _as_int_lists(self.answers))
        object.__setattr__(self, "wrong", _as_int_lists(self.wrong))
        object.__setattr__(self, "noise_positions", _as_int_lists(self.noise_positions))
        object.__setattr__(self, "answer_pos", np.asarray(self.answer_pos, dtype=np.int64))
        object.__setattr__(
            self, "positions", {k: np.asarray(v, dtype=np.int64) for k, v in self.positions.items()}
        )
        meta = self.meta if len(self.meta.columns) else pd.DataFrame(index=range(len(self.clean)))
        object.__setattr__(self, "meta", meta.reset_index(drop=True))
        self.validate()

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return len(self.clean)

    def _where(self, i: int) -> str:
        text = ""
        if "text" in self.meta.columns:
            text = f" ({self.meta['text'].iloc[i]!r})"
        return f"{self.task}{'/' + self.variant if self.variant else ''} prompt {i}{text}"

    def validate(self, d_vocab: int | None = None, n_ctx: int | None = None) -> None:
        """Raise PromptSetError naming the first prompt that breaks the contract.

        With ``d_vocab`` (the set is about to run on a model) the set must hold prompts and every
        id (clean, corrupted, answers, wrong answers) must be below ``d_vocab``; with ``n_ctx`` no
        prompt may be longer than the model's context.
        """
        n = len(self.clean)
        for name, col in (
            ("corrupted", self.corrupted),
            ("answers", self.answers),
            ("wrong", self.wrong),
            ("noise_positions", self.noise_positions),
            ("answer_pos", self.answer_pos),
            ("meta", self.meta),
        ):
            if len(col) != n:
                raise PromptSetError(
                    f"{self.task}: column {name!r} has {len(col)} rows, clean has {n}. {_FIX}"
                )
        for k, v in self.positions.items():
            if len(v) != n:
                raise PromptSetError(f"{self.task}: position {k!r} has {len(v)} rows, clean has {n}. {_FIX}")
        if d_vocab is not None and n == 0:
            raise PromptSetError(
                f"{self.task}: the prompt set is empty, there is nothing to patch. Fix: generate more prompts "
                "(tasks.<task>.n_prompts) or, when the correctness filter removed them all, check the model "
                "or set filter_correct: false"
            )
        for i in range(n):
            length = len(self.clean[i])
            if length == 0:
                raise PromptSetError(f"{self._where(i)}: empty prompt. {_FIX}")
            if len(self.corrupted[i]) != length:
                raise PromptSetError(
                    f"{self._where(i)}: clean has {length} tokens but the corrupted prompt has "
                    f"{len(self.corrupted[i])}; STR needs prompt pairs of equal token length. "
                    "Fix: choose a replacement that tokenises to the same number of tokens, or drop the pair."
                )
            if n_ctx is not None and length > n_ctx:
                raise PromptSetError(
                    f"{self._where(i)}: {length} tokens, longer than the model's context (n_ctx={n_ctx}). "
                    "Fix: drop the longer prompts (PromptSet.subset) or use a model with a longer context"
                )
            if not 0 <= self.answer_pos[i] < length:
                raise PromptSetError(
                    f"{self._where(i)}: answer_pos {self.answer_pos[i]} is outside the prompt (length {length}). {_FIX}"
                )
            for k, v in self.positions.items():
                if v[i] != -1 and not 0 <= v[i] < length:
                    raise PromptSetError(
                        f"{self._where(i)}: position {k}={v[i]} is outside the prompt (length {length}). {_FIX}"
                    )
            bad = [int(p) for p in self.noise_positions[i] if not 0 <= p < length]
            if bad:
                raise PromptSetError(
                    f"{self._where(i)}: noise positions {bad} are outside the prompt (length {length}). {_FIX}"
                )
            if len(self.answers[i]) == 0:
                raise PromptSetError(f"{self._where(i)}: no answer token. {_FIX}")
            if len(self.wrong[i]) == 0:
                raise PromptSetError(f"{self._where(i)}: no wrong-answer token. {_FIX}")
            both = np.intersect1d(self.answers[i], self.wrong[i])
            if both.size:
                raise PromptSetError(
                    f"{self._where(i)}: token ids {both.tolist()} are both an answer and a wrong answer, so the "
                    "logit difference is 0 and every normalised effect NaN. Fix: give the prompt a wrong answer "
                    "that differs from its answer, or drop it"
                )
            if d_vocab is not None:
                for col, ids in (
                    ("answers", self.answers[i]),
                    ("wrong", self.wrong[i]),
                    ("clean", self.clean[i]),
                    ("corrupted", self.corrupted[i]),
                ):
                    if ids.size and (ids.min() < 0 or ids.max() >= d_vocab):
                        raise PromptSetError(
                            f"{self._where(i)}: {col} has token ids outside the model's vocabulary (d_vocab={d_vocab}); "
                            "was the PromptSet built with another tokenizer? Fix: rebuild it with this model's "
                            "tokenizer (the workflow's prompts rule)"
                        )

    def named_position(self, name: str) -> np.ndarray:
        """Each prompt's index of the named position ``name`` (``positions[name]``).

        Refuses a name the PromptSet does not have, and prompts where it is absent (-1): patching or
        reading there would silently do nothing.
        """
        if name not in self.positions:
            raise PromptSetError(
                f"{self.task}: no named position {name!r}; this PromptSet has {sorted(self.positions)} "
                "(or use position='all' / 'each')"
            )
        pos = self.positions[name]
        absent = np.flatnonzero(pos < 0)
        if absent.size:
            raise PromptSetError(
                f"{self.task}: position {name!r} is absent (-1) in prompts {absent[:10].tolist()}"
                f"{' ...' if absent.size > 10 else ''}; patching there would be a silent no-op. "
                "Fix: subset the PromptSet to prompts that have it (PromptSet.subset)."
            )
        return pos

    # ------------------------------------------------------------------ tensors
    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.clean], dtype=np.int64)

    def tokens(self, which: str = "clean") -> Int[torch.Tensor, "n_prompts max_len"]:
        """Right-padded token ids of the ``clean`` or ``corrupted`` prompts."""
        rows = {"clean": self.clean, "corrupted": self.corrupted}[which]
        out = np.full((len(rows), int(self.lengths.max())), self.pad_id, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return torch.from_numpy(out)

    def noise_mask(self) -> torch.Tensor:
        """Boolean (n_prompts, max_len): True at the positions GN corrupts."""
        mask = torch.zeros(len(self), int(self.lengths.max()), dtype=torch.bool)
        for i, p in enumerate(self.noise_positions):
            mask[i, torch.as_tensor(p.copy())] = True
        return mask

    def subset(self, idx: Sequence[int] | np.ndarray) -> PromptSet:
        """The prompts at ``idx`` (in that order), e.g. those the model answers correctly."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda rows: [rows[i] for i in idx]  # noqa: E731
        return PromptSet(
            task=self.task,
            clean=pick(self.clean),
            corrupted=pick(self.corrupted),
            answer_pos=self.answer_pos[idx],
            answers=pick(self.answers),
            wrong=pick(self.wrong),
            noise_positions=pick(self.noise_positions),
            positions={k: v[idx] for k, v in self.positions.items()},
            meta=self.meta.iloc[idx],
            variant=self.variant,
            tokenizer=self.tokenizer,
            pad_id=self.pad_id,
        )

    # ------------------------------------------------------------------ your own pairs
    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, object]],
        tokenizer,
        *,
        task: str = "custom",
        prepend_bos: bool = False,
        answer_separator: str = " ",
    ) -> PromptSet:
        """A set from prompt-pair records: dicts with ``clean``, ``corrupted``, ``answer``, ``wrong``
        (optional ``noise_positions``, ``meta_<NAME>``; named positions marked ``[[NAME:text]]``),
        checked by the rules of a task read from a file (:mod:`patchbench.prompt_pairs`, one
        implementation): every problem is named with its record and the fix."""
        source = f"records of task {task}"
        rows = prompt_pairs.parse_records(records, source)
        return cls(
            **prompt_pairs.prompt_set_fields(
                rows,
                tokenizer,
                task=task,
                source=source,
                prepend_bos=prepend_bos,
                answer_separator=answer_separator,
            )
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        tokenizer,
        *,
        task: str | None = None,
        n_prompts: int | None = None,
        prepend_bos: bool = False,
        answer_separator: str = " ",
    ) -> PromptSet:
        """A set from a CSV or JSON Lines file of prompt pairs (the columns of :meth:`from_records`),
        as the workflow builds a task with a ``file:`` (:mod:`patchbench.tasks.pairs`); ``task``
        defaults to the file's stem, ``n_prompts`` (the first rows) to every row."""
        rows = prompt_pairs.read_pairs(path)
        prompt_pairs.check_n_prompts(path, rows, n_prompts)
        ps = cls(
            **prompt_pairs.prompt_set_fields(
                rows,
                tokenizer,
                task=task or Path(path).stem,
                source=f"prompt-pair file {path}",
                prepend_bos=prepend_bos,
                answer_separator=answer_separator,
            )
        )
        return ps if n_prompts is None else ps.subset(np.arange(n_prompts))

    # ------------------------------------------------------------------ parquet
    def to_frame(self) -> pd.DataFrame:
        cols: dict[str, object] = {
            "clean": [c.tolist() for c in self.clean],
            "corrupted": [c.tolist() for c in self.corrupted],
            "answer_pos": self.answer_pos,
            "answers": [a.tolist() for a in self.answers],
            "wrong": [w.tolist() for w in self.wrong],
            "noise_positions": [p.tolist() for p in self.noise_positions],
        }
        cols.update({f"pos_{k}": v for k, v in self.positions.items()})
        cols.update({f"meta_{k}": self.meta[k].to_numpy() for k in self.meta.columns})
        return pd.DataFrame(cols)

    def to_parquet(self, path: str | Path) -> None:
        """Write the set atomically (:mod:`patchbench.atomic`)."""
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        extra = {
            "task": self.task,
            "variant": self.variant,
            "tokenizer": self.tokenizer,
            "pad_id": str(self.pad_id),
        }
        meta = dict(table.schema.metadata or {})
        meta[b"patchbench"] = json.dumps(extra).encode()
        with atomic_path(path) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp)

    @classmethod
    def from_parquet(
        cls, path: str | Path, d_vocab: int | None = None, n_ctx: int | None = None
    ) -> PromptSet:
        """Read a set written by :meth:`to_parquet`; refuses missing, unreadable or incomplete files
        (naming the file, the column and the rows), then :meth:`validate` (``d_vocab``, ``n_ctx``)."""
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(
                f"PromptSet {path} does not exist{' (it is a directory)' if path.is_dir() else ''}; "
                "build it with the workflow's prompts rule (snakemake <results_dir>/prompts/<model>/<task>.parquet)."
            )
        try:
            table = pq.read_table(path)
            extra = json.loads((table.schema.metadata or {}).get(b"patchbench", b"{}"))
        except (pa.ArrowException, OSError, ValueError) as err:
            raise PromptSetError(
                f"PromptSet {path} is not a readable Parquet file ({type(err).__name__}: {err}). "
                "Fix: rebuild it (delete it and rerun the workflow's prompts rule)"
            ) from None
        required = ("clean", "corrupted", "answer_pos", "answers", "wrong", "noise_positions")
        missing = sorted(set(required) - set(table.column_names))
        if missing:
            raise PromptSetError(
                f"{path}: not a PromptSet, columns {missing} are missing. Fix: pass a prompt set built by the "
                "workflow's prompts rule (PromptSet.to_parquet)"
            )
        _check_integer_columns(
            table, path, [*required, *(c for c in table.column_names if c.startswith("pos_"))]
        )
        df = table.to_pandas()
        ps = cls(
            task=extra.get("task", path.stem),
            clean=list(df["clean"]),
            corrupted=list(df["corrupted"]),
            answer_pos=df["answer_pos"].to_numpy(),
            answers=list(df["answers"]),
            wrong=list(df["wrong"]),
            noise_positions=list(df["noise_positions"]),
            positions={c[4:]: df[c].to_numpy() for c in df.columns if c.startswith("pos_")},
            meta=pd.DataFrame({c[5:]: df[c] for c in df.columns if c.startswith("meta_")}, index=df.index),
            variant=extra.get("variant", ""),
            tokenizer=extra.get("tokenizer", ""),
            pad_id=int(extra.get("pad_id", 0)),
        )
        if d_vocab is not None or n_ctx is not None:
            ps.validate(d_vocab, n_ctx)
        return ps


def _check_integer_columns(table: pa.Table, path: Path, columns: Sequence[str]) -> None:
    """Refuse a column (or list column) that holds None / NaN or non-integer values, naming its rows."""
    for c in columns:
        typ = table.schema.field(c).type
        is_list = pa.types.is_list(typ) or pa.types.is_large_list(typ)
        inner = typ.value_type if is_list else typ
        cells = [v if is_list else [v] for v in table.column(c).to_pylist()]
        rows = [i for i, v in enumerate(cells) if v is None or any(x is None or x != x for x in v)]
        if rows:
            more = " ..." if len(rows) > 10 else ""
            problem = f"column {c!r} has missing values (None / NaN) in rows {rows[:10]}{more}"
        elif not (pa.types.is_integer(inner) or pa.types.is_null(inner)):
            problem = f"column {c!r} holds {inner} values, not integer token ids / positions"
        else:
            continue
        raise PromptSetError(
            f"PromptSet {path}: {problem}. Fix: rebuild the prompt set with the workflow's prompts rule, or "
            "drop those rows (PromptSet.subset) and write it again"
        )
