"""GN: Gaussian noise on the key tokens' embeddings (ROME's causal tracing).

The corrupted run reads the *clean* prompts and adds noise ~ N(0, (nu * sigma)^2) to the token
embeddings (the output of ``hook_embed``, before positional embeddings) at the prompt's
``noise_positions``. As in ROME's ``collect_embedding_std``, sigma is one scalar: ``.std()`` over
all elements of the model's own token embeddings (its embedding layer's output, before
TransformerLens's weight processing, which centres W_E: :meth:`patchbench.lm.LM.raw_token_embeddings`)
of the key tokens over the dataset; nu = 3 multiplies the standard deviation, not the variance.
Each (prompt, sample) draws its noise from its own seeded ``torch.Generator`` on the CPU, so the
draw does not depend on batching, chunking, device or the order prompts are processed in, and the
corrupted run and every patched run of a prompt see the identical noise. The draw is float32
(float64 for a float64 model) and reaches the model in its own dtype. GN reuses STR's wrong
answer r' for the logit difference.

Its settings are the config's ``noise`` section (:class:`NoiseSpec`: nu, n_samples, seed, and a
fixed sigma); a value such as ``gn@nu=1`` overrides them for one cell, so several noise levels
sit side by side in one experiment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from patchbench.config import default
from patchbench.interventions.corruptions.base import Corruption
from patchbench.prompts import PromptSet, PromptSetError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CORRUPTION",
    "GN",
    "NoiseSpec",
    "SIGMA_META_COLUMNS",
    "draw_noise",
    "embedding_sigma",
    "noise_dtype",
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


def embedding_sigma(model: Any, prompts: PromptSet, source: str = "auto") -> float:
    """ROME's sigma: std of all elements of the token embeddings of the key tokens over the dataset.

    ``source="noise_positions"``: the clean tokens at each prompt's ``noise_positions`` (duplicates
    counted, as ROME counts every subject token of every prompt). ``source="meta"``: the ids in
    the first of the meta columns :data:`SIGMA_META_COLUMNS` (e.g. the subject tokenised alone).
    ``"auto"`` (default) uses ``meta`` when such a column exists. Token embeddings are the model's
    own embedding layer on the ids, unprocessed (:meth:`~patchbench.lm.LM.raw_token_embeddings`;
    no positional embedding); the SD is torch's (unbiased), in float64.
    """
    import torch

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
    emb = model.raw_token_embeddings(torch.from_numpy(flat))
    if emb.numel() < 2:
        raise PromptSetError(f"{prompts.task}: sigma needs at least two embedding elements")
    return float(emb.double().std())


def noise_scale(model: Any, prompts: PromptSet, noise: NoiseSpec) -> tuple[float, float]:
    """``(sigma, std)`` of GN's noise: sigma (``noise.sigma`` when fixed, else :func:`embedding_sigma`)
    and std = nu * sigma."""
    sigma = noise.sigma if noise.sigma is not None else embedding_sigma(model, prompts)
    return sigma, noise.nu * sigma


def noise_seed(seed: int, prompt: int, sample: int) -> int:
    """The generator seed of one (prompt, sample): independent of batching and prompt order."""
    return int(
        np.random.SeedSequence([int(seed), int(prompt), int(sample)]).generate_state(1, dtype=np.uint64)[0]
        >> 1
    )


def noise_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype GN's noise is drawn in: float64 for a float64 model, else float32 (a half-precision
    model gets the float32 draw rounded to its dtype)."""
    import torch

    return torch.float64 if model_dtype == torch.float64 else torch.float32


def draw_noise(
    n_positions: int,
    d_model: int,
    std: float,
    seed: int,
    prompt: int,
    sample: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Noise for one (prompt, sample): ``std * N(0, 1)`` of shape (n_positions, d_model) on the CPU,
    drawn in :func:`noise_dtype` of ``dtype`` (default float32) and returned in ``dtype``."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    g = torch.Generator(device="cpu").manual_seed(noise_seed(seed, prompt, sample))
    draw = noise_dtype(dtype)
    return (torch.randn(n_positions, d_model, generator=g, dtype=draw) * std).to(dtype)


def noise_tensor(
    prompts: PromptSet,
    rows_prompt: np.ndarray,
    rows_sample: np.ndarray,
    d_model: int,
    std: float,
    seed: int,
    max_len: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Dense noise ``[rows, max_len, d_model]`` to add to ``hook_embed`` for the given (prompt, sample)
    rows (zero off the key tokens), in the model's ``dtype`` (see :func:`draw_noise`)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    max_len = int(prompts.lengths.max()) if max_len is None else max_len
    out = torch.zeros(len(rows_prompt), max_len, d_model, dtype=dtype)
    for r, (p, s) in enumerate(zip(rows_prompt, rows_sample, strict=True)):
        pos = prompts.noise_positions[int(p)]
        if len(pos):
            out[r, torch.from_numpy(np.array(pos, dtype=np.int64))] = draw_noise(
                len(pos), d_model, std, seed, int(p), int(s), dtype
            )
    return out


@dataclass(frozen=True)
class GN(NoiseSpec, Corruption):
    """GN: its settings are a :class:`NoiseSpec`'s."""

    name = "gn"
    label = "GN"
    kind = "tokens"
    in_paper = True
    section = "noise"
    noise = True
    summary = "the clean prompt, N(0, (nu sigma)^2) noise on its key tokens' embeddings (ROME)"

    @classmethod
    def of_noise(cls, noise: NoiseSpec, overrides: dict[str, Any] | None = None) -> GN:
        """GN with the settings of ``noise``, overridden by a value's ``overrides``."""
        return cls(**{**asdict(noise), **(overrides or {})})

    @property
    def spec(self) -> NoiseSpec:
        """Its settings as a plain :class:`NoiseSpec` (what a SweepSpec holds)."""
        return NoiseSpec(**asdict(self))

    def describe(self, facts):
        return (
            f"GN: sigma {facts['sigma']:.6g}, nu {self.nu:g} -> noise std {facts['noise_std']:.6g}, "
            f"{self.n_samples} sample(s)"
        )

    def corrupted_run(self, ctx):
        from patchbench.engine.runs import Run

        model, prompts, max_len = ctx.model, ctx.prompts, ctx.max_len
        sigma, std = noise_scale(model, prompts, self)
        d_model, dtype, seed = model.shape.d_model, model.shape.dtype, self.seed

        def noise(rows_prompt: np.ndarray, rows_sample: np.ndarray):
            return noise_tensor(prompts, rows_prompt, rows_sample, d_model, std, seed, max_len, dtype=dtype)

        return Run("corrupted", self.input_tokens(prompts), noise=noise), {"sigma": sigma, "noise_std": std}


CORRUPTION = GN
