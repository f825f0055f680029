"""The cost model (patchbench.cost): FLOPs counted from the engine's plan, exactly as torch counts them
during the sweep; seconds from device rates; ``patchbench estimate``; the job log's prediction.

What counts as a FLOP here (and in :mod:`patchbench.cost.work`): :class:`torch.utils.flop_counter.
FlopCounterMode`'s total, i.e. twice the multiply-adds of the dense products (``mm``, ``addmm``,
``bmm``, ``baddbmm``, scaled-dot-product attention) every forward of the sweep runs, with the clean
cache given (it is its own job) and the model's one-off head-shortcut check done before (it runs at
the first head sweep of a loaded model); norms, activations, masks, softmax and the patch's
``torch.where`` are no FLOPs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT, make_model, make_prompts
from patchbench.corruption import NoiseSpec
from patchbench.cost import device as devmod
from patchbench.cost.device import DATASHEETS, DeviceRate, device_rate
from patchbench.cost.jobs import predict_sweep
from patchbench.cost.work import PlannedModel, Work, sweep_work
from patchbench.engine.cache import clean_cache
from patchbench.engine.sweep import run_sweep
from patchbench.sites import SweepSpec


@pytest.fixture(scope="module")
def f32():
    model = make_model(torch.float32)
    model.head_shortcut()  # the one-off check a loaded model runs at its first head sweep
    return model, make_prompts(7, model=model)


#: (spec, run_sweep / sweep_work options): every path the plan can take
CASES = {
    "mlp_each_suffix": (SweepSpec("str", "mlp", position="each"), {}),
    "heads_all_shortcut": (SweepSpec("str", "attn_head", position="all"), {}),
    "resid_pre_named": (SweepSpec("str", "resid_pre", position="X"), {}),
    "heads_each_shortcut_suffix": (SweepSpec("str", "attn_head", position="each"), {}),
    "gn_mlp_window3_two_samples": (
        SweepSpec("gn", "mlp", position="X", window=3, noise=NoiseSpec(n_samples=2)),
        {},
    ),
    "mlp_each_several_blocks": (SweepSpec("str", "mlp", position="each", memory_budget_mb=1), {}),
    "head_values_together": (SweepSpec("str", "head_v", position="all", heads=((1, 2), (2, 0))), {}),
    "mlp_each_full_recompute": (SweepSpec("str", "mlp", position="each"), {"suffix_reuse": False}),
    "heads_all_no_shortcut": (SweepSpec("str", "attn_head", position="all"), {"head_shortcut": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_predicted_flops_equal_the_engines_counted_flops(f32, case):
    model, prompts = f32
    spec, options = CASES[case]
    clean = clean_cache(model, prompts, [spec])
    with FlopCounterMode(display=False) as counter:
        raw = run_sweep(model, prompts, spec, clean, progress=False, **options)
    predicted = sweep_work(model, prompts, spec, **options)
    assert predicted.plan == raw.attrs["patchbench"]["plan"]
    assert int(predicted.work.flops) == counter.get_total_flops()
    assert predicted.work.flops > 0


def test_counts_follow_the_paths(f32):
    """Suffix reuse and the head-output shortcut each save FLOPs, and the count sees it."""
    model, prompts = f32
    spec = SweepSpec("str", "mlp", position="each")
    assert (
        sweep_work(model, prompts, spec).work.flops
        < sweep_work(model, prompts, spec, suffix_reuse=False).work.flops
    )
    heads = SweepSpec("str", "attn_head", position="all")
    assert (
        sweep_work(model, prompts, heads).work.flops
        < sweep_work(model, prompts, heads, head_shortcut=False).work.flops
    )


def test_a_shape_alone_plans_as_the_loaded_model(f32):
    """The estimate's shape-only model (no weights) gives the loaded model's plan and count."""
    model, prompts = f32
    planned = PlannedModel(model.shape)
    for spec, _ in CASES.values():
        a, b = sweep_work(model, prompts, spec), sweep_work(planned, prompts, spec)
        assert (a.plan, a.work) == (b.plan, b.work)


def rates(device: str = "cpu", threads: int = 1) -> DeviceRate:
    """Made-up rates with round numbers (what a measurement would store)."""
    table = [[64, 1e10], [4096, 1e10]]
    return DeviceRate(
        device=device, name=devmod.device_name(device), source="measured", threads=threads,
        torch=torch.__version__, matmul={"float32": table}, call={"native": 1e-3, "transformers": 2e-3},
        elements={"native": [10.0, 5.0, 6.0], "transformers": [10.0, 10.0, 11.0]},
        element={"native": [1e-7, 1e-9, 2e-9], "transformers": [1e-7, 1e-9, 2e-9]},
        readout_row=1e-6, readout_vocab=1e-9, frame_row=1e-6, sweep=0.05, load_fixed=2.0, load_rate=1e8, hash_rate=1e9,
        startup=3.0, baseline=300 * 2**20, measured_at="test", load_average=[0.0],
    )  # fmt: skip


@pytest.fixture
def cached_rates(tmp_path, monkeypatch):
    """Rates in a cache of their own, for every thread count this machine allows (no measuring)."""
    monkeypatch.setenv("PATCHBENCH_CACHE_DIR", str(tmp_path / "cache"))
    for t in range(1, (os.cpu_count() or 1) + 1):
        devmod.store(rates(threads=t))
    return rates()


def test_seconds_are_the_rates_applied_to_the_counts(f32):
    model, _ = f32
    s = model.shape
    w = Work(flops=2e10, tokens=1000, scores=3000, calls=10, readout=100, rows=500, sweeps=1)
    parts = rates().seconds(w, s, "native")
    assert parts["dense"] == pytest.approx(2.0)
    assert parts["elementwise"] == pytest.approx(
        1000 * (1e-7 + 1e-9 * (10 + 5 * (s.d_model + s.d_mlp))) + 3000 * 2e-9
    )
    assert parts["calls"] == pytest.approx(0.01)
    assert parts["readout"] == pytest.approx(100 * (1e-6 + 1e-9 * s.d_vocab))
    assert parts["frame"] == pytest.approx(500e-6 + 0.05)
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))


def test_a_datasheet_gpu_is_labelled_as_an_assumption(cached_rates):
    rate = device_rate("h100", 1)
    assert rate.source == "datasheet" and "not measured" in rate.describe()
    assert rate.matmul_at(1024) == DATASHEETS["h100"]["matmul"]["float32"]
    assert rate.call == cached_rates.call  # per-call figures: this machine's CPU


def test_a_job_never_measures(tmp_path, monkeypatch, f32):
    monkeypatch.setenv("PATCHBENCH_CACHE_DIR", str(tmp_path / "empty"))
    model, prompts = f32
    assert device_rate("cpu", 1, allow_measure=False) is None
    out = predict_sweep(model, prompts, SweepSpec("str", "mlp", position="X"))
    assert out["seconds"] is None and out["gflop"] > 0


def test_the_job_log_prediction_uses_the_cached_rates(cached_rates, f32):
    model, prompts = f32
    spec = SweepSpec("str", "mlp", position="X")
    out = predict_sweep(model, prompts, spec)
    expected = cached_rates.seconds(sweep_work(model, prompts, spec).work, model.shape, "native")["total"]
    assert out["seconds"] == pytest.approx(expected)


def small_config(tmp_path, **extra) -> str:
    cfg = {
        "results_dir": str(tmp_path / "results"),
        "data_dir": str(ROOT / "data" / "toy"),
        "models": {"organism-ioi": {"source": "toy", "path": str(ROOT / "models/organisms/organism-ioi"),
                                    "resources": {"threads": 1}}},
        "tasks": {"ioi": {"n_prompts": 12, "seed": 0}},
        "experiments": {"ioi_heads": {"task": "ioi", "models": ["organism-ioi"], "corruptions": ["str"],
                                      "site": "attn_head"}},
        "attribution": {"tasks": []},
        **extra,
    }  # fmt: skip
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def test_estimate_prints_every_job_with_flops_time_and_memory(cached_rates, tmp_path, capsys):
    from patchbench.cell import experiment_cells
    from patchbench.cli import main
    from patchbench.cost.jobs import job_prompts
    from patchbench.cost.report import load_configs
    from patchbench.cost.shapes import model_shape

    path = small_config(tmp_path)
    assert main(["estimate", "--configfile", path]) == 0
    out = capsys.readouterr().out
    config = load_configs([path])
    prompts, _ = job_prompts(config, "organism-ioi", "ioi")
    shape = model_shape(config, "organism-ioi")
    (cell,) = experiment_cells(config, "ioi_heads")
    flops = sweep_work(shape.model, prompts, cell.sweep_spec).work.flops
    line = next(x for x in out.splitlines() if x.startswith("sweep_ioi_heads organism-ioi"))
    assert f"{flops / 1e9:.1f}" in line.split()  # the GFLOP column
    for job in ("filter_correct organism-ioi/ioi", "clean_cache organism-ioi/ioi", "total ("):
        assert job in out
    assert "models/organisms/organism-ioi/config.json" in out  # where the shape came from
    assert re.search(r"generated here", out)


def test_estimate_on_a_bad_config_gives_the_configs_own_error(tmp_path, capsys):
    from patchbench.cli import main
    from patchbench.config import ConfigError
    from patchbench.preflight import check_workflow_config

    path = small_config(tmp_path)
    bad = yaml.safe_load(Path(path).read_text())
    bad["experiments"]["ioi_heads"]["site"] = "attn_heads"
    Path(path).write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        check_workflow_config(yaml.safe_load(Path(path).read_text()), [path])
    assert main(["estimate", "--configfile", path]) == 2
    assert str(err.value) in capsys.readouterr().err


def test_estimate_names_its_device_choices():
    from patchbench.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["estimate", "--configfile", "x.yaml", "--device", "h200"])
    assert set(devmod.DEVICES) == {"cpu", "cuda", *DATASHEETS}


def test_rates_round_trip_through_the_cache(cached_rates):
    again = device_rate("cpu", 1)
    assert dataclasses.asdict(again) == dataclasses.asdict(cached_rates)


def test_shapes_of_paper_models_without_weights(tmp_path, mirror, monkeypatch):
    """A hub model of the paper: the paper models' table at the real depth; a configs-only stand-in
    cache (what `patchbench estimate` plans the paper suite with offline) holds that depth and no weights."""
    from patchbench.cost.shapes import model_shape
    from patchbench.standins import seed_hub_cache

    snaps = seed_hub_cache(tmp_path / "hub", mirror / "gpt2-tokenizer", ["gpt2-xl"], weights=False)
    files = {p.name for p in snaps["gpt2-xl"].iterdir()}
    assert "config.json" in files and "vocab.json" in files
    assert not any(f.endswith((".safetensors", ".bin", ".pth")) for f in files)
    assert yaml.safe_load((snaps["gpt2-xl"] / "config.json").read_text())["n_layer"] == 48
    config = {"results_dir": str(tmp_path), "models": {"xl": {"source": "hub", "hub_name": "gpt2-xl"}}}
    from patchbench.config import validate_entry

    config["models"]["xl"] = validate_entry("model", config["models"]["xl"])
    shape = model_shape(config, "xl")
    s = shape.model.shape
    assert (s.n_layers, s.d_model, s.n_heads, s.d_mlp, s.d_vocab) == (48, 1600, 25, 6400, 50257)
    assert "paper models' table" in shape.source and shape.route == "transformers"
    assert shape.weight_bytes == pytest.approx(
        1.56e9 * 4, rel=0.06
    )  # GPT-2 XL: 1.56 B parameters, the embedding counted twice (untied)


def test_a_grouped_query_gated_model_counts_exactly_from_its_config_alone(tmp_path):
    """Transformers route, grouped-query attention and a gated MLP (Llama-shaped): the count from the
    saved config.json alone (no weights) equals the loaded model's counted FLOPs."""
    import transformers as tf

    from lm_models import save_hf
    from patchbench.cost.shapes import shape_from_hf
    from patchbench.lm import load_transformers

    path = save_hf("llama", tmp_path / "llama", num_hidden_layers=2)
    model = load_transformers(str(path))
    model.head_shortcut()
    prompts = make_prompts(5, model=model)
    planned = shape_from_hf(tf.AutoConfig.from_pretrained(path), torch.float32, "cpu")
    assert planned.gated_mlp and planned.shape.n_kv_heads == 2 and planned.shape.positional == "rotary"
    for spec in (SweepSpec("str", "mlp", position="each"), SweepSpec("str", "head_v", position="X")):
        clean = clean_cache(model, prompts, [spec])
        with FlopCounterMode(display=False) as counter:
            run_sweep(model, prompts, spec, clean, progress=False)
        assert int(sweep_work(planned, prompts, spec).work.flops) == counter.get_total_flops()
