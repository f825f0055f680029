"""The paper suite on stand-ins: random-weight models of the paper's architectures, loaded by hub
name through ``HookedTransformer.from_pretrained`` from a seeded offline hub cache.

* The stand-in config (``config/standins.yaml``) runs the IOI and greater-than slices end to end
  (prompts, filter, clean cache, STR and GN sweeps of every GPT-2 head, effects) offline.
* Every stand-in (GPT-2 XL and GPT-J shapes with fewer layers, attn-only-4l) loads through the
  hub path with the paper's widths, heads, vocabularies, positional schemes and dtypes.
* ``snakemake -n`` of the paper config plans every table and figure without network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from patchbench.standins import COMMIT, STANDINS, repo_dir, seed_hub_cache

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KILL_AFTER_S = 1800  # a bound, not the expected time (see the printed wall time)
SLICE_EXPERIMENTS = ("ioi_heads", "greater_than_heads")
PROMPT = "The war lasted from the year 1732 to the year 17"


def _offline_env(hub: Path) -> dict[str, str]:
    return dict(
        os.environ,
        HF_HUB_CACHE=str(hub),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(hub.parent / "hf-home"),
        PYTHONUNBUFFERED="1",
    )


@pytest.fixture(scope="module")
def gpt2_hub(tmp_path_factory, mirror) -> Path:
    hub = tmp_path_factory.mktemp("standins") / "hub"
    t0 = time.perf_counter()
    seed_hub_cache(hub, mirror / "gpt2-tokenizer", ["gpt2"])
    print(f"\nseeded the GPT-2 small stand-in in {time.perf_counter() - t0:.1f} s")
    return hub


def test_seeding_is_deterministic_and_idempotent(tmp_path, mirror):
    a = seed_hub_cache(tmp_path / "a", mirror / "gpt2-tokenizer", ["gpt2-large"], layers={"gpt2-large": 1})
    b = seed_hub_cache(tmp_path / "b", mirror / "gpt2-tokenizer", ["gpt2-large"], layers={"gpt2-large": 1})
    wa, wb = (p["gpt2-large"] / "model.safetensors" for p in (a, b))
    assert wa.read_bytes() == wb.read_bytes()
    assert (repo_dir(tmp_path / "a", "gpt2-large") / "refs" / "main").read_text() == COMMIT
    cfg = json.loads((a["gpt2-large"] / "config.json").read_text())
    assert (cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["vocab_size"]) == (1, 1280, 20, 50257)
    mtime = wa.stat().st_mtime_ns
    seed_hub_cache(tmp_path / "a", mirror / "gpt2-tokenizer", ["gpt2-large"], layers={"gpt2-large": 1})
    assert wa.stat().st_mtime_ns == mtime, "a matching stand-in must not be rewritten"
    seed_hub_cache(tmp_path / "a", mirror / "gpt2-tokenizer", ["gpt2-large"], layers={"gpt2-large": 2})
    assert json.loads((a["gpt2-large"] / "config.json").read_text())["n_layer"] == 2, (
        "a changed spec is rebuilt"
    )


def test_missing_tokenizer_directory_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab\.json.*gpt2-tokenizer"):
        seed_hub_cache(tmp_path / "hub", tmp_path / "nowhere", ["gpt2"], layers={"gpt2": 1})


def test_large_stand_ins_load_through_the_hub_path(tmp_path, mirror, gpt2_tokenizer):
    """GPT-2 XL, GPT-J (half precision) and attn-only-4l by hub name, offline, with the real shapes."""
    hub = tmp_path / "hub"
    t0 = time.perf_counter()
    seed_hub_cache(hub, mirror / "gpt2-tokenizer", ["gpt2-xl", "EleutherAI/gpt-j-6B", "attn-only-4l"])
    t_seed = time.perf_counter() - t0
    code = (
        f"PROMPT = {PROMPT!r}\n"
        + """
        import torch
        from patchbench.models import ModelSpec, load_model, load_tokenizer
        from patchbench.models import offline_repo_listing
        for name, hub, dtype in [("gpt2-xl", "gpt2-xl", "float32"), ("gpt-j-6b", "EleutherAI/gpt-j-6B", "float16"),
                                 ("attn-only-4l", "attn-only-4l", "float32")]:
            spec = ModelSpec(name=name, source="hub", hub_name=hub, dtype=dtype, device="cpu")
            with offline_repo_listing():  # attn-only-4l: TransformerLens lists the repo's files
                model, tok = load_model(spec), load_tokenizer(spec)
            ids = tok(PROMPT, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = model(ids)
            c = model.cfg
            print("OK", name, c.n_layers, c.d_model, c.n_heads, c.d_vocab, str(c.dtype).split(".")[-1],
                  c.positional_embedding_type, ids.shape[1], bool(torch.isfinite(logits).all()), flush=True)
    """
    )
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code.split("\n", 1)[0] + "\n" + textwrap.dedent(code.split("\n", 1)[1])],
        env=_offline_env(hub),
        capture_output=True,
        text=True,
    )
    print(f"\nseeded 3 stand-ins in {t_seed:.1f} s; loaded them in {time.perf_counter() - t0:.1f} s")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    lines = sorted(line.split()[1:] for line in res.stdout.splitlines() if line.startswith("OK "))
    n_gpt2 = str(len(gpt2_tokenizer(PROMPT)["input_ids"]))  # GPT-J reads GPT-2's BPE
    from tokenizers import Tokenizer

    digits_tok = Tokenizer.from_file(
        str(repo_dir(hub, "NeelNanda/gpt-neox-tokenizer-digits") / "snapshots" / COMMIT / "tokenizer.json")
    )
    pieces = digits_tok.encode(PROMPT).tokens
    assert pieces[pieces.index("1") : pieces.index("1") + 4] == ["1", "7", "3", "2"], (
        pieces
    )  # one token per digit
    n_digits = str(len(pieces))
    assert int(n_digits) > int(n_gpt2)
    assert lines == [
        ["attn-only-4l", "4", "512", "8", "48262", "float32", "shortformer", n_digits, "True"],
        ["gpt-j-6b", str(STANDINS["EleutherAI/gpt-j-6B"].n_layers), "4096", "16", "50400", "float16", "rotary",
         n_gpt2, "True"],
        ["gpt2-xl", str(STANDINS["gpt2-xl"].n_layers), "1600", "25", "50257", "float32", "standard", n_gpt2, "True"],
    ]  # fmt: skip


def _slice_targets(cfg: dict, results: Path, figures: Path) -> list[str]:
    out = []
    for name in SLICE_EXPERIMENTS:
        exp = cfg["experiments"][name]
        for m in exp["models"]:
            out.append(f"{results}/prompts/{m}/{exp['task']}.accuracy.json")
            for c in exp.get("corruptions", ["str", "gn"]):
                out.append(
                    f"{results}/effects/{m}/{exp['task']}/{c}/{exp['site']}-{exp.get('position', 'all')}_w1.parquet"
                )
    # ... and the paper's outputs built from them: Table 1 (IOI), Table 3 (greater-than), their head figures
    out += [f"{results}/tables/{t}_gpt2.csv" for t in ("table1", "table3")]
    out += [f"{figures}/fig_{e}_gpt2.png" for e in SLICE_EXPERIMENTS]
    return out


@pytest.mark.standins_e2e  # ~10 min on 2 cores: opt-in, `python3 -m pytest -m standins_e2e`
def test_ioi_and_greater_than_slices_run_end_to_end_on_the_gpt2_stand_in(gpt2_hub, mirror, tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "standins.yaml").read_text())
    assert cfg["models"]["gpt2"] == {**cfg["models"]["gpt2"], "source": "hub", "hub_name": "gpt2"}
    results, figures = tmp_path / "results", tmp_path / "figures"
    targets = _slice_targets(cfg, results, figures)
    t0 = time.perf_counter()
    # From the project root, as a user runs it (relative paths in the workflow resolve there).
    res = subprocess.run(
        ["timeout", "-s", "KILL", str(KILL_AFTER_S), sys.executable, "-m", "snakemake", *targets, "--nolock",
         "--configfile", str(ROOT / "config" / "standins.yaml"),
         "--config", f"data_dir={mirror}", f"results_dir={results}", f"figures_dir={figures}",
         "--cores", "2"],
        cwd=ROOT, env=_offline_env(gpt2_hub), capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    print(f"\nstand-in IOI + greater-than slices: {len(targets)} targets, wall time {wall:.1f} s")
    assert res.returncode == 0, (
        f"rc {res.returncode} after {wall:.0f} s\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    )
    assert re.search(r"(\d+) of \1 steps \(100%\) done", res.stderr), res.stderr[-2000:]

    for name in SLICE_EXPERIMENTS:
        task = cfg["experiments"][name]["task"]
        acc = json.loads((results / "prompts" / "gpt2" / f"{task}.accuracy.json").read_text())
        assert acc["n_total"] == cfg["tasks"][task]["n_prompts"] == acc["n_kept"] and acc["filtered"] is False
        for corruption in ("str", "gn"):
            eff = pd.read_parquet(
                results / "effects" / "gpt2" / task / corruption / "attn_head-all_w1.parquet"
            )
            # the full GPT-2 small shape: 12 layers x 12 heads, every metric, finite
            heads = eff.drop_duplicates("component")
            assert len(heads) == 144 and sorted(heads["layer"].unique()) == list(range(12)), (
                task,
                corruption,
            )
            assert sorted(heads["head"].unique()) == list(range(12))
            assert {"prob", "logit_diff", "kl"} <= set(eff["metric"])
            assert eff["effect"].notna().all() and (eff["n_prompts"] == cfg["tasks"][task]["n_prompts"]).all()
            assert (eff["model"] == "gpt2").all() and (eff["corruption"] == corruption).all()
    for table in ("table1", "table3"):
        assert len(pd.read_csv(results / "tables" / f"{table}_gpt2.csv")) > 0, table
    for name in SLICE_EXPERIMENTS:
        assert (figures / f"fig_{name}_gpt2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def _analysis_rules() -> set[str]:
    """The rules analysis.smk defines: written out, or generated from its TABLES / FIGURES tables."""
    text = (ROOT / "workflow" / "rules" / "analysis.smk").read_text()
    written = set(re.findall(r"^rule (\w+):", text, flags=re.M))
    generated = {
        m
        for block in re.findall(r"^(?:TABLES|FIGURES) = \{(.*?)^\}", text, flags=re.M | re.S)
        for m in re.findall(r'^    "(\w+)":', block, flags=re.M)
    }
    return written | generated | {f"{name}_model" for name in generated}


def test_paper_config_plans_every_table_and_figure_offline(tmp_path):
    """`snakemake -n` of the full paper config plans every table / figure target of analysis.smk."""
    base = [sys.executable, "-m", "snakemake", "--nolock", "--configfile", "config/config.yaml",
            "--config", f"results_dir={tmp_path / 'results'}", f"figures_dir={tmp_path / 'figures'}"]  # fmt: skip
    # No network at all where the kernel lets us drop it (root in CI); HF_HUB_OFFLINE=1 in any case.
    wrap = (
        ["unshare", "-n"]
        if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
        else []
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-hub"))

    def run(*args: str) -> str:
        res = subprocess.run(
            [*wrap, *base, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        return res.stdout + res.stderr

    targets = sorted(set(run("--list-target-rules").split()) & _analysis_rules())
    tables = [t for t in targets if re.fullmatch(r"table\d", t)]
    figures = [t for t in targets if t.startswith("fig_")]
    assert tables == [f"table{n}" for n in range(1, 6)], f"table targets: {tables}"
    assert len(figures) >= 8 and "claims" in targets, targets
    t0 = time.perf_counter()
    plan = run("-n", "all", *targets)
    print(f"\nplanned the paper suite offline in {time.perf_counter() - t0:.1f} s: {targets}")
    planned = set(re.findall(r"^(?:local)?rule (\w+):", plan, flags=re.M))
    assert set(targets) <= planned, f"not planned: {sorted(set(targets) - planned)}"
    for name in tables:
        for ext in ("csv", "md", "tex"):
            assert re.search(rf"tables/{name}_[\w.-]+\.{ext}\b", plan), f"{name}.{ext} is not planned"
    fig_dir = re.escape(str(tmp_path / "figures"))
    for name in figures:
        for ext in ("png", "pdf"):
            assert re.search(rf"{fig_dir}/{name}_[\w.-]+\.{ext}\b", plan), f"{name}.{ext} is not planned"
    for rule in ("effects", "clean_cache", "filter_correct"):
        assert rule in planned
    assert any(r.startswith("sweep_") for r in planned), planned
