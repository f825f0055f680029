"""The ``patchbench`` console script: one-off sweeps outside Snakemake, on the workflow's code path.

    patchbench sweep --model gpt2 --prompts results/prompts/gpt2/ioi.parquet \\
        --corruption str --site attn_head --out raw.parquet --effects effects.parquet
    patchbench effects raw.parquet --out effects.parquet [--metrics prob,logit_diff,kl,stolfo]
    patchbench robustness str_raw.parquet gn_raw.parquet --out robustness/ [--circuit circuit.json]
    patchbench estimate --configfile config/demo.yaml [--device cpu|cuda|h100|a100]
    patchbench check config/my.yaml [more.yaml ...]
    patchbench organisms [--check]        # the shipped model organisms' independent checks

``--model`` is a TransformerLens / Hugging Face hub name or a local model directory (a toy
model of this repository or a ``save_pretrained`` directory), loaded by
:func:`patchbench.models.load_model`; ``--name`` names it in the frames (default: the directory's
basename or the hub name's last part; checked by :func:`patchbench.layout.check_name`, as every
name that becomes part of a path is). The raw frame and the effects frame (with the paper's 2-SD
detection) are written with their metadata, exactly as the workflow's ``sweep`` and ``effects``
rules write them. ``robustness`` writes the localization-robustness tables, one-page summary and
figure of one experiment (its sweeps' raw frames: bootstrap over prompts; or its effects files
alone: a normal approximation) as the workflow's ``robustness_analysis`` rule does; ``check`` runs
the Snakefile's checks of config files. No command overwrites one of its inputs
(:func:`patchbench.preflight.check_distinct_paths`).
``organisms`` prints one line per shipped model organism (and seed) from :mod:`patchbench.toy.checks`;
with ``--check`` it exits 1 when a property an organism's ``circuit.json`` states fails. Option
defaults: the schema's (:func:`patchbench.config.default`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from patchbench.cli_types import (
    corruption,
    heads,
    ints,
    nonnegative,
    path_name,
    schema_node,
    schema_value,
)

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


def default_model_name(name_or_path: str) -> str:
    """The name ``--model`` gets when ``--name`` is not given: a local directory's basename, a hub
    name's last part (``EleutherAI/gpt-j-6B`` -> ``gpt-j-6B``); checked as a path component."""
    from patchbench.layout import check_name

    path = Path(name_or_path).expanduser()
    name = path.resolve().name if path.exists() else name_or_path.rstrip("/").rsplit("/", 1)[-1]
    return check_name(
        name, f"the name of --model {name_or_path}", fix="give the model a name with --name NAME"
    )


def build_parser() -> argparse.ArgumentParser:
    from patchbench.config import default
    from patchbench.cost.device import DEVICES
    from patchbench.detection import PAPER_K
    from patchbench.interventions.corruptions import NAMES as corruption_names

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
        type=path_name("--name"),
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
        "--corruption",
        required=True,
        type=corruption,
        help=f"{' | '.join(corruption_names)}, optionally with settings: name@key=value,... (e.g. gn@nu=1)",
    )
    sw.add_argument(
        "--direction",
        default=default("experiment.directions")[0],
        choices=schema_node("experiment.directions.items")["enum"],
        help="denoising: source = clean run, patched into the corrupted one; noising: the other way round",
    )
    sw.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a corruption's reference prompt set (mean: average over it instead of --prompts)",
    )
    sw.add_argument("--site", required=True, choices=schema_node("experiment.site")["enum"])
    sw.add_argument(
        "--position",
        default=default("experiment.position"),
        type=schema_value("experiment.position", str),
        help="all | each | a named position of the PromptSet (END, S2, ...)",
    )
    sw.add_argument(
        "--window",
        type=schema_value("experiment.windows.items", int),
        default=default("experiment.windows")[0],
        help="sites with windows only (mlp, attn_out): sliding-window size",
    )
    sw.add_argument(
        "--heads", type=heads, default=None, help="restrict to heads L.H,L.H (head_v: patched together)"
    )
    sw.add_argument("--layers", type=ints, default=None, help="restrict to layers, e.g. 0,1,2")
    sw.add_argument(
        "--nu",
        type=schema_value("noise.nu", float),
        default=default("noise.nu"),
        help="GN: noise std = nu * sigma",
    )
    sw.add_argument(
        "--samples",
        type=schema_value("noise.n_samples", int),
        default=default("noise.n_samples"),
        help="GN: noise samples per prompt",
    )
    sw.add_argument(
        "--seed", type=schema_value("noise.seed", int), default=default("noise.seed"), help="GN: noise seed"
    )
    sw.add_argument(
        "--sigma", type=nonnegative, default=None, help="GN: fixed sigma (default: from the data)"
    )
    sw.add_argument(
        "--memory-budget-mb",
        type=schema_value("model.memory_budget_mb", int),
        default=default("model.memory_budget_mb"),
    )
    sw.add_argument("--dtype", default=default("model.dtype"), choices=schema_node("model.dtype")["enum"])
    sw.add_argument(
        "--device",
        type=schema_value("model.device", str),
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
        type=schema_value("attribution.k", float),
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
        type=path_name("--name"),
        default=None,
        help="experiment name in file names and titles (default task_site-positions)",
    )
    rb.add_argument(
        "--circuit", type=Path, default=None, help="known-circuit JSON to score detections against"
    )
    rb.add_argument("--metrics", default=None, help="comma-separated metrics (raw frames; default by task)")
    rb.add_argument(
        "--n-boot",
        type=schema_value("robustness.n_boot", int),
        default=default("robustness.n_boot"),
        help="bootstrap resamples",
    )
    rb.add_argument(
        "--ci",
        type=schema_value("robustness.ci", float),
        default=default("robustness.ci"),
        help="confidence level",
    )
    rb.add_argument(
        "--seed",
        type=schema_value("robustness.seed", int),
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
    ck = sub.add_parser("check", help="check config files as the Snakefile does, without Snakemake")
    ck.add_argument("configfiles", nargs="+", type=Path, help="merged in order, as --configfile merges them")
    og = sub.add_parser(
        "organisms", help="one line per shipped model organism (and seed): its independent checks' numbers"
    )
    og.add_argument(
        "--check", action="store_true", help="exit 1 when a property its circuit.json states fails"
    )
    og.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="directory of the organisms (default: the shipped models/organisms)",
    )
    og.add_argument("--data-dir", type=Path, default=Path(default("data_dir")), help="toy task vocabularies")
    og.add_argument("--n-prompts", type=int, default=200, help="held-out prompts per organism")
    og.add_argument("--only", default=None, help="comma-separated organism names (default: all)")
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
    from patchbench.preflight import check_distinct_paths
    from patchbench.rawframe import frame_identity, read_frame

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
    task, site, positions, model = frame_identity(frames[0])
    name = args.name or f"{task}_{site}-{positions}"
    model = model or "model"
    check_name(
        model,
        f"the model name in {args.frames[0]}'s metadata",
        fix="sweep again with `patchbench sweep --name NAME` (a safe name)",
    )
    names = Layout.robustness_names(name, model)
    kinds = [k for k in names if not (args.no_figure and k in ROBUSTNESS_FIGURES)]
    check_distinct_paths(
        {**{f"frame {i}": p for i, p in enumerate(args.frames, 1)}, "--circuit": args.circuit},
        {f"output {names[k]}": args.out / names[k] for k in kinds},
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
    circuit = read_known_circuit(args.circuit, task) if args.circuit else None
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
    from patchbench.models import resolve_device
    from patchbench.preflight import check_distinct_paths, check_output_path, check_spec
    from patchbench.prompts import PromptSet
    from patchbench.rawframe import write_frame
    from patchbench.sites import SweepSpec
    from patchbench.tasks import check_answers

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
    inputs = {
        "--prompts": args.prompts,
        "--clean-cache": args.clean_cache,
        "--reference": args.reference,
        "--model": Path(args.model),
    }
    outputs = {"--out": args.out, "--effects": args.effects}
    check_distinct_paths(inputs, outputs, {"--checkpoint-dir": args.checkpoint_dir})
    settings: tuple = ()
    reference = None
    if args.reference is not None:
        from patchbench.interventions.corruptions import parse

        if "reference" not in parse(args.corruption)[0].setting_types():
            raise InputError.of(
                f"--reference {args.reference}", f"corruption {args.corruption!r} takes no reference set",
                "leave --reference out, or use a corruption that averages over one (mean)",
            )  # fmt: skip
        reference = PromptSet.from_parquet(args.reference)
        settings = (("reference", reference.task),)
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
            settings=settings,
            direction=args.direction,
        )
    except ValueError as err:
        raise InputError(f"the sweep's flags do not fit together: {err}") from None
    resolve_device(args.device)
    from patchbench.prompt_pairs import SUFFIXES, read_pairs

    pairs = args.prompts.suffix.lower() in SUFFIXES
    if pairs:  # checked without the tokenizer first, then tokenised with the model's
        read_pairs(args.prompts)
    else:
        prompts = PromptSet.from_parquet(args.prompts)
        check_answers(prompts)
    model = load_model_for_cli(args.model, dtype=args.dtype, device=args.device)
    if pairs:
        prompts = PromptSet.from_file(args.prompts, model.tokenizer)
    check_spec(spec, model, prompts, f"--model {args.model}", reference)
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
        reference=reference,
    )
    write_frame(raw, args.out)
    log.info("wrote %d rows to %s", len(raw), args.out)
    if args.effects is not None:
        _write_effects(raw, args.effects, metrics, PAPER_K)


def _check(args: argparse.Namespace) -> None:
    from patchbench.config import merged_config
    from patchbench.preflight import check_workflow_config

    cells = check_workflow_config(merged_config(args.configfiles), args.configfiles)
    n = sum(len(cs) for cs in cells.values())
    print(f"{' + '.join(map(str, args.configfiles))}: ok: {len(cells)} experiment(s), {n} sweep cell(s)")


def _effects(args: argparse.Namespace) -> None:
    from patchbench.preflight import check_distinct_paths, check_output_path
    from patchbench.rawframe import read_frame

    check_output_path(args.out, "--out")
    check_distinct_paths({"raw frame": args.raw}, {"--out": args.out})
    metrics = _metrics(args.metrics)
    _write_effects(read_frame(args.raw), args.out, metrics, args.k)


def _estimate(args: argparse.Namespace) -> None:
    from patchbench.cost.report import estimate_command

    estimate_command(args)


def _organisms(args: argparse.Namespace) -> int:
    """``patchbench organisms``: measure every organism directory, print its line (and with
    ``--check`` each failed stated property); 1 when ``--check`` finds a failure."""
    from patchbench.errors import InputError
    from patchbench.toy.checks import check_organism, organism_dirs
    from patchbench.toy.circuit import check_circuit_file
    from patchbench.toy.provenance import SHIPPED_DIR

    root = args.dir or Path(__file__).resolve().parents[2] / SHIPPED_DIR
    dirs = organism_dirs(root)
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {d.name for d in dirs})
        if unknown:
            raise InputError.of(
                f"--only {args.only}",
                f"no organism {unknown} under {root}",
                f"choose from {[d.name for d in dirs]}",
            )
        dirs = [d for d in dirs if d.name in wanted]
    if not dirs:
        raise InputError.of(
            f"--dir {root}", "holds no organism (no */circuit.json)", "point --dir at models/organisms"
        )
    for d in dirs:  # every circuit.json is checked before any model is measured
        check_circuit_file(d)
    failed = 0
    for d in dirs:
        stats = check_organism(d, args.data_dir, args.n_prompts)
        print(stats.line(), flush=True)
        if args.check:
            for f in stats.failures:
                print(f"  FAIL {stats.name}: {f}", flush=True)
            failed += bool(stats.failures)
    if args.check:
        print(f"{len(dirs) - failed} of {len(dirs)} organisms have every stated property", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a bad input is one message on stderr and exit status 2 (argparse's too)."""
    from patchbench.errors import InputError
    from patchbench.runlog import progress_lines

    args = build_parser().parse_args(argv)
    # progress bars to a file or a pipe (a batch job's log) become lines; a terminal keeps its bars
    lines = progress_lines(sys.stderr) if not sys.stderr.isatty() else contextlib.nullcontext()
    commands = {
        "sweep": _sweep,
        "effects": _effects,
        "robustness": _robustness,
        "estimate": _estimate,
        "check": _check,
        "organisms": _organisms,
    }
    with lines:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return commands[args.command](args) or 0
        except (InputError, FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
            print(f"patchbench {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
