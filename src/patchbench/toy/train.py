"""Training loop for the toy models: packed next-token prediction on the toy corpus.

Documents are tokenised once, then packed greedily into rows of ``n_ctx`` tokens, each document
preceded by ``<|endoftext|>`` as in GPT-2's training stream. Half of the rows drop their leading
``<|endoftext|>``, so the model also sees documents that start at position 0 with no BOS (the
IOI prompts are used that way). Packing is first fit over the most recent rows (a document that
does not fit one row's rest goes into a later row's gap); what is left is padding and carries no
loss. AdamW with linear warm-up and cosine decay.

Deterministic given the seed: ``torch.manual_seed`` seeds the initialisation, a NumPy generator
seeded the same way orders the batches, ``torch.use_deterministic_algorithms(True)`` is on, and
the CPU thread count is fixed by the spec (different thread counts may round differently).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Int
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from patchbench.lm import LM
from patchbench.toy.model import build_model, hooked_config, save_toy
from patchbench.toy.settings import ModelSpec, TrainSpec

__all__ = ["TrainSpec", "pack_documents", "train_toy"]

log = logging.getLogger(__name__)


def pack_documents(
    doc_ids: list[list[int]],
    n_ctx: int,
    bos_id: int,
    pad_id: int,
    seed: int,
    bos_dropout: float = 0.5,
    open_rows: int = 64,
) -> tuple[Int[torch.Tensor, "rows n_ctx"], Bool[torch.Tensor, "rows n_ctx"]]:
    """Pack tokenised documents into rows; returns the tokens and a mask of real (non-pad) tokens.

    First fit: each document (with its leading ``<|endoftext|>``) goes into the oldest of the last
    ``open_rows`` rows that still has room for it, else it starts a new row (where, with
    probability ``bos_dropout``, it loses its ``<|endoftext|>``). The toy documents are short, so
    this fills about 96% of the tokens instead of the ~80% of next-fit packing.
    """
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = []
    open_idx: list[int] = []  # rows that may still take a document, oldest first
    for ids in doc_ids:
        piece = [bos_id] + list(ids[: n_ctx - 1])
        target = next((i for i in open_idx if len(rows[i]) + len(piece) <= n_ctx), None)
        if target is None:
            if rng.random() < bos_dropout:
                piece = piece[1:]
            rows.append([])
            target = len(rows) - 1
            open_idx.append(target)
            if len(open_idx) > open_rows:
                open_idx.pop(0)
        rows[target].extend(piece)
        if n_ctx - len(rows[target]) < 3:
            open_idx.remove(target)
    tokens = torch.full((len(rows), n_ctx), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return tokens, tokens != pad_id


def _lr_at(step: int, spec: TrainSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def _initialise(model: LM, spec: TrainSpec) -> None:
    """GPT-2 style initialisation: N(0, init_std) weights (the token embeddings N(0,
    embed_init_std) when set; TransformerLens's default is
    0.8/sqrt(d_model)), residual-writing matrices scaled down by depth. Found to learn the
    toy tasks faster (IOI on the 4-layer attention-only model: 0.89 -> 0.99 held-out).
    Weights are named and shaped as in a HookedTransformer (so ``b_Q`` [n_heads, d_head] counts
    as a matrix, as it did when the toys were HookedTransformers)."""
    scale = 1 / math.sqrt(2 * model.shape.n_layers) if spec.scale_init else 1.0
    state = model.ht_state_dict()
    for name, p in state.items():
        if p.ndim < 2:
            continue
        std = (
            spec.embed_init_std if name == "embed.W_E" and spec.embed_init_std is not None else spec.init_std
        )
        p.normal_(0.0, std)
        if name.endswith(("attn.W_O", "mlp.W_out")):
            p.mul_(scale)
    model.load_ht_state_dict(state)


def train_toy(
    docs: list[str],
    tokenizer: Tokenizer,
    model_spec: ModelSpec,
    train_spec: TrainSpec,
    out_dir: Path,
    model_name: str,
    progress_file=None,
    objective_factory: Callable[[int, int], Callable[[LM], dict[str, torch.Tensor]] | None] | None = None,
) -> dict:
    """Train one toy model on ``docs`` and write config.json, model.safetensors, training_curve.csv.

    ``objective_factory(n_layers, n_heads)``, when given, returns the circuit-imposing objective
    (``patchbench.toy.impose``) or None: each step adds its weighted terms to the language-modelling
    loss, and the curve gets one column per term. Returns a summary (final loss, wall time,
    tokens seen, the load average). The tokenizer files are not written here; the workflow
    copies the shared tokenizer into the model directory.
    """
    torch.set_num_threads(train_spec.threads)
    torch.manual_seed(train_spec.seed)
    torch.use_deterministic_algorithms(True)
    bos_id = tokenizer.token_to_id("<|endoftext|>")
    pad_id = tokenizer.token_to_id("<|pad|>")
    enc = tokenizer.encode_batch([d for d in docs if d])
    tokens, mask = pack_documents(
        [e.ids for e in enc], model_spec.n_ctx, bos_id, pad_id, train_spec.seed, train_spec.bos_dropout
    )
    log.info(
        "%s: %d docs packed into %d rows of %d tokens (%.0f%% real tokens)",
        model_name,
        len(enc),
        len(tokens),
        model_spec.n_ctx,
        100 * mask.float().mean().item(),
    )
    cfg_kwargs = hooked_config(model_spec, tokenizer.get_vocab_size(), train_spec.seed, model_name)
    model = build_model(cfg_kwargs)
    _initialise(model, train_spec)
    objective = objective_factory(model.shape.n_layers, model.shape.n_heads) if objective_factory else None
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    matrix = {k for k, v in model.ht_state_dict().items() if v.ndim >= 2}  # HookedTransformer shapes
    log.info(
        "%s: %d parameters, config %s, training %s",
        model_name,
        n_params,
        asdict(model_spec),
        asdict(train_spec),
    )

    if not train_spec.decay_embeddings:
        matrix.discard("embed.W_E")
    decay = [p for n, p in model.ht_named_parameters() if n in matrix]
    no_decay = [p for n, p in model.ht_named_parameters() if n not in matrix]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train_spec.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=train_spec.lr,
        betas=(0.9, 0.98),
    )
    rng = np.random.default_rng(train_spec.seed)
    order = rng.permutation(len(tokens))
    cursor = 0
    curve: list[tuple[int, float, dict[str, float]]] = []
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    bar = tqdm(
        range(train_spec.steps), desc=f"train {model_name}", unit="step", file=progress_file, mininterval=10
    )
    for step in bar:
        if cursor + train_spec.batch_size > len(order):
            order, cursor = rng.permutation(len(tokens)), 0
        idx = torch.from_numpy(order[cursor : cursor + train_spec.batch_size])
        cursor += train_spec.batch_size
        x, m = tokens[idx], mask[idx]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, train_spec)
        logits = model.logits(x)
        target = x[:, 1:].masked_fill(~m[:, 1:], -100)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
        )
        terms = objective(model) if objective is not None else {}
        total = loss + objective.total(terms) if objective is not None else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        term_values = {k: float(v.item()) for k, v in terms.items()}
        curve.append((step, loss_value, term_values))
        every = train_spec.snapshot_every
        if every and (step + 1) % every == 0 and step + 1 < train_spec.steps:
            model.train(False)
            save_toy(model, cfg_kwargs, out_dir / "snapshot")  # for watching a long run
            model.train(True)
        if step % 50 == 0 or step == train_spec.steps - 1:
            bar.set_postfix(loss=f"{loss_value:.3f}")
            extra = "".join(f"{k} {v:.4f} " for k, v in term_values.items())
            log.info(
                "%s step %d loss %.4f %s(%.1f s)",
                model_name,
                step,
                loss_value,
                extra,
                time.perf_counter() - t0,
            )
    wall = time.perf_counter() - t0
    model.train(False)
    save_toy(model, cfg_kwargs, out_dir)
    term_names = list(curve[0][2]) if curve else []
    with open(out_dir / "training_curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", *term_names])
        w.writerows((s, f"{v:.6f}", *(f"{t[k]:.6f}" for k in term_names)) for s, v, t in curve)
    summary = {
        "model": model_name,
        "n_params": n_params,
        "steps": train_spec.steps,
        "tokens_seen": int(train_spec.steps * train_spec.batch_size * model_spec.n_ctx),
        "first_loss": curve[0][1],
        "final_loss": float(np.mean([v for _, v, _ in curve[-20:]])),
        "wall_s": wall,
        "threads": train_spec.threads,
        # the machine may be shared with other work: the wall time depends on it
        "final_terms": {k: float(np.mean([t[k] for _, _, t in curve[-20:]])) for k in term_names},
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
    }
    log.info(
        "%s: trained in %.1f s, loss %.3f -> %.3f",
        model_name,
        wall,
        summary["first_loss"],
        summary["final_loss"],
    )
    return summary
