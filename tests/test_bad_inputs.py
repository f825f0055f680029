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
    ("unknown-corruption", lambda c, t: exp(c, corruptions=["str", "noise"]), ("corruptions", "'noise' is not one of")),
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
]


def _snakemake(cwd: Path, *args: str) -> Outcome:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1"),
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
    ("window-on-head-site", lambda a: a(["--window", "3"]), ("only defined for the mlp site", "use window 1")),
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
    ("corruption-unknown", lambda a: ["sweep", "--model", "m", "--prompts", str(a.prompts), "--corruption", "zero",
                                      "--site", "mlp", "--out", "x"], ("argument --corruption", "invalid choice: 'zero'")),
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
]  # fmt: skip


class Args:
    """Builds a sweep argv for a case, with paths to a prompt set, a raw frame and damaged files."""

    def __init__(self, tmp: Path, prompts: Path):
        self.tmp, self.prompts = tmp, prompts
        self.garbage = tmp / "garbage.parquet"
        self.garbage.write_bytes(b"PAR1 this is not a parquet file")
        self.raw, self.effects_frame = tmp / "raw.parquet", tmp / "effects.parquet"

    def __call__(self, extra, out=None, site="attn_head", model="m"):
        argv = sweep_args(self.prompts, out or self.tmp / "out.parquet", *extra, site=site)
        argv[argv.index("--model") + 1] = model
        return argv


@pytest.mark.parametrize(("case", "argv", "expect"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_is_refused_before_the_sweep(case, argv, expect, cli_env, tmp_path, capsys):
    _, _, prompts, calls = cli_env
    a = Args(tmp_path, prompts)
    if case.startswith("effects-"):
        assert cli.main(sweep_args(prompts, a.raw, "--effects", str(a.effects_frame))) == 0
        calls.clear()
    outcome = run_cli(argv(a), capsys)
    check(outcome, expect)
    if not any(k in case for k in ("outside-model", "larger-than-model", "position-unknown", "effects-")):
        assert not calls, "the model was loaded although the flags were already known to be bad"


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
]  # fmt: skip


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


def test_the_suite_covers_at_least_sixty_bad_inputs():
    n = len(CONFIG_CASES) + 1 + len(SNAKEMAKE_CASES) + 1 + len(CLI_CASES) + len(PROMPT_CASES) + 3
    assert n >= 60, n
