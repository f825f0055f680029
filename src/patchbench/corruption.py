"""Corruptions: symmetric token replacement (STR) and Gaussian noise (GN, ROME's causal tracing).

**STR** runs the model on the PromptSet's ``corrupted`` prompts: in-distribution prompts of the
same token length whose answer is the wrong answer r' (``PromptSet.wrong``). Unequal pairs are
refused (by :class:`~patchbench.prompts.PromptSet` itself, naming the prompt).

**GN** runs the model on the *clean* prompts and adds noise ~ N(0, (nu * sigma)^2) to the token
embeddings (the output of ``hook_embed``, before positional embeddings) at the prompt's
``noise_positions``. As in ROME's ``collect_embedding_std``, sigma is one scalar: ``.std()`` over
all elements of the token embeddings (rows of W_E) of the key tokens over the dataset; nu = 3
multiplies the standard deviation, not the variance. Each (prompt, sample) draws its noise from
its own seeded ``torch.Generator`` on the CPU, so the draw does not depend on batching, chunking,
device or the order prompts are processed in, and the corrupted run and every patched run of a
prompt see the identical noise. GN reuses STR's wrong answer r' for the logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

from patchbench.config import default
from patchbench.engine.forward import token_embeddings
from patchbench.prompts import PromptSet, PromptSetError

__all__ = [
    "NoiseSpec",
    "SIGMA_META_COLUMNS",
    "corrupted_tokens",
    "draw_noise",
    "embedding_sigma",
    "noise_scale",
    "noise_seed",
    "noise_tensor",
]


@dataclass(frozen=True)
class NoiseSpec:
    """GN parameters: noise std = ``nu * sigma``; ``sigma=None`` computes sigma from the data."""

    nu: float = default("noise.nu")
    n_samples: int = default("noise.n_samples")
    seed: int = default("noise.seed")
    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"NoiseSpec: n_samples must be >= 1, got {self.n_samples}")
        if self.nu < 0:
            raise ValueError(f"NoiseSpec: nu must be >= 0, got {self.nu}")
        if self.sigma is not None and self.sigma < 0:
            raise ValueError(f"NoiseSpec: sigma must be >= 0, got {self.sigma}")


#: Per-prompt metadata columns holding the token ids sigma is computed from, when a task records them
#: (factual recall: the subject tokenised alone, no BOS, as ROME's ``collect_embedding_std`` does).
SIGMA_META_COLUMNS = ("sigma_ids", "subject_ids")


def embedding_sigma(model, prompts: PromptSet, source: str = "auto") -> float:
    """ROME's sigma: std of all elements of the token embeddings of the key tokens over the dataset.

    ``source="noise_positions"``: the clean tokens at each prompt's ``noise_positions`` (duplicates
    counted, as ROME counts every subject token of every prompt). ``source="meta"``: the ids in
    the first of the meta columns :data:`SIGMA_META_COLUMNS` (e.g. the subject tokenised alone).
    ``"auto"`` (default) uses ``meta`` when such a column exists. Token embeddings are
    ``model.embed`` (rows of W_E, no positional embedding); the SD is torch's (unbiased).
    """
    col = next((c for c in SIGMA_META_COLUMNS if c in prompts.meta.columns), None)
    if source == "auto":
        source = "meta" if col is not None else "noise_positions"
    if source == "meta":
        if col is None:
            raise PromptSetError(
                f"{prompts.task}: sigma source 'meta' needs a meta column {SIGMA_META_COLUMNS}"
            )
        ids = [np.asarray(v, dtype=np.int64).reshape(-1) for v in prompts.meta[col]]
    elif source == "noise_positions":
        ids = [prompts.clean[i][prompts.noise_positions[i]] for i in range(len(prompts))]
    else:
        raise ValueError(f"unknown sigma source {source!r}; use 'auto', 'meta' or 'noise_positions'")
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    if flat.size == 0:
        raise PromptSetError(
            f"{prompts.task}: no key tokens (noise_positions / {col}) in any prompt, so GN has nothing to "
            "corrupt and sigma is undefined; the task generator must set noise_positions (the key tokens)"
        )
    with torch.no_grad():
        emb = token_embeddings(model, flat)
    if emb.numel() < 2:
        raise PromptSetError(f"{prompts.task}: sigma needs at least two embedding elements")
    return float(emb.double().std())


def noise_scale(model, prompts: PromptSet, corruption: str, noise: NoiseSpec) -> tuple[float | None, float]:
    """``(sigma, std)`` of a run's noise: GN's sigma (``noise.sigma`` when fixed, else
    :func:`embedding_sigma`) and std = nu * sigma; ``(None, 0.0)`` for STR, which adds none."""
    if corruption != "gn":
        return None, 0.0
    sigma = noise.sigma if noise.sigma is not None else embedding_sigma(model, prompts)
    return sigma, noise.nu * sigma


def noise_seed(seed: int, prompt: int, sample: int) -> int:
    """The generator seed of one (prompt, sample): independent of batching and prompt order."""
    return int(
        np.random.SeedSequence([int(seed), int(prompt), int(sample)]).generate_state(1, dtype=np.uint64)[0]
        >> 1
    )


def draw_noise(
    n_positions: int, d_model: int, std: float, seed: int, prompt: int, sample: int
) -> torch.Tensor:
    """Noise for one (prompt, sample): ``std * N(0, 1)`` of shape (n_positions, d_model), float32 CPU."""
    g = torch.Generator(device="cpu").manual_seed(noise_seed(seed, prompt, sample))
    return torch.randn(n_positions, d_model, generator=g, dtype=torch.float32) * std


def noise_tensor(
    prompts: PromptSet,
    rows_prompt: Int[np.ndarray, " rows"],
    rows_sample: Int[np.ndarray, " rows"],
    d_model: int,
    std: float,
    seed: int,
    max_len: int | None = None,
) -> Float[torch.Tensor, "rows max_len d_model"]:
    """Dense noise to add to ``hook_embed`` for the given (prompt, sample) rows (zero off the key tokens)."""
    max_len = int(prompts.lengths.max()) if max_len is None else max_len
    out = torch.zeros(len(rows_prompt), max_len, d_model, dtype=torch.float32)
    for r, (p, s) in enumerate(zip(rows_prompt, rows_sample, strict=True)):
        pos = prompts.noise_positions[int(p)]
        if len(pos):
            out[r, torch.from_numpy(np.array(pos, dtype=np.int64))] = draw_noise(
                len(pos), d_model, std, seed, int(p), int(s)
            )
    return out


def corrupted_tokens(prompts: PromptSet, corruption: str) -> Int[torch.Tensor, "n_prompts max_len"]:
    """Token ids the corrupted run reads: STR's corrupted prompts, or the clean ones for GN."""
    if corruption == "str":
        prompts.validate()  # refuses unequal clean / corrupted pairs, naming the prompt
        return prompts.tokens("corrupted")
    if corruption == "gn":
        return prompts.tokens("clean")
    raise ValueError(f"unknown corruption {corruption!r}; use 'str' or 'gn'")
