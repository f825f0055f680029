"""The ``toy:`` section of the config: corpus, evaluation and per-model training settings.

Every key is optional; ``DEFAULT_MODELS`` gives the two models of the demo. Layout::

    toy:
      data_dir: data/toy                  # project-authored vocabulary (patchbench.toy.authoring)
      corpus: {n_docs: 60000, seed: 0, heldout_fraction: 0.15}
      eval: {n_prompts: 200, seed: 0}     # held-out prompts per task for accuracy.json
      models:
        toy-gpt2: {n_layers: 6, d_model: 128, n_heads: 4, d_mlp: 256, n_ctx: 64, steps: 1600,
                   batch_size: 24, lr: 0.006, warmup: 100, weight_decay: 0.05, seed: 0, threads: 1}
        toy-attn-only: {n_layers: 4, d_model: 128, n_heads: 4, attn_only: true, ...}

A model's entry is merged over its default (so ``toy-gpt2: {steps: 50}`` only shortens the
training); keys split into ``ModelSpec`` (architecture) and ``TrainSpec`` (optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from patchbench.toy.corpus import CorpusSpec
from patchbench.toy.model import ModelSpec
from patchbench.toy.train import TrainSpec

__all__ = ["DEFAULT_MODELS", "ToySettings", "ToyModelSettings"]

DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "toy-gpt2": {
        "n_layers": 6,
        "d_model": 128,
        "n_heads": 4,
        "d_mlp": 256,
        "n_ctx": 64,
        "steps": 1600,
        "batch_size": 24,
        "lr": 6e-3,
        "warmup": 100,
        "weight_decay": 0.05,
        "seed": 0,
        "threads": 1,
    },
    "toy-attn-only": {
        "n_layers": 4,
        "d_model": 128,
        "n_heads": 4,
        "attn_only": True,
        "n_ctx": 64,
        "steps": 2000,
        "batch_size": 32,
        "lr": 3e-3,
        "seed": 0,
        "threads": 1,
    },
}


@dataclass(frozen=True)
class ToyModelSettings:
    name: str
    model: ModelSpec
    train: TrainSpec


@dataclass(frozen=True)
class ToySettings:
    data_dir: str
    corpus: CorpusSpec
    eval_n_prompts: int
    eval_seed: int
    models: dict[str, ToyModelSettings]

    @classmethod
    def from_config(cls, toy: dict[str, Any] | None) -> ToySettings:
        toy = dict(toy or {})
        unknown = set(toy) - {"data_dir", "corpus", "eval", "models"}
        if unknown:
            raise ValueError(
                f"unknown keys under `toy:` {sorted(unknown)}; known: data_dir, corpus, eval, models"
            )
        corpus_cfg = dict(toy.get("corpus", {}))
        corpus_known = {f.name for f in fields(CorpusSpec)}
        bad = set(corpus_cfg) - corpus_known
        if bad:
            raise ValueError(f"unknown keys under `toy.corpus:` {sorted(bad)}; known: {sorted(corpus_known)}")
        ev = dict(toy.get("eval", {}))
        names = dict.fromkeys(list(DEFAULT_MODELS) + list(toy.get("models", {}) or {}))
        models = {n: model_settings(n, (toy.get("models") or {}).get(n, {})) for n in names}
        return cls(
            data_dir=str(toy.get("data_dir", "data/toy")),
            corpus=CorpusSpec(**corpus_cfg),
            eval_n_prompts=int(ev.get("n_prompts", 200)),
            eval_seed=int(ev.get("seed", 0)),
            models=models,
        )


def model_settings(name: str, entry: dict[str, Any]) -> ToyModelSettings:
    """Merge ``entry`` over the model's default and split it into architecture and training."""
    if name not in DEFAULT_MODELS and not entry:
        raise ValueError(
            f"toy model {name!r} has no settings: add `toy: {{models: {{{name}: {{n_layers: ..., steps: ...}}}}}}` "
            f"to the config (defaults exist for {sorted(DEFAULT_MODELS)})"
        )
    merged = {**DEFAULT_MODELS.get(name, {}), **(entry or {})}
    if merged.get("attn_only"):
        merged.pop("d_mlp", None)
    arch_keys = {f.name for f in fields(ModelSpec)}
    train_keys = {f.name for f in fields(TrainSpec)}
    unknown = set(merged) - arch_keys - train_keys
    if unknown:
        raise ValueError(
            f"toy model {name!r}: unknown keys {sorted(unknown)}; architecture keys {sorted(arch_keys)}, "
            f"training keys {sorted(train_keys)}"
        )
    return ToyModelSettings(
        name=name,
        model=ModelSpec(**{k: v for k, v in merged.items() if k in arch_keys}),
        train=TrainSpec(**{k: v for k, v in merged.items() if k in train_keys}),
    )
