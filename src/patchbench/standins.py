"""Random-weight stand-ins of the paper's models, seeded into a Hugging Face hub cache.

The paper suite loads GPT-2 small / large / XL and GPT-J 6B by hub name through TransformerLens's
``TransformerBridge`` (:func:`patchbench.models.load_model`). To run that exact code path without network, GPUs or
the real weights (CI, a laptop), this module writes a *hub cache* in which every paper model is
a randomly initialised model of the same architecture: GPT-2 small at full size; GPT-2 large /
XL and GPT-J with their real widths, heads, vocabularies and positional schemes but fewer
layers, so that a CI machine can hold them. Nothing else changes: the config names the same
hub models (``config/standins.yaml``), and ``HF_HUB_CACHE`` + ``HF_HUB_OFFLINE=1`` point the
libraries at the stand-ins::

    python -m patchbench.standins --cache results/standins/hub            # seed (idempotent)
    HF_HUB_CACHE=results/standins/hub HF_HUB_OFFLINE=1 \\
        snakemake --configfile config/standins.yaml

Layout written per model (what ``huggingface_hub`` expects of a cache; plain files, no blobs):
``models--<org>--<name>/refs/main`` (the commit) and ``snapshots/<commit>/`` with
``config.json``, ``model.safetensors`` and the GPT-2 tokenizer files (vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json) copied from a tokenizer directory (the data
mirror's ``gpt2-tokenizer``). GPT-J's real tokenizer is GPT-2's BPE (its 50400-row embedding is
padding), so the same files serve.

``attn-only-4l`` (TransformerLens's own format, ``NeelNanda/Attn_Only_4L512W_C4_Code``) is seeded
too: a TransformerLens ``config.json`` + ``model_final.pth`` (HookedTransformer-format weights) and
a 48262-token stand-in of its digit-splitting tokenizer (GPT-2's BPE cut to 48261 tokens).
TransformerLens finds that file with ``HfApi.list_repo_files``, which has no offline mode:
``patchbench.models.load_model`` answers it from the cache when ``HF_HUB_OFFLINE`` is set
(``offline_repo_listing``). Its positional embeddings are standard (``shortformer_pos: false``):
TransformerLens 4 has no shortformer implementation, and a third-party probe of the real repository
found standard positions (unverified here, offline).

``--configs-only`` writes the configs at the real models' depth and the tokenizers, without
weights: enough to plan the paper suite (``snakemake -n``) and estimate its cost (``patchbench
estimate``) offline.

Weights are seeded (``seed``), so two seedings give identical files. A snapshot carries
``patchbench-standin.json`` (the spec it was built from); seeding skips models whose snapshot
already matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchbench.models import offline_repo_listing

__all__ = [
    "COMMIT",
    "STANDINS",
    "StandinSpec",
    "offline_repo_listing",
    "repo_dir",
    "seed_hub_cache",
    "seed_standin",
]

log = logging.getLogger(__name__)

#: The fake commit every stand-in snapshot is filed under (refs/main points at it).
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GPT2_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
MARKER = "patchbench-standin.json"


@dataclass(frozen=True)
class StandinSpec:
    """One paper model's stand-in: the hub repo it impersonates and the architecture to build.

    ``arch`` is ``transformers`` config kwargs for ``kind`` ``gpt2`` / ``gptj`` and
    TransformerLens config fields for ``kind`` ``tl`` (attn-only-4l). ``real_layers`` is
    the real model's depth, for the record; ``arch`` holds the stand-in's.
    """

    name: str  # the name the paper config uses (models.<name>.hub_name)
    repo_id: str  # the hub repository TransformerLens reads for it
    kind: str  # gpt2 | gptj | tl
    arch: dict[str, Any] = field(default_factory=dict)
    real_layers: int = 0
    save_dtype: str = "float32"  # dtype of the saved weights (GPT-J: float16 halves the file)

    def with_layers(self, n_layers: int) -> StandinSpec:
        key = "n_layers" if self.kind == "tl" else "n_layer"
        return StandinSpec(
            self.name,
            self.repo_id,
            self.kind,
            {**self.arch, key: n_layers},
            self.real_layers,
            self.save_dtype,
        )

    @property
    def n_layers(self) -> int:
        return int(self.arch["n_layers" if self.kind == "tl" else "n_layer"])

    def fingerprint(self, seed: int) -> str:
        return hashlib.sha256(json.dumps([asdict(self), seed], sort_keys=True).encode()).hexdigest()[:16]


_GPT2 = {"vocab_size": 50257, "n_positions": 1024, "n_ctx": 1024}  # n_ctx: TransformerLens reads it
STANDINS: dict[str, StandinSpec] = {
    s.name: s
    for s in (
        StandinSpec("gpt2", "gpt2", "gpt2", {**_GPT2, "n_embd": 768, "n_head": 12, "n_layer": 12}, 12),
        StandinSpec(
            "gpt2-large", "gpt2-large", "gpt2", {**_GPT2, "n_embd": 1280, "n_head": 20, "n_layer": 2}, 36
        ),
        StandinSpec("gpt2-xl", "gpt2-xl", "gpt2", {**_GPT2, "n_embd": 1600, "n_head": 25, "n_layer": 2}, 48),
        StandinSpec(
            "EleutherAI/gpt-j-6B",
            "EleutherAI/gpt-j-6B",
            "gptj",
            {
                "vocab_size": 50400,
                "n_positions": 2048,
                "n_embd": 4096,
                "n_head": 16,
                "rotary_dim": 64,
                "n_layer": 1,
                "tie_word_embeddings": False,
                "bos_token_id": 50256,
                "eos_token_id": 50256,
            },
            28,
            "float16",
        ),
        StandinSpec(
            "attn-only-4l",
            "NeelNanda/Attn_Only_4L512W_C4_Code",
            "tl",
            {
                "n_layers": 4,
                "d_model": 512,
                "d_head": 64,
                "n_heads": 8,
                "d_mlp": 2048,
                "n_ctx": 1024,
                "d_vocab": 48262,
                "act_fn": "solu_ln",
                "attn_only": True,
                "normalization_type": "LN",
                "positional_embedding_type": "standard",
            },
            4,
        ),
    )
}
ATTN_ONLY_TOKENIZER_REPO = "NeelNanda/gpt-neox-tokenizer-digits"


def repo_dir(cache: Path | str, repo_id: str) -> Path:
    """``models--<org>--<name>`` under the hub cache."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def _snapshot(cache: Path, repo_id: str) -> Path:
    repo = repo_dir(cache, repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _no_exist(cache: Path, repo_id: str, *files: str) -> None:
    """Mark files as known-missing, so offline lookups of them fail fast instead of 'cannot connect'."""
    d = repo_dir(cache, repo_id) / ".no_exist" / COMMIT
    d.mkdir(parents=True, exist_ok=True)
    for f in files:
        (d / f).touch()


def _save_hf(spec: StandinSpec, snap: Path, seed: int) -> None:
    import torch

    if spec.kind == "gpt2":
        from transformers import GPT2Config as Config
        from transformers import GPT2LMHeadModel as Model
    elif spec.kind == "gptj":
        from transformers import GPTJConfig as Config
        from transformers import GPTJForCausalLM as Model
    else:
        raise ValueError(f"stand-in {spec.name}: unknown kind {spec.kind!r}; use gpt2, gptj or tl")
    torch.manual_seed(seed)
    model = Model(Config(**spec.arch)).eval()
    model.to(getattr(torch, spec.save_dtype)).save_pretrained(snap)


def _gpt2_tokenizer_files(tokenizer_dir: Path, snap: Path | None) -> None:
    """Copy the GPT-2 tokenizer files into ``snap`` (only check that they exist when ``snap`` is None)."""
    missing = [f for f in GPT2_TOKENIZER_FILES if not (tokenizer_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"GPT-2 tokenizer files {missing} not found in {tokenizer_dir}; pass the data mirror's "
            "gpt2-tokenizer directory (e.g. ../shared/data/gpt2-tokenizer) as --tokenizer"
        )
    for f in GPT2_TOKENIZER_FILES if snap is not None else ():
        shutil.copyfile(tokenizer_dir / f, snap / f)


def _digits_tokenizer(tokenizer_dir: Path, snap: Path, n_vocab: int) -> None:
    """GPT-2's byte-level BPE cut to ``n_vocab - 1`` tokens plus ``<|endoftext|>`` as the last id,
    splitting digits one by one (as NeelNanda/gpt-neox-tokenizer-digits does). Ids differ from
    the real tokenizer's; the shape (48262 tokens, single-digit numbers) is the same."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    merges_text = (tokenizer_dir / "merges.txt").read_text().splitlines()
    merges = [tuple(m.split(" ")) for m in merges_text if m and not m.startswith("#version")]
    keep = n_vocab - 1
    kept = {tok: i for tok, i in vocab.items() if i < keep}
    eot = "<|endoftext|>"
    kept[eot] = keep
    n_merges = keep - 256  # id 256 + k is produced by merge k
    bpe = models.BPE(vocab=kept, merges=merges[:n_merges], unk_token=None)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([eot])
    tok.save(str(snap / "tokenizer.json"))
    (snap / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": eot,
                "eos_token": eot,
                "unk_token": eot,
            },
            indent=1,
        )
    )
    (snap / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}, indent=1)
    )


def _save_tl(
    spec: StandinSpec, cache: Path, snap: Path, tokenizer_dir: Path, seed: int, weights: bool = True
) -> None:
    import torch

    from patchbench.lm import load_native

    if weights:
        model = load_native({**spec.arch, "seed": seed}, check=False)  # seeded random weights
        torch.save(model.ht_state_dict(), snap / "model_final.pth")
    # TransformerLens's own config format, as the real repo has it.
    tl_cfg = {
        **{k: v for k, v in spec.arch.items() if k != "positional_embedding_type"},
        "normalization": spec.arch["normalization_type"],
        "shortformer_pos": spec.arch["positional_embedding_type"] == "shortformer",
        "tokenizer_name": ATTN_ONLY_TOKENIZER_REPO,
    }
    (snap / "config.json").write_text(json.dumps(tl_cfg, indent=1))
    tok_snap = _snapshot(cache, ATTN_ONLY_TOKENIZER_REPO)
    _digits_tokenizer(tokenizer_dir, tok_snap, spec.arch["d_vocab"])
    _no_exist(cache, ATTN_ONLY_TOKENIZER_REPO, "config.json")


def seed_standin(
    cache: Path | str, spec: StandinSpec, tokenizer_dir: Path | str, seed: int = 0, weights: bool = True
) -> Path:
    """Write ``spec``'s stand-in into the hub cache ``cache`` (skipped when already there); its snapshot.

    ``weights=False`` writes its config and tokenizer only: enough to plan a run and estimate its cost
    (``snakemake -n``, ``patchbench estimate``), not to load the model."""
    cache, tokenizer_dir = Path(cache), Path(tokenizer_dir)
    snap = repo_dir(cache, spec.repo_id) / "snapshots" / COMMIT
    fp = spec.fingerprint(seed) + ("" if weights else "-configs")
    marker = snap / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fp:
        log.info("stand-in %s already in %s", spec.name, snap)
        return snap
    if snap.exists():
        shutil.rmtree(snap)
    _gpt2_tokenizer_files(tokenizer_dir, None)  # fail before building weights when the tokenizer is missing
    t0 = time.perf_counter()
    snap = _snapshot(cache, spec.repo_id)
    if spec.kind == "tl":
        _save_tl(spec, cache, snap, tokenizer_dir, seed, weights)
    else:
        if weights:
            _save_hf(spec, snap, seed)
        else:
            from transformers import AutoConfig

            AutoConfig.for_model(spec.kind, **spec.arch).save_pretrained(snap)
        _gpt2_tokenizer_files(tokenizer_dir, snap)
    marker.write_text(
        json.dumps(
            {"fingerprint": fp, "seed": seed, "spec": asdict(spec), "random_weights": weights}, indent=1
        )
    )
    size = sum(f.stat().st_size for f in snap.iterdir()) / 2**20
    log.info(
        "stand-in %s (%s, %d of %d layers, %s): %.0f MiB in %.1f s -> %s",
        spec.name, spec.repo_id, spec.n_layers, spec.real_layers, spec.save_dtype, size,
        time.perf_counter() - t0, snap,
    )  # fmt: skip
    return snap


def seed_hub_cache(
    cache: Path | str,
    tokenizer_dir: Path | str,
    names: Sequence[str] | None = None,
    seed: int = 0,
    layers: dict[str, int] | None = None,
    weights: bool = True,
) -> dict[str, Path]:
    """Seed the stand-ins ``names`` (default: all of :data:`STANDINS`) into ``cache``.

    ``layers`` overrides the stand-in depth per name (GPT-2 small keeps its 12 by default).
    ``weights=False``: configs at the real models' depth and tokenizers only (:func:`seed_standin`).
    Returns each name's snapshot directory.
    """
    names = list(names) if names is not None else list(STANDINS)
    unknown = [n for n in names if n not in STANDINS]
    if unknown:
        raise KeyError(f"no stand-in for {unknown}; known: {sorted(STANDINS)}")
    out = {}
    for name in names:
        spec = STANDINS[name]
        if not weights:
            spec = spec.with_layers(spec.real_layers)
        if layers and name in layers:
            spec = spec.with_layers(layers[name])
        out[name] = seed_standin(cache, spec, tokenizer_dir, seed, weights)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patchbench.standins",
        description="Seed a Hugging Face hub cache with random-weight stand-ins of the paper's models.",
    )
    parser.add_argument(
        "--cache", required=True, type=Path, help="hub cache directory (then HF_HUB_CACHE=it)"
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=Path("../shared/data/gpt2-tokenizer"),
        help="directory with the GPT-2 tokenizer files (default: the data mirror's, ../shared/data/gpt2-tokenizer)",
    )
    parser.add_argument("--models", nargs="+", default=None, choices=sorted(STANDINS), help="default: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layers", nargs="+", default=[], metavar="NAME=N", help="stand-in depth overrides, e.g. gpt2-xl=4"
    )
    parser.add_argument(
        "--configs-only",
        action="store_true",
        help="the paper models' configs at their real depth and tokenizers, no weights: enough to plan "
        "(snakemake -n) and estimate (patchbench estimate) the paper suite offline",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        layers = {k: int(v) for k, v in (s.split("=", 1) for s in args.layers)}
    except ValueError:
        parser.error(f"--layers takes NAME=N pairs, got {args.layers}")
    t0 = time.perf_counter()
    snaps = seed_hub_cache(args.cache, args.tokenizer, args.models, args.seed, layers, not args.configs_only)
    log.info("seeded %d stand-ins in %.1f s; use HF_HUB_CACHE=%s HF_HUB_OFFLINE=1", len(snaps),
             time.perf_counter() - t0, args.cache.resolve())  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
