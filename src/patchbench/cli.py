"""The ``patchbench`` console script: one-off sweeps outside Snakemake, on the workflow's code path.

    patchbench sweep --model gpt2 --prompts results/prompts/gpt2/ioi.parquet \\
        --corruption str --site attn_head --out raw.parquet --effects effects.parquet
    patchbench effects raw.parquet --out effects.parquet [--metrics prob,logit_diff,kl,stolfo]
    patchbench robustness str_raw.parquet gn_raw.parquet --out robustness/ [--circuit circuit.json]

``--model`` is a TransformerLens / Hugging Face hub name or a local model directory (a toy
model of this repository or a ``save_pretrained`` directory), loaded by
:func:`patchbench.models.load_model`. The raw frame and the effects frame (with the paper's 2-SD
detection) are written with their metadata, exactly as the workflow's ``sweep`` and ``effects``
rules write them. ``robustness`` writes the localization-robustness tables, one-page summary and
figure of one experiment (its sweeps' raw frames: bootstrap over prompts; or its effects files
alone: a normal approximation) as the workflow's ``robustness_analysis`` rule does. Option
defaults are the config schema's (:func:`patchbench.config.default`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "load_model_for_cli"]

log = logging.getLogger("patchbench.cli")


def load_model_for_cli(name_or_path: str, dtype: str, device: str):
    """The one place the CLI obtains a model (a hub name or a local directory)."""
    from patchbench.models import ModelSpec, load_model

    return load_model(ModelSpec.from_name(name_or_path, dtype=dtype, device=device))


def _heads(text: str | None) -> tuple[tuple[int, int], ...] | None:
    if not text:
        return None
    try:
        return tuple((int(a), int(b)) for a, b in (h.split(".") for h in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--heads expects L.H,L.H,... (e.g. 7.3,7.9), got {text!r}"
        ) from None


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if not text else tuple(int(x) for x in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    from patchbench.config import default
    from patchbench.detection import PAPER_K

    ap = argparse.ArgumentParser(
        prog="patchbench", description="Activation patching done right (Zhang & Nanda 2024)."
    )
    sub = ap.add_subparsers(dest="command", required=True)

    sw = sub.add_parser("sweep", help="run one patching sweep and write its raw frame (and effects)")
    sw.add_argument(
        "--model", required=True, help="hub name (gpt2, attn-only-4l, ...) or a local model directory"
    )
    sw.add_argument(
        "--prompts", required=True, type=Path, help="PromptSet parquet (built by the workflow's prompts rule)"
    )
    sw.add_argument("--corruption", required=True, choices=["str", "gn"])
    sw.add_argument("--site", required=True, choices=["attn_head", "head_v", "mlp", "resid_pre"])
    sw.add_argument(
        "--position",
        default=default("experiment.position"),
        help="all | each | a named position of the PromptSet (END, S2, ...)",
    )
    sw.add_argument(
        "--window", type=int, default=default("experiment.windows")[0], help="mlp only: sliding-window size"
    )
    sw.add_argument(
        "--heads", type=str, default=None, help="restrict to heads L.H,L.H (head_v: patched together)"
    )
    sw.add_argument("--layers", type=str, default=None, help="restrict to layers, e.g. 0,1,2")
    sw.add_argument("--nu", type=float, default=default("noise.nu"), help="GN: noise std = nu * sigma")
    sw.add_argument(
        "--samples", type=int, default=default("noise.n_samples"), help="GN: noise samples per prompt"
    )
    sw.add_argument("--seed", type=int, default=default("noise.seed"), help="GN: noise seed")
    sw.add_argument("--sigma", type=float, default=None, help="GN: fixed sigma (default: from the data)")
    sw.add_argument("--memory-budget-mb", type=int, default=default("model.memory_budget_mb"))
    sw.add_argument("--dtype", default=default("model.dtype"), choices=["float32", "float16", "bfloat16"])
    sw.add_argument(
        "--device", default=default("model.device"), help="auto (CUDA when available) | cpu | cuda[:i]"
    )
    sw.add_argument("--clean-cache", type=Path, default=None, help="safetensors clean cache to reuse")
    sw.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="resume from / write finished chunks here"
    )
    sw.add_argument("--out", required=True, type=Path, help="raw frame (parquet)")
    sw.add_argument("--effects", type=Path, default=None, help="also write the effects frame (parquet)")
    sw.add_argument("--metrics", default=None, help="comma-separated metrics for --effects (default by task)")
    sw.add_argument("--no-progress", action="store_true")

    ef = sub.add_parser("effects", help="effects (+ 2-SD detection) from a raw frame")
    ef.add_argument("raw", type=Path)
    ef.add_argument("--out", required=True, type=Path)
    ef.add_argument("--metrics", default=None, help="comma-separated metrics (default by task)")
    ef.add_argument("--k", type=float, default=PAPER_K, help="detection threshold in SDs (the paper's: 2)")

    rb = sub.add_parser(
        "robustness", help="localization robustness of one experiment's cells (tables, summary, figure)"
    )
    rb.add_argument(
        "frames",
        nargs="+",
        type=Path,
        help="raw sweep frames (bootstrap) or effects files (normal approximation) of one experiment: "
        "one per corruption x window",
    )
    rb.add_argument("--out", required=True, type=Path, help="output directory")
    rb.add_argument(
        "--name", default=None, help="experiment name in file names and titles (default task_site-positions)"
    )
    rb.add_argument(
        "--circuit", type=Path, default=None, help="known-circuit JSON to score detections against"
    )
    rb.add_argument("--metrics", default=None, help="comma-separated metrics (raw frames; default by task)")
    rb.add_argument("--n-boot", type=int, default=default("robustness.n_boot"), help="bootstrap resamples")
    rb.add_argument("--ci", type=float, default=default("robustness.ci"), help="confidence level")
    rb.add_argument("--seed", type=int, default=default("robustness.seed"), help="seed of the resamples")
    rb.add_argument("--no-figure", action="store_true", help="tables and summary only")
    return ap


def _robustness(args: argparse.Namespace) -> None:
    from patchbench.analysis.robustness import (
        RobustnessSettings,
        bootstrap_grid,
        normal_grid,
        read_known_circuit,
    )
    from patchbench.analysis.robustness_report import analyse, write_experiment
    from patchbench.layout import ROBUSTNESS_FIGURES, Layout
    from patchbench.rawframe import read_frame

    frames = [read_frame(p) for p in args.frames]
    given = {"raw" if "run" in f.columns else "effects" if "effect" in f.columns else "?" for f in frames}
    if given not in ({"raw"}, {"effects"}):
        raise ValueError(
            f"{[str(p) for p in args.frames]}: pass raw sweep frames (results/sweeps/...) or effects files "
            "(results/effects/...) of one experiment, not a mix or other files"
        )
    settings = RobustnessSettings(n_boot=args.n_boot, ci=args.ci, seed=args.seed)
    labels = [str(p) for p in args.frames]
    if given == {"raw"}:
        metrics = tuple(args.metrics.split(",")) if args.metrics else None
        grid = bootstrap_grid(frames, settings, metrics=metrics, names=labels)
    else:
        log.warning(
            "effects files only: normal approximation (effect +- SD/sqrt(n), components independent); "
            "pass the raw sweep frames for the bootstrap"
        )
        grid = normal_grid(frames, settings, names=labels)
    cell = grid.cells.iloc[0]
    name = args.name or f"{cell['task']}_{cell['site']}-{cell['positions']}"
    circuit = read_known_circuit(args.circuit, str(cell["task"])) if args.circuit else None
    names = Layout.robustness_names(name, str(cell["model"]) or "model")
    kinds = [k for k in names if not (args.no_figure and k in ROBUSTNESS_FIGURES)]
    paths = write_experiment(analyse(name, grid, circuit), {k: args.out / names[k] for k in kinds})
    for p in paths.values():
        print(p)


def _write_effects(raw, out: Path, metrics: str | None, k: float) -> None:
    from patchbench.detection import detect
    from patchbench.metrics import effects, metrics_for
    from patchbench.rawframe import metadata, write_frame

    ms = tuple(metrics.split(",")) if metrics else metrics_for(metadata(raw)["task"])
    eff = detect(effects(raw, metrics=ms), k=k)
    write_frame(eff, out)
    found = eff.loc[eff["detected"] != "", ["metric", "component", "detected"]]
    log.info(
        "effects: %d components x %d metrics -> %s; detected %d",
        eff["component"].nunique(),
        len(ms),
        out,
        len(found),
    )


def _sweep(args: argparse.Namespace) -> None:
    from patchbench.corruption import NoiseSpec
    from patchbench.detection import PAPER_K
    from patchbench.engine.sweep import run_sweep
    from patchbench.prompts import PromptSet
    from patchbench.rawframe import write_frame
    from patchbench.sites import SweepSpec

    model = load_model_for_cli(args.model, dtype=args.dtype, device=args.device)
    prompts = PromptSet.from_parquet(args.prompts, d_vocab=model.cfg.d_vocab)
    spec = SweepSpec(
        corruption=args.corruption,
        site=args.site,
        position=args.position,
        window=args.window,
        heads=_heads(args.heads),
        layers=_ints(args.layers),
        noise=NoiseSpec(nu=args.nu, n_samples=args.samples, seed=args.seed, sigma=args.sigma),
        memory_budget_mb=args.memory_budget_mb,
    )
    clean = None
    if args.clean_cache is not None:
        from safetensors.torch import load_file

        clean = load_file(str(args.clean_cache), device=str(model.cfg.device))
    raw = run_sweep(
        model,
        prompts,
        spec,
        clean,
        name=args.model,
        progress=not args.no_progress,
        logger=log,
        checkpoint_dir=args.checkpoint_dir,
    )
    write_frame(raw, args.out)
    log.info("wrote %d rows to %s", len(raw), args.out)
    if args.effects is not None:
        _write_effects(raw, args.effects, args.metrics, PAPER_K)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "sweep":
            _sweep(args)
        elif args.command == "effects":
            from patchbench.rawframe import read_frame

            _write_effects(read_frame(args.raw), args.out, args.metrics, args.k)
        elif args.command == "robustness":
            _robustness(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        print(f"patchbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
