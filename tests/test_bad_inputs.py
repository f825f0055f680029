"""Every bad input is refused before work starts, with one message: the input, the problem, the fix.

Each case below feeds one bad input to a real entry point and classifies what happened:

* ``clear``: refused (an InputError / exit status 2 for the CLI, 1 for Snakemake) with a message
  holding every expected fragment (the input's name, the problem, the fix) and no traceback; for a
  damaged cache or checkpoint, recomputed with a warning that names the file;
* ``unclear``: refused, but the message lacks a fragment;
* ``traceback``: a Python traceback reached the user (an exception other than InputError escaped);
* ``silent``: it ran as if nothing were wrong.

Every case must be ``clear``; the tally is printed at the end of the run (``bad-input suite:``)::

    python3 -m pytest tests/test_bad_inputs.py

Entry points: the workflow's config checks in-process (:func:`patchbench.preflight.check_workflow_config`,
what ``common.smk`` runs while Snakemake parses the Snakefile), the real ``snakemake`` for a subset
(the same checks, wired), the ``patchbench`` CLI in-process with the real argument parsing, model
directory checks and prompt-set loading (only the model's weights are replaced by a tiny random
model).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import patchbench.models
from conftest import BAD_INPUTS, make_model, make_prompts
from patchbench import cli
from patchbench.config import read_yaml
from patchbench.errors import InputError
from patchbench.preflight import check_workflow_config

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
TRACEBACK = "Traceback (most recent call last)"

#: outcome -> number of cases (printed by conftest's terminal summary)
TALLY: Counter[str] = BAD_INPUTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Outcome:
    kind: str  # refused | silent | traceback | warned
    text: str


def classify(outcome: Outcome, expect: tuple[str, ...]) -> str:
    if outcome.kind in ("traceback", "silent"):
        return outcome.kind
    if TRACEBACK in outcome.text:
        return "traceback"
    return "clear" if all(e.lower() in outcome.text.lower() for e in expect) else "unclear"


def check(outcome: Outcome, expect: tuple[str, ...]) -> None:
    kind = classify(outcome, expect)
    TALLY[kind] += 1
    missing = [e for e in expect if e.lower() not in outcome.text.lower()]
    assert kind == "clear", f"{kind}: {outcome.text[-3000:]}\nexpected fragments missing: {missing}"


def guarded(fn: Callable[[], object]) -> Outcome:
    """Run ``fn``: an InputError is a refusal, any other exception a traceback, no exception silence."""
    try:
        fn()
    except InputError as err:
        return Outcome("refused", str(err))
    except Exception:  # noqa: BLE001  (every other exception is what the suite counts as a traceback)
        return Outcome("traceback", traceback.format_exc())
    return Outcome("silent", "")


# ============================================================================= configs
def tiny() -> dict:
    return copy.deepcopy(TINY)


def model_dir(where: Path, broken: str = "") -> Path:
    """A local model directory laid out like save_pretrained output, optionally with one part broken."""
    import torch
    from safetensors.torch import save_file

    d = where / "local-model"
    d.mkdir(exist_ok=True)
    cfg = {
        "model_type": "gpt2",
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "n_positions": 64,
        "vocab_size": 100,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    save_file({"w": torch.zeros(64)}, str(d / "model.safetensors"))
    (d / "tokenizer.json").write_text("{}")
    if broken == "no_config":
        (d / "config.json").unlink()
    elif broken == "bad_config":
        (d / "config.json").write_text('{"n_layer": 2,\n "n_head": }')
    elif broken == "no_weights":
        (d / "model.safetensors").unlink()
    elif broken == "truncated_weights":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif broken == "no_tokenizer":
        (d / "tokenizer.json").unlink()
    return d


def local(cfg: dict, path: str | Path, windows=(1,)) -> dict:
    cfg["models"]["loc"] = {"source": "local", "path": str(path)}
    cfg["experiments"]["loc_mlp"] = {
        "task": "ioi",
        "models": ["loc"],
        "site": "mlp",
        "windows": list(windows),
    }
    return cfg


def set_in(cfg: dict, path: str, value) -> dict:
    *head, last = path.split(".")
    node = cfg
    for k in head:
        node = node[k]
    node[last] = value
    return cfg


def file_task(cfg: dict, where: Path, text: str) -> dict:
    """A task read from a file whose content is ``text``, patched by an experiment."""
    (where / "bad.csv").write_text(text)
    cfg["tasks"]["mine"] = {"file": str(where / "bad.csv")}
    cfg["experiments"]["mine_mlp"] = {**MLP, "task": "mine"}
    return cfg


def exp(cfg: dict, **changes) -> dict:
    cfg["experiments"]["ioi_heads"].update(changes)
    return cfg


MLP = {"task": "ioi", "models": ["tiny-gpt2"], "site": "mlp"}

#: (case id, config mutation (cfg, tmp_path) -> cfg or YAML text, expected message fragments)
CONFIG_CASES: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("window-larger-than-model", lambda c, t: set_in(c, "experiments.m", {**MLP, "windows": [9]}),
     ("experiment 'm'", "window 9 is larger than the model (2 layers)", "windows of at most 2")),
    ("window-larger-than-local-model", lambda c, t: local(c, model_dir(t), windows=[1, 5]),
     ("experiment 'loc_mlp'", "config.json", "window 5 is larger than the model (2 layers)", "fix")),
    ("duplicate-experiment", lambda c, t: yaml.safe_dump(c, sort_keys=False).replace(
        "experiments:\n", "experiments:\n  ioi_heads: {task: ioi, models: [tiny-gpt2], site: mlp}\n"),
     ("line", "'ioi_heads' is given twice", "remove or rename one")),
    ("duplicate-model", lambda c, t: yaml.safe_dump(c, sort_keys=False).replace(
        "models:\n", "models:\n  tiny-gpt2: {source: hub}\n", 1), ("line", "'tiny-gpt2' is given twice", "fix")),
    ("duplicate-top-level-key", lambda c, t: yaml.safe_dump(c, sort_keys=False) + "filter_correct: true\n",
     ("'filter_correct' is given twice", "line", "fix")),
    ("yaml-unclosed-bracket", lambda c, t: "models:\n  a: {source: toy\ntasks: {}\n",
     ("line 3", "YAML syntax error", "fix: correct the YAML")),
    ("yaml-tab-indent", lambda c, t: "models:\n\ta: {}\n", ("line 2", "YAML syntax error", "tabs")),
    ("yaml-not-a-mapping", lambda c, t: "- models\n- tasks\n", ("top level must be a mapping",)),
    ("unknown-task-option", lambda c, t: set_in(c, "tasks.ioi.options", {"templatse": "all"}),
     ("tasks.ioi.options", "'templatse' was unexpected", "takes the options ['prepend_bos', 'templates']")),
    ("task-option-wrong-type", lambda c, t: set_in(c, "tasks.ioi.options", {"prepend_bos": "yes"}),
     ("tasks.ioi.options.prepend_bos", "is not of type 'boolean'", "fix")),
    ("task-option-fixed-by-variant", lambda c, t: set_in(c, "tasks.ioi.options", {"variant": "ioi_abc"}),
     ("tasks.ioi.options", "'variant' was unexpected", "fix")),
    ("unknown-arch-key", lambda c, t: set_in(c, "models.tiny-gpt2.arch.n_layer", 2),
     ("models.tiny-gpt2.arch", "'n_layer' was unexpected", "config/README.md")),
    ("arch-missing-d_head", lambda c, t: c["models"]["tiny-gpt2"]["arch"].pop("d_head") and c,
     ("models.tiny-gpt2.arch", "'d_head' is a required property",)),
    ("arch-wrong-type", lambda c, t: set_in(c, "models.tiny-gpt2.arch.n_layers", "two"),
     ("models.tiny-gpt2.arch.n_layers", "is not of type 'integer'")),
    ("arch-bad-normalization", lambda c, t: set_in(c, "models.tiny-gpt2.arch.normalization_type", "BN"),
     ("normalization_type", "'BN' is not one of")),
    ("unknown-top-level-key", lambda c, t: set_in(c, "nosie", {"nu": 2}), ("'nosie' was unexpected",)),
    ("removed-global-seed", lambda c, t: set_in(c, "seed", 0), ("'seed' was unexpected", "config/README.md")),
    ("unknown-experiment-key", lambda c, t: exp(c, window=[1]), ("experiments.ioi_heads", "'window' was unexpected")),
    ("unknown-site", lambda c, t: exp(c, site="heads"), ("experiments.ioi_heads.site", "'heads' is not one of")),
    ("unknown-corruption", lambda c, t: exp(c, corruptions=["str", "noise"]),
     ("experiments.ioi_heads.corruptions", "'noise' is not a corruption", "use one of str, gn, resample, mean, zero")),
    ("unknown-corruption-setting", lambda c, t: exp(c, corruptions=["gn@mu=1"]),
     ("experiments.ioi_heads.corruptions", "gn has no setting 'mu'", "its settings: n_samples, nu, seed, sigma", "fix")),
    ("corruption-setting-wrong-type", lambda c, t: exp(c, corruptions=["resample@seed=abc"]),
     ("experiments.ioi_heads.corruptions", "setting 'seed' expects int, got 'abc'", "fix")),
    ("mean-reference-not-a-task", lambda c, t: exp(c, corruptions=["mean@reference=ioi_abcd"]),
     ("experiments.ioi_heads.corruptions", "reference='ioi_abcd'", "no task 'ioi_abcd' is configured", "fix")),
    ("mean-section-reference-not-a-task", lambda c, t: exp(set_in(c, "mean", {"reference": "nope"}), corruptions=["mean"]),
     ("corruption 'mean' with reference='nope'", "no task 'nope' is configured", "fix")),
    ("unknown-direction", lambda c, t: exp(c, directions=["denoising", "renoising"]),
     ("experiments.ioi_heads.directions.1", "'renoising' is not one of ['denoising', 'noising']")),
    ("heads-on-a-site-without-heads", lambda c, t: exp(c, site="resid_mid", heads=[[0, 0]]),
     ("experiment 'ioi_heads'", "site resid_mid has no heads", "drop `heads`", "a site with heads (attn_head")),
    ("duplicate-corruption", lambda c, t: exp(c, corruptions=["str", "str"]), ("corruptions", "non-unique")),
    ("window-zero", lambda c, t: set_in(c, "experiments.m", {**MLP, "windows": [0]}), ("windows.0", "minimum")),
    ("windows-on-head-site", lambda c, t: exp(c, windows=[1, 3]), ("windows [1, 3] only apply to site mlp", "use window 1")),
    ("head-layer-outside-model", lambda c, t: exp(c, heads=[[5, 0]]),
     ("experiment 'ioi_heads'", "heads [[5, 0]] are outside the model (2 layers x 2 heads", "0 <= layer < 2")),
    ("head-index-outside-model", lambda c, t: exp(c, heads=[[0, 7]]), ("heads [[0, 7]] are outside", "0 <= head < 2")),
    ("head-malformed", lambda c, t: exp(c, heads=[[0]]), ("experiments.ioi_heads.heads.0", "is too short")),
    ("head_v-without-heads", lambda c, t: exp(c, site="head_v"), ("experiment 'ioi_heads'", "head_v needs `heads")),
    ("experiment-unknown-model", lambda c, t: exp(c, models=["tiny-gtp2"]), ("unknown model 'tiny-gtp2'", "define it")),
    ("experiment-task-undefined", lambda c, t: exp(c, task="factual"), ("task 'factual' has no entry", "add `factual")),
    ("unknown-task-name", lambda c, t: set_in(c, "tasks.iio", {"n_prompts": 3}),
     ("tasks.iio", "'iio' is not a built-in task", "your own prompt pairs")),
    ("file-task-missing-column", lambda c, t: file_task(c, t, "clean,corrupted,answer\nThe cat,The dog, sat\n"),
     ("prompt-pair file", "bad.csv", "row 1: column(s) ['wrong'] missing", "fix")),
    ("file-task-built-in-name", lambda c, t: set_in(c, "tasks.ioi", {"file": "pairs.csv"}),
     ("tasks.ioi", "may not take the built-in task's name 'ioi'", "rename it")),
    ("model-name-path-separator", lambda c, t: {**c, "models": {"../up": {"source": "hub"}, **c["models"]}},
     ("config key 'models'", "model name '../up'", "is not a safe file-name part", "rename")),
    ("n-prompts-zero", lambda c, t: set_in(c, "tasks.ioi.n_prompts", 0), ("tasks.ioi.n_prompts", "minimum")),
    ("nu-zero", lambda c, t: set_in(c, "noise.nu", 0), ("noise.nu", "less than or equal to the minimum")),
    ("samples-zero", lambda c, t: set_in(c, "noise.n_samples", 0), ("noise.n_samples", "minimum")),
    ("memory-budget-tiny", lambda c, t: set_in(c, "models.tiny-gpt2.memory_budget_mb", 1), ("memory_budget_mb", "minimum")),
    ("dtype-unknown", lambda c, t: set_in(c, "models.tiny-gpt2.dtype", "float8"), ("dtype", "'float8' is not one of")),
    ("device-unknown", lambda c, t: set_in(c, "models.tiny-gpt2.device", "gpu"), ("device", "does not match")),
    ("min-prompts-zero", lambda c, t: set_in(c, "min_prompts", 0), ("min_prompts", "minimum")),
    ("report-title-not-text", lambda c, t: set_in(c, "report", {"title": 3}), ("report.title", "not of type 'string'")),
    ("position-bad-characters", lambda c, t: exp(c, position="S2!"), ("experiments.ioi_heads.position", "does not match")),
    ("attribution-windows-empty", lambda c, t: set_in(c, "attribution", {"windows": []}), ("attribution.windows", "should be non-empty")),
    ("no-experiments", lambda c, t: set_in(c, "experiments", {}), ("experiments", "should be non-empty")),
    ("same-cell-twice", lambda c, t: set_in(c, "experiments.again", dict(c["experiments"]["ioi_heads"])),
     ("'ioi_heads' and 'again' both sweep", "keep that cell in one of them")),
    ("toy-section-unknown-key", lambda c, t: set_in(c, "toy", {"corpuss": {}}), ("config key 'toy'", "corpuss", "fix")),
    ("local-without-path", lambda c, t: set_in(c, "models.loc", {"source": "local"}), ("models.loc", "path", "string")),
    ("local-dir-missing", lambda c, t: local(c, t / "nowhere"),
     ("model 'loc' (source: local)", "nowhere", "does not exist", "save_pretrained")),
    ("local-dir-is-a-file", lambda c, t: local(c, Path(__file__)), ("is a file, not a directory", "fix")),
    ("local-dir-no-config", lambda c, t: local(c, model_dir(t, "no_config")), ("has no config.json", "fix")),
    ("local-dir-bad-config", lambda c, t: local(c, model_dir(t, "bad_config")),
     ("config.json", "not valid JSON", "line 2", "save_pretrained")),
    ("local-dir-no-weights", lambda c, t: local(c, model_dir(t, "no_weights")), ("has no weights", "model.safetensors")),
    ("local-dir-truncated-weights", lambda c, t: local(c, model_dir(t, "truncated_weights")),
     ("model.safetensors", "cannot be read", "truncated")),
    ("local-dir-no-tokenizer", lambda c, t: local(c, model_dir(t, "no_tokenizer")),
     ("has no tokenizer", "tokenizer.save_pretrained")),
    ("toy-path-missing", lambda c, t: set_in(c, "models.tiny-gpt2.path", str(t / "toy-nowhere")),
     ("model 'tiny-gpt2' (source: toy)", "toy-nowhere", "does not exist")),
    ("heads-duplicate", lambda c, t: exp(c, heads=[[0, 0], [0, 0], [1, 1]]),
     ("experiments.ioi_heads.heads", "non-unique", "config/README.md")),
    ("noise-seed-negative", lambda c, t: set_in(c, "noise.seed", -1), ("noise.seed", "minimum of 0")),
    ("task-seed-negative", lambda c, t: set_in(c, "tasks.ioi.seed", -1), ("tasks.ioi.seed", "minimum of 0")),
    ("robustness-seed-negative", lambda c, t: set_in(c, "robustness", {"seed": -2}), ("robustness.seed", "minimum of 0")),
    ("allow-fewer-not-boolean", lambda c, t: set_in(c, "tasks.ioi.allow_fewer", "yes"),
     ("tasks.ioi.allow_fewer", "not of type 'boolean'")),
    ("device-cuda-without-gpu", lambda c, t: set_in(c, "models.tiny-gpt2.device", "cuda:99"),
     ("models.tiny-gpt2.device", "'cuda:99'", "visible CUDA device", "resources.gpu is 0", "device: auto")),
    ("min-prompts-above-n-prompts", lambda c, t: set_in(c, "min_prompts", 50),
     ("min_prompts", "50 is above tasks.ioi.n_prompts (6)", "lower min_prompts to at most 6")),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "expect"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_refused_before_any_job(case, mutate, expect, tmp_path):
    out = mutate(tiny(), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(out if isinstance(out, str) else yaml.safe_dump(out, sort_keys=False))

    def load_and_check():
        cfg = read_yaml(path)  # what the Snakefile's check re-reads; Snakemake's own loader read it before
        if not isinstance(cfg, dict):
            from patchbench.config import load_config

            load_config(path)
        check_workflow_config(cfg, [path])

    check(guarded(load_and_check), expect)


def test_window_larger_than_a_cached_hub_model_is_refused_before_any_job(tmp_path, monkeypatch):
    """A hub model's shape comes from the config.json in the local Hugging Face cache (no network)."""
    import huggingface_hub.constants

    snap = tmp_path / "hub" / "models--gpt2" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"n_layer": 12, "n_head": 12, "n_positions": 1024}))
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = tiny()
    cfg["models"]["gpt2"] = {"source": "hub"}
    cfg["experiments"]["hub_mlp"] = {"task": "ioi", "models": ["gpt2"], "site": "mlp", "windows": [1, 13]}
    expect = ("experiment 'hub_mlp', model 'gpt2'", "window 13 is larger than the model (12 layers)", "fix")
    check(guarded(lambda: check_workflow_config(cfg)), expect)
    cfg["experiments"]["hub_mlp"]["windows"] = [1, 12]
    assert check_workflow_config(cfg)["hub_mlp"][-1].window == 12


# ============================================================================= the real snakemake
SNAKEMAKE_CASES = [
    ("duplicate-experiment", "duplicate-experiment"),
    ("window-larger-than-model", "window-larger-than-model"),
    ("unknown-task-option", "unknown-task-option"),
    ("unknown-arch-key", "unknown-arch-key"),
    ("local-dir-missing", "local-dir-missing"),
    ("head-layer-outside-model", "head-layer-outside-model"),
    ("heads-duplicate", "heads-duplicate"),
    ("noise-seed-negative", "noise-seed-negative"),
    ("device-cuda-without-gpu", "device-cuda-without-gpu"),
    ("min-prompts-above-n-prompts", "min-prompts-above-n-prompts"),
]


def _snakemake(cwd: Path, *args: str, env: dict[str, str] | None = None, dry: bool = True) -> Outcome:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", *(["-n"] if dry else []), "--nolock", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", **(env or {})),
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = res.stdout + res.stderr
    return Outcome("silent" if res.returncode == 0 else "refused", text)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "config_case"), SNAKEMAKE_CASES, ids=[c[0] for c in SNAKEMAKE_CASES])
def test_snakemake_refuses_a_bad_config_with_one_message(case, config_case, tmp_path):
    [(_, mutate, expect)] = [c for c in CONFIG_CASES if c[0] == config_case]
    out = mutate(tiny(), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(out if isinstance(out, str) else yaml.safe_dump(out, sort_keys=False))
    outcome = _snakemake(ROOT, "--configfile", str(path))
    assert "patchbench: error:" in outcome.text
    check(outcome, expect)


@pytest.mark.slow
def test_snakemake_names_the_line_of_a_yaml_error_in_the_default_config(tmp_path):
    """The embedded default config is read strictly before Snakemake's own loader (which names no line)."""
    for part in ("Snakefile", "workflow", "profiles"):
        src = ROOT / part
        shutil.copytree(src, tmp_path / part) if src.is_dir() else shutil.copy2(src, tmp_path / part)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "demo.yaml").write_text("models:\n  a: {source: toy\ntasks: {}\n")
    check(_snakemake(tmp_path), ("config/demo.yaml, line 3", "YAML syntax error", "fix"))


#: Snakemake reads every --configfile itself, before it reads the Snakefile: a missing file is its own
#: traceback (snakemake/common/configfile.py opens the file outside its own try), a YAML syntax error its
#: own "Config file is not valid JSON or YAML" without file or line. patchbench's code has not run yet;
#: ``patchbench check FILE`` gives the clear message (the CLI cases check-config-*), and README says so.
SNAKEMAKE_OWN = pytest.mark.xfail(
    strict=True, reason="Snakemake's own handling of --configfile, before the workflow is read; see README"
)


@pytest.mark.slow
@SNAKEMAKE_OWN
def test_snakemake_configfile_missing(tmp_path):
    check(_snakemake(ROOT, "--configfile", str(tmp_path / "nope.yaml")), ("nope.yaml", "not found"))


@pytest.mark.slow
@SNAKEMAKE_OWN
def test_snakemake_configfile_with_a_yaml_syntax_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("models:\n  a: {source: toy\ntasks: {}\n")
    check(_snakemake(ROOT, "--configfile", str(tmp_path / "bad.yaml")), ("bad.yaml", "line 3"))


@pytest.mark.slow
def test_snakemake_refuses_an_unknown_hub_model_offline_before_any_job(tmp_path):
    cfg = tiny()
    cfg["models"]["gpt3-smal"] = {"source": "hub"}
    cfg["experiments"]["hub_mlp"] = {"task": "ioi", "models": ["gpt3-smal"], "site": "mlp"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    outcome = _snakemake(
        ROOT, "--configfile", str(tmp_path / "c.yaml"), env={"HF_HUB_CACHE": str(tmp_path / "hub")}
    )
    check(outcome, ("patchbench: error:", "unknown model name 'gpt3-smal'", "did you mean"))


@pytest.mark.slow
def test_the_prompts_job_refuses_too_few_prompts_unless_allowed_and_then_logs_both_numbers(tmp_path):
    """PairedFacts on the toy data cannot give 5000 prompts: the prompts job says so, naming both numbers."""
    cfg = {
        "results_dir": str(tmp_path / "results"),
        "figures_dir": str(tmp_path / "figures"),
        "data_dir": "data/toy",
        "models": {"organism-facts": {"source": "toy", "path": "models/organisms/organism-facts"}},
        "tasks": {"factual": {"n_prompts": 5000}},
        "experiments": {"f": {"task": "factual", "models": ["organism-facts"], "site": "mlp"}},
    }
    target = str(tmp_path / "results" / "prompts" / "organism-facts" / "factual.all.parquet")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    outcome = _snakemake(ROOT, "--cores", "1", target, "--configfile", str(tmp_path / "c.yaml"), dry=False)
    check(outcome, ("tasks.factual.n_prompts", "asks for 5000 prompts", "allow_fewer: true"))
    cfg["tasks"]["factual"]["allow_fewer"] = True
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    again = _snakemake(ROOT, "--cores", "1", target, "--configfile", str(tmp_path / "c.yaml"), dry=False)
    assert again.kind == "silent", again.text[-3000:]
    log = (tmp_path / "results" / "logs" / "prompts" / "organism-facts" / "factual.all.log").read_text()
    assert re.search(r"factual: \d+ prompts instead of n_prompts=5000 \(allow_fewer: true\)", log), log


# ============================================================================= the CLI
@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A tiny random model behind the CLI's real loader (directory checks included), and its prompts."""
    model = make_model()
    prompts = make_prompts(model=model)
    calls = []

    def load(spec):
        calls.append(spec)
        return model

    monkeypatch.setattr(patchbench.models, "load_model", load)
    path = tmp_path / "ps.parquet"
    prompts.to_parquet(path)
    return model, prompts, path, calls


def run_cli(argv: list[str], capsys) -> Outcome:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        rc = stop.code
    except Exception:  # noqa: BLE001
        return Outcome("traceback", traceback.format_exc())
    err = capsys.readouterr().err
    return Outcome("silent" if rc == 0 else "refused", err)


def sweep_args(prompts: Path, out: Path, *extra: str, site: str = "attn_head") -> list[str]:
    return ["sweep", "--model", "m", "--prompts", str(prompts), "--corruption", "str", "--site", site,
            "--out", str(out), "--no-progress", *extra]  # fmt: skip


#: (case id, extra sweep flags / full argv builder, expected fragments)
CLI_CASES: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("heads-not-numbers", lambda a: a(["--heads", "abc"]), ("argument --heads", "expects L.H,L.H", "'abc'")),
    ("heads-half-numbers", lambda a: a(["--heads", "1.2,x"]), ("argument --heads", "'1.2,x'")),
    ("heads-negative", lambda a: a(["--heads", "-1.0"]), ("argument --heads", "expects L.H")),
    ("layers-not-numbers", lambda a: a(["--layers", "a,b"]), ("argument --layers", "layer indices", "'a,b'")),
    ("out-is-a-directory", lambda a: a([], out=a.tmp), ("--out", "is a directory, not a file", "raw.parquet")),
    ("out-under-a-file", lambda a: a([], out=a.prompts / "raw.parquet"), ("--out", "is a file, not a directory")),
    ("effects-is-a-directory", lambda a: a(["--effects", str(a.tmp)]), ("--effects", "is a directory")),
    ("window-larger-than-model", lambda a: a(["--window", "9"], site="mlp"),
     ("--model m", "window 9 is larger than the model (3 layers)", "windows of at most 3")),
    ("window-zero", lambda a: a(["--window", "0"], site="mlp"), ("argument --window", "minimum of 1")),
    ("window-on-head-site", lambda a: a(["--window", "3"]), ("only defined for the mlp / attn_out site", "use window 1")),
    ("heads-outside-model", lambda a: a(["--heads", "7.0"]), ("heads [[7, 0]] are outside the model (3 layers x 4 heads",)),
    ("layers-outside-model", lambda a: a(["--layers", "5"]), ("layers [5] are outside the model (3 layers", "0 <= layer < 3")),
    ("heads-on-mlp", lambda a: a(["--heads", "1.0"], site="mlp"), ("heads are only meaningful for", "'mlp'")),
    ("metrics-unknown", lambda a: a(["--effects", str(a.tmp / "e.parquet"), "--metrics", "prob,bogus"]),
     ("--metrics", "unknown metric(s) ['bogus']", "choose from prob, logit_diff, kl, stolfo")),
    ("nu-negative", lambda a: a(["--nu", "-1"]), ("argument --nu", "minimum", "noise.nu")),
    ("nu-text", lambda a: a(["--nu", "lots"]), ("argument --nu", "expects float", "'lots'")),
    ("samples-zero", lambda a: a(["--samples", "0"]), ("argument --samples", "minimum of 1")),
    ("memory-budget-zero", lambda a: a(["--memory-budget-mb", "0"]), ("argument --memory-budget-mb", "minimum of 16")),
    ("sigma-negative", lambda a: a(["--sigma", "-1"]), ("argument --sigma", "number >= 0")),
    ("dtype-unknown", lambda a: a(["--dtype", "float8"]), ("argument --dtype", "invalid choice: 'float8'")),
    ("device-unknown", lambda a: a(["--device", "gpu"]), ("argument --device", "does not match", "model.device")),
    ("site-unknown", lambda a: ["sweep", "--model", "m", "--prompts", str(a.prompts), "--corruption", "str",
                                "--site", "neurons", "--out", "x"], ("argument --site", "invalid choice: 'neurons'")),
    ("corruption-unknown", lambda a: ["sweep", "--model", "m", "--prompts", str(a.prompts), "--corruption", "noise",
                                      "--site", "mlp", "--out", "x"],
     ("argument --corruption", "'noise' is not a corruption", "use one of str, gn, resample, mean, zero")),
    ("corruption-setting-unknown", lambda a: a(["--corruption", "gn@mu=2"]),
     ("argument --corruption", "gn has no setting 'mu'", "its settings")),
    ("direction-unknown", lambda a: a(["--direction", "sideways"]), ("argument --direction", "invalid choice: 'sideways'")),
    ("resample-without-templates", lambda a: a(["--corruption", "resample"]),
     ("corruption 'resample'", "record no template", "give each prompt a `template`")),
    ("resample-prompt-alone-in-its-template", lambda a: a(["--corruption", "resample"], prompts=a.lonely),
     ("corruption 'resample'", "prompt 1 is the only one of its template ('b') with 5 tokens",
      "(2 prompts are alone", "generate more prompts")),
    ("mean-reference-of-another-template", lambda a: a(["--corruption", "mean", "--reference", str(a.other)],
                                                       prompts=a.templated),
     ("corruption 'mean'", "reference set", "has no prompt of template 'a' with 6 tokens", "share this task's templates")),
    ("reference-for-a-corruption-without-one", lambda a: a(["--corruption", "zero", "--reference", str(a.templated)]),
     ("--reference", "corruption 'zero' takes no reference set", "leave --reference out")),
    ("position-unknown-name", lambda a: a(["--position", "Q"]), ("no named position 'Q'", "['X']", "'all' / 'each'")),
    ("position-bad-characters", lambda a: a(["--position", "S2!"]), ("argument --position", "does not match")),
    ("checkpoint-dir-is-a-file", lambda a: a(["--checkpoint-dir", str(a.prompts)]), ("--checkpoint-dir", "is a file")),
    ("clean-cache-missing", lambda a: a(["--clean-cache", str(a.tmp / "nope.safetensors")]),
     ("--clean-cache", "nope.safetensors", "does not exist")),
    ("model-dir-missing", lambda a: a([], model="./no-such-model-dir"),
     ("no-such-model-dir", "does not exist", "save_pretrained")),
    ("model-dir-no-weights", lambda a: a([], model=str(model_dir(a.tmp, "no_weights"))), ("has no weights",)),
    ("model-dir-bad-config", lambda a: a([], model=str(model_dir(a.tmp, "bad_config"))), ("config.json", "not valid JSON")),
    ("model-dir-no-tokenizer", lambda a: a([], model=str(model_dir(a.tmp, "no_tokenizer"))), ("has no tokenizer",)),
    ("missing-required-flag", lambda a: ["sweep", "--model", "m"], ("the following arguments are required",)),
    ("effects-raw-missing", lambda a: ["effects", str(a.tmp / "no-raw.parquet"), "--out", str(a.tmp / "e.parquet")],
     ("no-raw.parquet", "does not exist", "snakemake")),
    ("effects-raw-garbage", lambda a: ["effects", str(a.garbage), "--out", str(a.tmp / "e.parquet")],
     ("garbage.parquet", "not a readable Parquet frame", "rebuild it")),
    ("effects-raw-is-effects", lambda a: ["effects", str(a.effects_frame), "--out", str(a.tmp / "e2.parquet")],
     ("not a raw sweep frame", "not an effects frame")),
    ("effects-metrics-unknown", lambda a: ["effects", str(a.raw), "--out", str(a.tmp / "e.parquet"), "--metrics", "ld"],
     ("--metrics", "unknown metric(s) ['ld']", "choose from")),
    ("effects-out-directory", lambda a: ["effects", str(a.raw), "--out", str(a.tmp)], ("--out", "is a directory")),
    ("effects-k-zero", lambda a: ["effects", str(a.raw), "--out", str(a.tmp / "e.parquet"), "--k", "0"],
     ("argument --k", "less than or equal to the minimum of 0")),
    # an output that names an input or another output (compared resolved: links followed)
    ("out-is-prompts", lambda a: a([], out=a.prompts), ("--out", "is the same file as --prompts", "give --out another path")),
    ("out-is-prompts-via-link", lambda a: a([], out=a.link("link.parquet", a.prompts)),
     ("--out", "link.parquet", "is the same file as --prompts", "fix")),
    ("out-is-prompts-via-dots", lambda a: a([], out=a.tmp / "sub" / ".." / a.prompts.name),
     ("is the same file as --prompts",)),
    ("effects-path-is-out", lambda a: a(["--effects", str(a.tmp / "out.parquet")]),
     ("--effects", "is the same file as --out", "different paths")),
    ("out-is-clean-cache", lambda a: a(["--clean-cache", str(a.cache)], out=a.cache),
     ("--out", "is the same file as --clean-cache",)),
    ("out-in-checkpoint-dir", lambda a: a(["--checkpoint-dir", str(a.tmp / "ck")], out=a.tmp / "ck" / "raw.parquet"),
     ("--out", "lies in --checkpoint-dir", "keep --out outside --checkpoint-dir")),
    ("out-overwrites-model-weights", lambda a: a([], model=str(model_dir(a.tmp)), out=a.tmp / "local-model" / "model.safetensors"),
     ("--out", "is the same file as --model file model.safetensors",)),
    ("effects-out-is-raw", lambda a: ["effects", str(a.raw), "--out", str(a.raw)],
     ("--out", "is the same file as raw frame", "give --out another path")),
    ("robustness-frame-twice", lambda a: ["robustness", str(a.raw), str(a.raw), "--out", str(a.tmp / "rb")],
     ("raw.parquet", "is the same file as frame", "would count twice", "pass it once")),
    ("robustness-circuit-is-output", lambda a: ["robustness", str(a.raw), "--out", str(a.tmp), "--circuit",
                                                str(a.circuit("robustness_toytask_attn_head-all_m.json"))],
     ("is the same file as --circuit",)),
    # duplicates and values the sweep cannot use
    ("heads-duplicate", lambda a: a(["--heads", "0.0,0.0,1.1"]), ("flags do not fit together", "heads [[0, 0]] are given more than once", "list each once")),
    ("layers-duplicate", lambda a: a(["--layers", "0,2,0"], site="mlp"), ("flags do not fit together", "layers [0] are given more than once")),
    ("device-without-gpu", lambda a: a(["--device", "cuda:99"]), ("device 'cuda:99'", "visible CUDA device", "device: auto")),
    ("seed-negative", lambda a: a(["--seed", "-1"]), ("argument --seed", "minimum of 0", "noise.seed")),
    # configs checked without Snakemake (Snakemake reads --configfile itself, before the workflow)
    ("check-config-missing", lambda a: ["check", str(a.tmp / "nope.yaml")], ("nope.yaml", "does not exist", "fix")),
    ("check-config-yaml-error", lambda a: ["check", str(a.text("bad.yaml", "models:\n  a: {source: toy\ntasks: {}\n"))],
     ("bad.yaml, line 3", "YAML syntax error", "fix")),
    ("check-config-heads-duplicate", lambda a: ["check", str(a.text("dup.yaml", yaml.safe_dump(
        exp(tiny(), heads=[[0, 0], [0, 0]]))))], ("experiments.ioi_heads.heads", "non-unique")),
]  # fmt: skip


class Args:
    """Builds a sweep argv for a case, with paths to a prompt set, a raw frame and damaged files."""

    def __init__(self, tmp: Path, prompts: Path):
        self.tmp, self.prompts = tmp, prompts
        self.garbage = tmp / "garbage.parquet"
        self.garbage.write_bytes(b"PAR1 this is not a parquet file")
        self.raw, self.effects_frame = tmp / "raw.parquet", tmp / "effects.parquet"
        self.cache = tmp / "cache.safetensors"
        self.cache.write_bytes(b"not read: the command is refused first")
        # the prompt set (lengths 6, 5, 6, 5) with templates, one where prompts 1 and 3 are alone in their
        # (template, length), and a reference set of another template
        import dataclasses

        import pandas as pd

        from patchbench.prompts import PromptSet

        base = PromptSet.from_parquet(prompts)
        self.templated, self.lonely, self.other = (
            tmp / f"{n}.parquet" for n in ("templated", "lonely", "other")
        )
        for path, names in ((self.templated, "aabb"), (self.lonely, "abac"), (self.other, "cccc")):
            dataclasses.replace(base, meta=pd.DataFrame({"template": list(names)})).to_parquet(path)

    def link(self, name: str, target: Path) -> Path:
        (self.tmp / name).symlink_to(target)
        return self.tmp / name

    def text(self, name: str, content: str) -> Path:
        (self.tmp / name).write_text(content)
        return self.tmp / name

    def circuit(self, name: str) -> Path:
        return self.text(name, json.dumps({"task": "toytask", "classes": {"a": ["0.0"]}}))

    def __call__(self, extra, out=None, site="attn_head", model="m", prompts=None):
        argv = sweep_args(prompts or self.prompts, out or self.tmp / "out.parquet", *extra, site=site)
        argv[argv.index("--model") + 1] = model
        if "--corruption" in extra:  # the case's corruption replaces the default one
            i = argv.index("--corruption")
            del argv[i : i + 2]
        return argv


@pytest.mark.parametrize(("case", "argv", "expect"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_is_refused_before_the_sweep(case, argv, expect, cli_env, tmp_path, capsys):
    _, _, prompts, calls = cli_env
    a = Args(tmp_path, prompts)
    if case.startswith(("effects-", "robustness-")):
        assert cli.main(sweep_args(prompts, a.raw, "--effects", str(a.effects_frame))) == 0
        calls.clear()
    inputs = {p: p.read_bytes() for p in (prompts, a.raw) if p.is_file()}
    outcome = run_cli(argv(a), capsys)
    check(outcome, expect)
    if not any(
        k in case
        for k in (
            "outside-model",
            "larger-than-model",
            "position-unknown",
            "effects-",
            "robustness-",
            "template",
        )
    ):
        assert not calls, "the model was loaded although the flags were already known to be bad"
    assert {p: p.read_bytes() for p in inputs} == inputs, "a refused command changed one of its inputs"


# ============================================================================= prompt sets
def write_prompts(tmp: Path, prompts, edit: Callable | None = None) -> Path:
    """``prompts`` as a parquet file, its table passed through ``edit`` (a damaged copy)."""
    path = tmp / "bad.parquet"
    prompts.to_parquet(path)
    if edit is not None:
        table = pq.read_table(path)
        edited = edit(table)
        if isinstance(edited, bytes):
            path.write_bytes(edited)
        elif edited is not None:
            pq.write_table(edited, path)
    return path


def replace_col(name: str, values, typ=None):
    def edit(table: pa.Table) -> pa.Table:
        arr = pa.array(values, type=typ) if typ is not None else pa.array(values)
        return table.set_column(table.column_names.index(name), name, arr)

    return edit


def rows_of(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


#: (case id, table edit (or None with a PromptSet edit), expected fragments)
PROMPT_CASES: list[tuple[str, Callable, tuple[str, ...]]] = [
    ("answer-equals-wrong", lambda t: replace_col("wrong", rows_of(t, "answers"))(t),
     ("prompt 0", "both an answer and a wrong answer", "logit difference is 0", "Fix:")),
    ("clean-id-outside-vocab", lambda t: replace_col("clean", [[*r[:-1], 150] for r in rows_of(t, "clean")])(t),
     ("prompt 0", "clean has token ids outside the model's vocabulary (d_vocab=100)", "rebuild it")),
    ("corrupted-id-outside-vocab", lambda t: replace_col("corrupted", [[*r[:-1], 100] for r in rows_of(t, "corrupted")])(t),
     ("corrupted has token ids outside the model's vocabulary",)),
    ("answer-id-outside-vocab", lambda t: replace_col("answers", [[1000] for _ in range(t.num_rows)])(t),
     ("answers has token ids outside",)),
    ("negative-id", lambda t: replace_col("wrong", [[-3] for _ in range(t.num_rows)])(t), ("wrong has token ids outside",)),
    ("prompt-longer-than-context", lambda t: replace_col("clean", [r * 8 for r in rows_of(t, "clean")])(
        replace_col("corrupted", [r * 8 for r in rows_of(t, "corrupted")])(t)),
     ("longer than the model's context (n_ctx=32)", "drop the longer prompts")),
    ("empty-prompt-set", lambda t: t.slice(0, 0), ("the prompt set is empty", "n_prompts")),
    ("none-in-answers", lambda t: replace_col("answers", [None, *rows_of(t, "answers")[1:]])(t),
     ("column 'answers' has missing values (None / NaN) in rows [0]", "rebuild the prompt set")),
    ("none-inside-clean", lambda t: replace_col("clean", [[None, *r[1:]] for r in rows_of(t, "clean")])(t),
     ("column 'clean' has missing values", "rows [0, 1, 2, 3]")),
    ("nan-answer-pos", lambda t: replace_col("answer_pos", [float("nan"), *map(float, rows_of(t, "answer_pos")[1:])])(t),
     ("column 'answer_pos' has missing values", "rows [0]")),
    ("float-token-ids", lambda t: replace_col("wrong", [[float(x) for x in r] for r in rows_of(t, "wrong")])(t),
     ("column 'wrong' holds double values", "not integer")),
    ("nan-named-position", lambda t: replace_col("pos_X", [None, *rows_of(t, "pos_X")[1:]], pa.int64())(t),
     ("column 'pos_X' has missing values", "rows [0]")),
    ("missing-column", lambda t: t.drop_columns(["wrong"]), ("not a PromptSet", "['wrong'] are missing", "prompts rule")),
    ("truncated-file", lambda t: None, ("not a readable Parquet file", "rebuild it")),
    ("text-file", lambda t: b"clean,corrupted\n1,2\n", ("not a readable Parquet file",)),
    ("unequal-lengths", lambda t: replace_col("corrupted", [r[:-1] for r in rows_of(t, "corrupted")])(t),
     ("clean has 6 tokens but the corrupted prompt has 5", "equal token length")),
    ("answer-pos-outside", lambda t: replace_col("answer_pos", [40] * t.num_rows, pa.int64())(t),
     ("answer_pos 40 is outside the prompt",)),
    ("noise-position-outside", lambda t: replace_col("noise_positions", [[30]] * t.num_rows)(t),
     ("noise positions [30] are outside the prompt",)),
    ("no-answer", lambda t: replace_col("answers", [[]] * t.num_rows, pa.list_(pa.int64()))(t), ("no answer token",)),
    ("named-position-absent", lambda t: replace_col("pos_X", [-1, *rows_of(t, "pos_X")[1:]], pa.int64())(t),
     ("position 'X' is absent (-1) in prompts [0]", "Fix: subset")),
    ("answer-token-twice", lambda t: replace_col("answers", [r * 2 for r in rows_of(t, "answers")])(t),
     ("prompt 0", "answers", "more than once", "would count twice", "list each token once")),
    ("wrong-token-twice", lambda t: replace_col("wrong", [r * 2 for r in rows_of(t, "wrong")])(t),
     ("prompt 0", "wrong", "more than once", "list each token once")),
    ("noise-position-twice", lambda t: replace_col("noise_positions", [r[:1] * 2 for r in rows_of(t, "noise_positions")])(t),
     ("prompt 0", "noise_positions", "more than once", "list each position once")),
    ("every-row-twice", lambda t: pa.concat_tables([t, t]), ("prompt 4", "repeats prompt 0", "count twice", "drop the repeat")),
    ("one-row-twice", lambda t: pa.concat_tables([t, t.slice(2, 1)]), ("prompt 4", "repeats prompt 2",)),
    ("multi-token-answer-of-one-answer-task", lambda t: as_task("ioi", replace_col(
        "answers", [[r[0], (r[0] + 1) % 100] for r in rows_of(t, "answers")])(t)),
     ("ioi prompt 0", "must be one token each", "multi-token answer", "Fix: drop the prompt")),
]  # fmt: skip


def as_task(task: str, table: pa.Table) -> pa.Table:
    """``table`` relabelled as a prompt set of registered task ``task``."""
    meta = dict(table.schema.metadata)
    meta[b"patchbench"] = json.dumps({**json.loads(meta[b"patchbench"]), "task": task}).encode()
    return table.replace_schema_metadata(meta)


#: cases refused while the file is read (the message names the file; the others name the prompt)
FILE_LEVEL = {"none-in-answers", "none-inside-clean", "nan-answer-pos", "float-token-ids", "nan-named-position",
              "missing-column", "truncated-file", "text-file"}  # fmt: skip


@pytest.mark.parametrize(("case", "edit", "expect"), PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_bad_prompt_set_is_refused_before_the_sweep(case, edit, expect, cli_env, tmp_path, capsys):
    _, prompts, _, _ = cli_env
    path = write_prompts(tmp_path, prompts, edit)
    if case == "truncated-file":
        path.write_bytes(path.read_bytes()[:200])
    position = ["--position", "X"] if case == "named-position-absent" else []
    outcome = run_cli(sweep_args(path, tmp_path / "out.parquet", *position), capsys)
    names_file = case in FILE_LEVEL
    check(outcome, (*expect, str(path) if names_file else "", "fix"))
    assert not (tmp_path / "out.parquet").exists()


# ============================================================================= damaged caches and checkpoints
def warned(outcome: Outcome, caplog) -> Outcome:
    """A run that went through: its warnings are what the user sees (a damaged file recomputed)."""
    return Outcome("warned", caplog.text) if outcome.kind == "silent" else outcome


def test_a_damaged_clean_cache_is_recomputed_with_a_warning(cli_env, tmp_path, capsys, caplog):
    model, prompts, path, _ = cli_env
    from patchbench.engine.cache import cache_fingerprint, clean_cache, save_cache

    cache = tmp_path / "cache.safetensors"
    save_cache(clean_cache(model, prompts, "attn_head"), cache, cache_fingerprint(model, prompts))
    cache.write_bytes(cache.read_bytes()[:300])
    outcome = run_cli(sweep_args(path, tmp_path / "a.parquet", "--clean-cache", str(cache)), capsys)
    check(
        warned(outcome, caplog),
        (f"clean cache {cache} is not this job's", "unreadable", "computing the clean run here"),
    )


def test_a_clean_cache_of_other_prompts_is_recomputed_with_a_warning(cli_env, tmp_path, capsys, caplog):
    model, prompts, path, _ = cli_env
    from patchbench.engine.cache import cache_fingerprint, clean_cache, save_cache

    other = make_prompts(seed=1, model=model)
    cache = tmp_path / "cache.safetensors"
    save_cache(clean_cache(model, other, "attn_head"), cache, cache_fingerprint(model, other))
    outcome = run_cli(sweep_args(path, tmp_path / "a.parquet", "--clean-cache", str(cache)), capsys)
    check(
        warned(outcome, caplog),
        (f"clean cache {cache} is not this job's", "fingerprint", "computing the clean run here"),
    )


def test_a_garbage_checkpoint_chunk_is_recomputed_with_a_warning(cli_env, tmp_path, capsys, caplog):
    _, _, path, _ = cli_env
    ckpt = tmp_path / "ckpt"
    args = sweep_args(path, tmp_path / "a.parquet", "--checkpoint-dir", str(ckpt), "--memory-budget-mb", "16")
    assert run_cli(args, capsys).kind == "silent"
    first = (tmp_path / "a.parquet").read_bytes()
    chunk = sorted(ckpt.glob("chunk-*.parquet"))[0]
    chunk.write_bytes(b"garbage")
    outcome = run_cli(args, capsys)
    assert (tmp_path / "a.parquet").read_bytes() == first
    check(warned(outcome, caplog), (f"discarding checkpoint chunk {chunk}", "unreadable", "recomputing it"))


# ============================================================================= models that cannot be had
@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """Offline, with an empty Hugging Face cache: what a laptop without the model sees."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    return tmp_path / "empty-hub"


def test_an_unknown_hub_name_offline_is_refused_before_any_job(offline_empty_cache):
    cfg = tiny()
    cfg["models"]["gpt3-smal"] = {"source": "hub"}
    cfg["experiments"]["hub_mlp"] = {"task": "ioi", "models": ["gpt3-smal"], "site": "mlp"}
    expect = ("model 'gpt3-smal'", "unknown model name 'gpt3-smal'", "did you mean", "hub_name")
    check(guarded(lambda: check_workflow_config(cfg)), expect)


def test_a_known_hub_model_missing_offline_plans_and_its_job_says_it_is_not_cached(offline_empty_cache):
    """A dry run of the paper suite plans offline; loading says the model is known but not cached."""
    from patchbench.models import ModelSpec, load_model

    cfg = tiny()
    cfg["models"]["gpt2-medium"] = {"source": "hub"}
    cfg["experiments"]["hub_mlp"] = {"task": "ioi", "models": ["gpt2-medium"], "site": "mlp"}
    assert check_workflow_config(cfg)["hub_mlp"]
    outcome = guarded(lambda: load_model(ModelSpec(name="gpt2-medium", source="hub", hub_name="gpt2-medium")))
    check(
        outcome,
        ("'gpt2-medium' is a known model but is not in the local Hugging Face cache", "go online once"),
    )


def test_the_cli_names_an_unknown_hub_model_offline(offline_empty_cache, tmp_path, capsys):
    path = tmp_path / "ps.parquet"
    make_prompts().to_parquet(path)
    outcome = run_cli(
        sweep_args(path, tmp_path / "out.parquet")[:2]
        + ["gpt3-smal"]
        + sweep_args(path, tmp_path / "o.parquet")[3:],
        capsys,
    )
    check(outcome, ("unknown model name 'gpt3-smal'", "did you mean"))
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (
            {"n_embd": 64},
            (
                "tensor 'transformer.wte.weight' in model.safetensors has shape [50257, 32]",
                "gives [50257, 64]",
            ),
        ),
        (
            {"n_layer": 3},
            ("describes 12 tensor(s) the weights lack", "transformer.h.2.", "initialised randomly"),
        ),
        ({"n_layer": 1}, ("the weights hold", "transformer.h.1.", "would be ignored")),
    ],
    ids=["width", "more-layers", "fewer-layers"],
)
def test_a_config_json_that_disagrees_with_the_weights_names_the_tensor(change, expect, tmp_path, capsys):
    from lm_models import save_hf

    d = save_hf("gpt2-large", tmp_path / "hf", n_layer=2, n_embd=32, n_head=2, n_positions=64)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    path = tmp_path / "ps.parquet"
    make_prompts().to_parquet(path)
    outcome = run_cli(
        sweep_args(path, tmp_path / "out.parquet")[:2]
        + [str(d)]
        + sweep_args(path, tmp_path / "o.parquet")[3:],
        capsys,
    )
    check(outcome, (*expect, "save the model and its config together"))


def test_a_toy_config_json_that_disagrees_with_the_weights_names_the_tensor(tmp_path, capsys):
    d = tmp_path / "toy"
    shutil.copytree(ROOT / "models" / "organisms" / "organism-docstring", d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "n_heads": 4, "d_head": 32}))
    path = tmp_path / "ps.parquet"
    make_prompts().to_parquet(path)
    outcome = run_cli(
        sweep_args(path, tmp_path / "out.parquet")[:2]
        + [str(d)]
        + sweep_args(path, tmp_path / "o.parquet")[3:],
        capsys,
    )
    check(
        outcome,
        (
            "tensor 'blocks.0.attn.W_Q' in model.safetensors has shape [8, 128, 16]",
            "gives [4, 128, 32]",
            "fix",
        ),
    )


# ============================================================================= tasks and filters
def test_too_few_prompts_for_n_prompts_is_refused_unless_allowed(caplog):
    """PairedFacts on the toy data has fewer pairs than 5000 prompts need."""
    from patchbench.models import ModelSpec, load_tokenizer
    from patchbench.tasks import build_task

    tok = load_tokenizer(
        ModelSpec(name="t", source="toy", path=str(ROOT / "models" / "organisms" / "organism-facts"))
    )
    args = ("factual", tok, ROOT / "data" / "toy", 5000, 0)
    outcome = guarded(lambda: build_task(*args))
    check(
        outcome,
        ("tasks.factual.n_prompts", "asks for 5000 prompts", "the task's data give", "allow_fewer: true"),
    )
    with caplog.at_level("WARNING"):
        ps = build_task(*args, allow_fewer=True)
    assert (
        0 < len(ps) < 5000
        and f"{len(ps)} prompts instead of n_prompts=5000 (allow_fewer: true)" in caplog.text
    )
    assert f"give {len(ps)} distinct prompts" in outcome.text


@pytest.mark.parametrize(
    ("filtered", "expect"),
    [
        (
            True,
            ("answers only 3 of 20 ioi prompts correctly", "filter_correct: false", "lower min_prompts to 3"),
        ),
        (
            False,
            (
                "has 3 prompts, fewer than min_prompts=10",
                "filter_correct is already false",
                "raise tasks.ioi.n_prompts",
            ),
        ),
    ],
    ids=["filter-on", "filter-off"],
)
def test_min_prompts_above_the_kept_prompts_names_the_fix_that_applies(filtered, expect):
    from patchbench.filtering import check_enough

    outcome = guarded(lambda: check_enough(3, 20, 10, filtered, "m", "ioi"))
    check(outcome, expect)
    if not filtered:
        assert "set filter_correct: false" not in outcome.text


# ============================================================================= a full disk
def test_a_full_disk_stops_with_one_message_and_the_same_command_resumes_byte_identical(
    cli_env, tmp_path, capsys, caplog, monkeypatch
):
    """The disk fills up after three files: one message, nothing partial; then the same command resumes
    from the finished chunks and writes the uninterrupted run's bytes."""
    import errno
    import re

    import patchbench.atomic

    _, _, path, _ = cli_env
    ckpt, out, reference = tmp_path / "ckpt", tmp_path / "raw.parquet", tmp_path / "reference.parquet"
    flags = ("--position", "each", "--memory-budget-mb", "16")
    args = sweep_args(path, out, *flags, "--checkpoint-dir", str(ckpt), site="resid_pre")
    assert run_cli(sweep_args(path, reference, *flags, site="resid_pre"), capsys).kind == "silent"
    real, files = patchbench.atomic._fsync, []

    def full_after_three(p, flags=os.O_RDONLY):
        if Path(p).is_file():
            files.append(p)
            if len(files) > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(p, flags)

    monkeypatch.setattr(patchbench.atomic, "_fsync", full_after_three)
    outcome = run_cli(args, capsys)
    check(
        outcome,
        ("the disk is full", "no space left on device", "free there now", "run the same command again"),
    )
    assert not out.exists() and not list(ckpt.glob(".*.tmp")), "a partial file was left behind"
    finished = len(list(ckpt.glob("chunk-*.parquet")))
    monkeypatch.setattr(patchbench.atomic, "_fsync", real)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run_cli(args, capsys).kind == "silent"
    total = len(list(ckpt.glob("chunk-*.parquet")))
    assert 1 <= finished < total, (finished, total)
    assert re.search(rf"{total - finished} of {total} chunk\(s\) computed", caplog.text), caplog.text[-2000:]
    assert out.read_bytes() == reference.read_bytes()


def test_the_suite_covers_at_least_sixty_bad_inputs():
    n = len(CONFIG_CASES) + 1 + len(SNAKEMAKE_CASES) + 1 + len(CLI_CASES) + len(PROMPT_CASES) + 3
    assert n >= 60, n
