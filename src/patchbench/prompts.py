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
inside the prompt, non-empty single-token answers. Errors name the prompt and the fix.
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

__all__ = ["PromptSet", "PromptSetError"]


class PromptSetError(ValueError):
    """A PromptSet violates its contract (the message names the prompt and the problem)."""


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

    def validate(self, d_vocab: int | None = None) -> None:
        """Raise PromptSetError naming the first prompt that breaks the contract."""
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
                raise PromptSetError(f"{self.task}: column {name!r} has {len(col)} rows, clean has {n}")
        for k, v in self.positions.items():
            if len(v) != n:
                raise PromptSetError(f"{self.task}: position {k!r} has {len(v)} rows, clean has {n}")
        for i in range(n):
            length = len(self.clean[i])
            if length == 0:
                raise PromptSetError(f"{self._where(i)}: empty prompt")
            if len(self.corrupted[i]) != length:
                raise PromptSetError(
                    f"{self._where(i)}: clean has {length} tokens but the corrupted prompt has "
                    f"{len(self.corrupted[i])}; STR needs prompt pairs of equal token length. "
                    "Choose a replacement that tokenises to the same number of tokens, or drop the pair."
                )
            if not 0 <= self.answer_pos[i] < length:
                raise PromptSetError(
                    f"{self._where(i)}: answer_pos {self.answer_pos[i]} is outside the prompt (length {length})"
                )
            for k, v in self.positions.items():
                if v[i] != -1 and not 0 <= v[i] < length:
                    raise PromptSetError(
                        f"{self._where(i)}: position {k}={v[i]} is outside the prompt (length {length})"
                    )
            bad = [p for p in self.noise_positions[i] if not 0 <= p < length]
            if bad:
                raise PromptSetError(
                    f"{self._where(i)}: noise positions {bad} are outside the prompt (length {length})"
                )
            if len(self.answers[i]) == 0:
                raise PromptSetError(f"{self._where(i)}: no answer token")
            if len(self.wrong[i]) == 0:
                raise PromptSetError(f"{self._where(i)}: no wrong-answer token")
            if d_vocab is not None:
                for col, ids in (
                    ("answers", self.answers[i]),
                    ("wrong", self.wrong[i]),
                    ("clean", self.clean[i]),
                ):
                    if ids.size and (ids.min() < 0 or ids.max() >= d_vocab):
                        raise PromptSetError(
                            f"{self._where(i)}: {col} has token ids outside the model's vocabulary (d_vocab={d_vocab}); "
                            "was the PromptSet built with another tokenizer?"
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        extra = {
            "task": self.task,
            "variant": self.variant,
            "tokenizer": self.tokenizer,
            "pad_id": str(self.pad_id),
        }
        meta = dict(table.schema.metadata or {})
        meta[b"patchbench"] = json.dumps(extra).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)

    @classmethod
    def from_parquet(cls, path: str | Path, d_vocab: int | None = None) -> PromptSet:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"PromptSet {path} does not exist; build it with the workflow's prompts rule."
            )
        table = pq.read_table(path)
        extra = json.loads((table.schema.metadata or {}).get(b"patchbench", b"{}"))
        df = table.to_pandas()
        required = {"clean", "corrupted", "answer_pos", "answers", "wrong", "noise_positions"}
        missing = required - set(df.columns)
        if missing:
            raise PromptSetError(f"{path}: not a PromptSet, columns {sorted(missing)} are missing")
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
        if d_vocab is not None:
            ps.validate(d_vocab)
        return ps
