"""The ``patchbench`` console script: one-off sweeps outside Snakemake, on the workflow's code path.

    patchbench sweep --model gpt2 --prompts results/prompts/gpt2/ioi.parquet \\
        --corruption str --site attn_head --out raw.parquet --effects effects.parquet
    patchbench effects raw.parquet --out effects.parquet [--metrics prob,logit_diff,kl,stolfo]
    patchbench robustness str_raw.parquet gn_raw.parquet --out robustness/ [--circuit circuit.json]
    patchbench estimate --configfile config/demo.yaml [--device cpu|cuda|h100|a100]

``--model`` is a TransformerLens / Hugging Face hub name or a local model directory (a toy
model of this repository or a ``save_pretrained`` directory), loaded by
:func:`patchbench.models.load_model`; ``--name`` names it in the frames (default: the directory's
basename or the hub name's last part; checked by :func:`patchbench.layout.check_name`, as every
name that becomes part of a path is). The raw frame and the effects frame (with the paper's 2-SD
detection) are written with their metadata, exactly as the workflow's ``sweep`` and ``effects``
rules write them. ``robustness`` writes the localization-robustness tables, one-page summary and
figure of one experiment (its sweeps' raw frames: bootstrap over prompts; or its effects files
alone: a normal approximation) as the workflow's ``robustness_analysis`` rule does. Option
defaults are the config schema's (:func:`patchbench.config.default`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "load_model_for_cli"]

log = logging.getLogger("patchbench.cli")


def load_model_for_cli(name_or_path: str, dtype: str, device: str):
    """The one place the CLI obtains a model (a hub name or a local directory), as a :class:`patchbench.lm.LM`."""
    from patchbench.models import load_model

    return load_model(model_spec_for_cli(name_or_path, dtype=dtype, device=device))


def model_spec_for_cli(name_or_path: str, dtype: str, device: str):
    """The ModelSpec of ``--model``: a local directory (checked by :func:`patchbench.preflight.check_model_dir`)
    when it names one or looks like a path, else a hub name."""
    from patchbench.models import ModelSpec
    from patchbench.preflight import check_model_dir

    path = Path(name_or_path).expanduser()
    if not (path.exists() or name_or_path.startswith(("/", ".", "~"))):
        return ModelSpec.from_name(name_or_path, dtype=dtype, device=device)
    check_model_dir(ModelSpec(name=path.name, source="local", path=str(path), dtype=dtype, device=device))
    return ModelSpec.from_name(str(path), dtype=dtype, device=device)


def _path_name(flag: str):
    """An argparse type: a name that becomes part of file paths (:func:`patchbench.layout.check_name`)."""

    def parse(text: str) -> str:
        from patchbench.layout import PathNameError, check_name

        try:
            return check_name(text, flag)
        except PathNameError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "name"
    return parse


def default_model_name(name_or_path: str) -> str:
    """The name ``--model`` gets when ``--name`` is not given: a local directory's basename, a hub
    name's last part (``EleutherAI/gpt-j-6B`` -> ``gpt-j-6B``); checked as a path component."""
    from patchbench.layout import check_name

    path = Path(name_or_path).expanduser()
    name = path.resolve().name if path.exists() else name_or_path.rstrip("/").rsplit("/", 1)[-1]
    return check_name(
        name, f"the name of --model {name_or_path}", fix="give the model a name with --name NAME"
    )


def _heads(text: str) -> tuple[tuple[int, int], ...]:
    try:
        heads = tuple((int(a), int(b)) for a, b in (h.split(".") for h in text.split(",")))
    except ValueError:
        heads = ()
    if not heads or any(a < 0 or b < 0 for a, b in heads):
        raise argparse.ArgumentTypeError(f"expects L.H,L.H,... (e.g. 7.3,7.9), got {text!r}")
    return heads


def _ints(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(
            f"expects comma-separated layer indices >= 0 (e.g. 0,1,2), got {text!r}"
        )
    return out


def _schema_node(key: str) -> dict:
    """The config schema's rule for ``key``: a dotted path from the top level or an entry kind
    (``noise.nu``, ``model.dtype``); ``items`` steps into an array's items."""
    from patchbench.config import schema

    head, *rest = key.split(".")
    root = schema()
    node = root["$defs"][head] if head in root["$defs"] else root["properties"][head]
    for part in rest:
        node = node["items"] if part == "items" else node["properties"][part]
    return node


def _schema_value(key: str, kind: type):
    """An argparse type: ``kind(text)`` checked against the config schema's rule for ``key``."""

    def parse(text: str):
        from jsonschema import Draft202012Validator

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {kind.__name__}, got {text!r}") from None
        rule = {k: v for k, v in _schema_node(key).items() if k != "default"}
        error = next(Draft202012Validator(rule).iter_errors(value), None)
        if error is not None:
            raise argparse.ArgumentTypeError(
                f"{error.message} (the rule of config key {key}, config/README.md)"
            )
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expects a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from patchbench.config import default
    from patchbench.cost.device import DEVICES
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
        "--name",
        type=_path_name("--name"),
        default=None,
        help="the model's name in the frames' metadata and in the file names made from them "
        "(default: the model directory's name, or the hub name's last part)",
    )
    sw.add_argument(
        "--prompts",
        required=True,
        type=Path,
        help="PromptSet parquet (built by the workflow's prompts rule), or a CSV / JSON Lines file of prompt "
        "pairs (columns clean, corrupted, answer, wrong; config/README.md)",
    )
    sw.add_argument(
        "--corruption", required=True, choices=_schema_node("experiment.corruptions.items")["enum"]
    )
    sw.add_argument("--site", required=True, choices=_schema_node("experiment.site")["enum"])
    sw.add_argument(
        "--position",
        default=default("experiment.position"),
        type=_schema_value("experiment.position", str),
        help="all | each | a named position of the PromptSet (END, S2, ...)",
    )
    sw.add_argument(
        "--window",
        type=_schema_value("experiment.windows.items", int),
        default=default("experiment.windows")[0],
        help="mlp only: sliding-window size",
    )
    sw.add_argument(
        "--heads", type=_heads, default=None, help="restrict to heads L.H,L.H (head_v: patched together)"
    )
    sw.add_argument("--layers", type=_ints, default=None, help="restrict to layers, e.g. 0,1,2")
    sw.add_argument(
        "--nu",
        type=_schema_value("noise.nu", float),
        default=default("noise.nu"),
        help="GN: noise std = nu * sigma",
    )
    sw.add_argument(
        "--samples",
        type=_schema_value("noise.n_samples", int),
        default=default("noise.n_samples"),
        help="GN: noise samples per prompt",
    )
    sw.add_argument(
        "--seed", type=_schema_value("noise.seed", int), default=default("noise.seed"), help="GN: noise seed"
    )
    sw.add_argument(
        "--sigma", type=_nonnegative, default=None, help="GN: fixed sigma (default: from the data)"
    )
    sw.add_argument(
        "--memory-budget-mb",
        type=_schema_value("model.memory_budget_mb", int),
        default=default("model.memory_budget_mb"),
    )
    sw.add_argument("--dtype", default=default("model.dtype"), choices=_schema_node("model.dtype")["enum"])
    sw.add_argument(
        "--device",
        type=_schema_value("model.device", str),
        default=default("model.device"),
        help="auto (CUDA when available) | cpu | cuda[:i]",
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
    ef.add_argument(
        "--k",
        type=_schema_value("attribution.k", float),
        default=PAPER_K,
        help="detection threshold in SDs (the paper's: 2)",
    )

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
        "--name",
        type=_path_name("--name"),
        default=None,
        help="experiment name in file names and titles (default task_site-positions)",
    )
    rb.add_argument(
        "--circuit", type=Path, default=None, help="known-circuit JSON to score detections against"
    )
    rb.add_argument("--metrics", default=None, help="comma-separated metrics (raw frames; default by task)")
    rb.add_argument(
        "--n-boot",
        type=_schema_value("robustness.n_boot", int),
        default=default("robustness.n_boot"),
        help="bootstrap resamples",
    )
    rb.add_argument(
        "--ci",
        type=_schema_value("robustness.ci", float),
        default=default("robustness.ci"),
        help="confidence level",
    )
    rb.add_argument(
        "--seed",
        type=_schema_value("robustness.seed", int),
        default=default("robustness.seed"),
        help="seed of the resamples",
    )
    rb.add_argument("--no-figure", action="store_true", help="tables and summary only")

    es = sub.add_parser(
        "estimate", help="a config's jobs: predicted FLOPs, time and peak memory (no weights loaded)"
    )
    es.add_argument(
        "--configfile", required=True, action="append", type=Path, help="workflow config (repeat to merge)"
    )
    es.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="cpu or cuda: this machine's rates, measured once and cached; h100 / a100: published "
        "figures (an assumption, not a measurement)",
    )
    es.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: each model's resources.threads)"
    )
    es.add_argument("--cells", action="store_true", help="also print each sweep cell's predicted time")
    es.add_argument("--measure", action="store_true", help="measure this machine's rates again (cached)")
    return ap


def _metrics(text: str | None) -> tuple[str, ...] | None:
    from patchbench.preflight import check_metrics

    return None if text is None else check_metrics(text.split(","), "--metrics")


def _robustness(args: argparse.Namespace) -> None:
    from patchbench.analysis.robustness import (
        RobustnessSettings,
        bootstrap_grid,
        normal_grid,
        read_known_circuit,
    )
    from patchbench.analysis.robustness_report import analyse, write_experiment
    from patchbench.errors import InputError, MissingInputError
    from patchbench.layout import ROBUSTNESS_FIGURES, Layout, check_name
    from patchbench.rawframe import read_frame

    metrics = _metrics(args.metrics)
    if args.out.exists() and not args.out.is_dir():
        raise InputError.of(f"--out {args.out}", "is a file", "name a directory (new or existing)")
    for p in args.frames:
        if not p.is_file():
            raise MissingInputError.of(
                str(p), "does not exist or is not a file", "give raw sweep or effects files"
            )
    if args.circuit is not None and not args.circuit.is_file():
        raise MissingInputError.of(f"--circuit {args.circuit}", "does not exist", "give a circuit JSON file")
    frames = [read_frame(p) for p in args.frames]
    given = {"raw" if "run" in f.columns else "effects" if "effect" in f.columns else "?" for f in frames}
    if given not in ({"raw"}, {"effects"}):
        raise InputError(
            f"{[str(p) for p in args.frames]}: pass raw sweep frames (results/sweeps/...) or effects files "
            "(results/effects/...) of one experiment, not a mix or other files"
        )
    settings = RobustnessSettings(n_boot=args.n_boot, ci=args.ci, seed=args.seed)
    labels = [str(p) for p in args.frames]
    if given == {"raw"}:
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
    model = str(cell["model"]) or "model"
    check_name(
        model,
        f"the model name in {args.frames[0]}'s metadata",
        fix="sweep again with `patchbench sweep --name NAME` (a safe name)",
    )
    names = Layout.robustness_names(name, model)
    kinds = [k for k in names if not (args.no_figure and k in ROBUSTNESS_FIGURES)]
    paths = write_experiment(analyse(name, grid, circuit), {k: args.out / names[k] for k in kinds})
    for p in paths.values():
        print(p)


def _write_effects(raw, out: Path, metrics: tuple[str, ...] | None, k: float) -> None:
    from patchbench.detection import detect
    from patchbench.metrics import effects, metrics_for
    from patchbench.rawframe import metadata, write_frame

    ms = metrics or metrics_for(metadata(raw)["task"])
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
    """Check every argument and file, load the model, check the prompts and the sweep against it, then sweep."""
    from patchbench.corruption import NoiseSpec
    from patchbench.detection import PAPER_K
    from patchbench.engine.cache import required_hooks, usable_cache
    from patchbench.engine.sweep import run_sweep
    from patchbench.errors import InputError, MissingInputError
    from patchbench.preflight import check_output_path, check_spec
    from patchbench.prompts import PromptSet
    from patchbench.rawframe import write_frame
    from patchbench.sites import SweepSpec

    check_output_path(args.out, "--out")
    if args.effects is not None:
        check_output_path(args.effects, "--effects")
    metrics = _metrics(args.metrics)
    name = args.name or default_model_name(args.model)
    if args.checkpoint_dir is not None and args.checkpoint_dir.exists() and not args.checkpoint_dir.is_dir():
        raise InputError.of(
            f"--checkpoint-dir {args.checkpoint_dir}", "is a file", "name a directory (new or of this sweep)"
        )
    if args.clean_cache is not None and not args.clean_cache.is_file():
        raise MissingInputError.of(
            f"--clean-cache {args.clean_cache}",
            "does not exist or is not a file",
            "give a cache file or leave the flag out",
        )
    try:
        spec = SweepSpec(
            corruption=args.corruption,
            site=args.site,
            position=args.position,
            window=args.window,
            heads=args.heads,
            layers=args.layers,
            noise=NoiseSpec(nu=args.nu, n_samples=args.samples, seed=args.seed, sigma=args.sigma),
            memory_budget_mb=args.memory_budget_mb,
        )
    except ValueError as err:
        raise InputError(f"the sweep's flags do not fit together: {err}") from None
    from patchbench.prompt_pairs import SUFFIXES, read_pairs

    pairs = args.prompts.suffix.lower() in SUFFIXES
    if pairs:  # checked without the tokenizer first, then tokenised with the model's
        read_pairs(args.prompts)
    else:
        prompts = PromptSet.from_parquet(args.prompts)
    model = load_model_for_cli(args.model, dtype=args.dtype, device=args.device)
    if pairs:
        prompts = PromptSet.from_file(args.prompts, model.tokenizer)
    check_spec(spec, model, prompts, f"--model {args.model}")
    clean = None
    if args.clean_cache is not None:
        names = required_hooks(model, spec)
        clean = usable_cache(args.clean_cache, model, prompts, names, spec.memory_budget_mb, log)
    raw = run_sweep(
        model,
        prompts,
        spec,
        clean,
        name=name,
        progress=not args.no_progress,
        logger=log,
        checkpoint_dir=args.checkpoint_dir,
    )
    write_frame(raw, args.out)
    log.info("wrote %d rows to %s", len(raw), args.out)
    if args.effects is not None:
        _write_effects(raw, args.effects, metrics, PAPER_K)


def _effects(args: argparse.Namespace) -> None:
    from patchbench.preflight import check_output_path
    from patchbench.rawframe import read_frame

    check_output_path(args.out, "--out")
    metrics = _metrics(args.metrics)
    _write_effects(read_frame(args.raw), args.out, metrics, args.k)


def _estimate(args: argparse.Namespace) -> None:
    from patchbench.cost.report import estimate_command

    estimate_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a bad input is one message on stderr and exit status 2 (argparse's too)."""
    from patchbench.errors import InputError
    from patchbench.runlog import progress_lines

    args = build_parser().parse_args(argv)
    # progress bars to a file or a pipe (a batch job's log) become lines; a terminal keeps its bars
    lines = progress_lines(sys.stderr) if not sys.stderr.isatty() else contextlib.nullcontext()
    commands = {"sweep": _sweep, "effects": _effects, "robustness": _robustness, "estimate": _estimate}
    with lines:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            commands[args.command](args)
        except (InputError, FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
            print(f"patchbench {args.command}: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
