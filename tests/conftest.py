"""Shared fixtures and helpers: project paths, the mirrored data directory, the real GPT-2 tokenizer,
tiny models and prompt sets, synthetic effects frames, and a Snakemake runner.

Helpers are plain functions and constants: test modules import them (``from conftest import make_model``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from patchbench.lm import LM, load_native
from patchbench.prompts import PromptSet

ROOT = Path(__file__).resolve().parents[1]


def demo_with_experiments(experiments: dict, **sections) -> dict:
    """config/demo.yaml narrowed to ``experiments`` (and ``sections`` replaced): its practice benchmark
    keeps the experiments that remain, since naming an absent one is refused."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg.update(sections, experiments=experiments)
    cfg["practices"] = {
        **cfg["practices"],
        "experiments": [e for e in cfg["practices"]["experiments"] if e in experiments],
    }
    return cfg


# CI and developers keep the offline data mirror beside the checkout (../shared/data).
MIRROR = Path(os.environ.get("PATCHBENCH_MIRROR", ROOT.parent / "shared" / "data"))


#: Outcomes of tests/test_bad_inputs.py (clear / unclear / traceback / silent), summarised at the end.
BAD_INPUTS: Counter[str] = Counter()


#: Tests after which autograd was globally off (torch's grad mode is process state, not a test's).
GRAD_LEAKS: list[str] = []


@pytest.fixture(autouse=True)
def autograd_on(request):
    """Every test starts with autograd enabled, as in a fresh process; one that leaves it disabled
    is named at the end of the run (a test that trains after it would otherwise fail instead)."""
    torch.set_grad_enabled(True)
    yield
    if not torch.is_grad_enabled():
        GRAD_LEAKS.append(request.node.nodeid)
        torch.set_grad_enabled(True)


def pytest_collection_modifyitems(items) -> None:
    """A test module's ``MEASURED_MISSES`` ({test id within the module: why}, the id as pytest shows
    it, ``test_x[organism-ioi]``) marks those tests strict expected failures: a goal or stated
    property the shipped weights are measured to miss, with the measured numbers. The miss is
    reported in every run's summary (xfailed, with its reason), and a test that passes again fails
    the run until its entry is removed."""
    for item in items:
        misses = getattr(item.module, "MEASURED_MISSES", {})
        if item.name in misses:
            item.add_marker(pytest.mark.xfail(strict=True, reason=misses[item.name]))


def pytest_terminal_summary(terminalreporter) -> None:
    if GRAD_LEAKS:
        terminalreporter.write_line(f"tests that left autograd disabled: {GRAD_LEAKS}")
    if BAD_INPUTS:
        kinds = ("clear", "unclear", "traceback", "silent")
        counts = " / ".join(f"{BAD_INPUTS[k]} {k}" for k in kinds)
        terminalreporter.write_line(f"bad-input suite: {sum(BAD_INPUTS.values())} tried: {counts}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread avoids thread contention on a 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "gpt2-tokenizer" / "vocab.json").is_file():
        raise FileNotFoundError(
            f"the offline data mirror is not at {MIRROR}; put ../shared/data beside the checkout "
            "or set PATCHBENCH_MIRROR"
        )
    return MIRROR


@pytest.fixture(scope="session")
def gpt2_tokenizer(mirror):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(mirror / "gpt2-tokenizer"))
    tok.pad_token = tok.eos_token
    return tok


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake --nolock *args`` offline in ``cwd``; stdout and stderr captured."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--nolock", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- the tiny workflow in its own directory
def tiny_config(nu: float = 3.0) -> dict:
    """tests/configs/tiny.yaml plus a GN sweep of the residual stream at every position in chunks of a few
    targets (a 16 MB memory budget): long enough to kill part-way (tests/test_state.py)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["noise"]["nu"] = nu
    cfg["models"]["tiny-gpt2"]["memory_budget_mb"] = 16
    cfg["tasks"]["ioi"]["n_prompts"] = 16
    cfg["experiments"]["ioi_resid_each"] = dict(
        task="ioi", models=["tiny-gpt2"], site="resid_pre", position="each", corruptions=["gn"]
    )
    return cfg


def workflow_copy(where: Path, config: dict) -> Path:
    """A copy of the workflow (its own ``.snakemake``: locks, incomplete markers, params) whose embedded
    default config is ``config``."""
    import yaml

    where.mkdir(parents=True, exist_ok=True)
    for part in ("Snakefile", "workflow", "profiles", "data/toy"):
        src, dst = ROOT / part, where / part
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    (where / "config").mkdir()
    (where / "config" / "demo.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return where


def workflow_env() -> dict[str, str]:
    """The environment of a workflow run: this checkout's package first, offline."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def run_workflow(project: Path, command: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a shell ``command`` in ``project``; it must succeed."""
    res = subprocess.run(
        ["bash", "-c", command],
        cwd=project,
        env=workflow_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, f"{command} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> Path:
    """The tiny workflow (:func:`tiny_config`) run once, start to end, in its own directory."""
    project = workflow_copy(tmp_path_factory.mktemp("tiny-workflow"), tiny_config())
    run_workflow(project, f"{sys.executable} -m snakemake --cores 2")
    return project


def workflow_project(
    tmp: Path, rules: Sequence[str], config: str = "config/demo.yaml", tail: str = ""
) -> Path:
    """A copy of the workflow in ``tmp`` whose Snakefile includes only ``rules`` (e.g. ``common``,
    ``analysis``) with ``config``, plus ``tail``; the files a test writes under ``results/`` are
    then the sources of those rules."""
    for d in ("workflow", "config", "models"):  # models/: the shipped organisms the demo config reads
        shutil.copytree(ROOT / d, tmp / d)
    (tmp / "data").mkdir()
    shutil.copy(ROOT / "data" / "ioi_heads_gpt2_small.json", tmp / "data")
    includes = "".join(f'include: "workflow/rules/{r}.smk"\n' for r in rules)
    (tmp / "Snakefile").write_text(f'configfile: "{config}"\n\n\n{includes}{tail}')
    return tmp


# ----------------------------------------------------------------------------- a tiny model and prompts
# (random 3-layer model with MLPs, prompts of two lengths: the engine, attribution and CLI tests)
N_LAYERS, N_HEADS, D_MODEL, VOCAB = 3, 4, 64, 100


def make_model(dtype=torch.float64, seed: int = 0, **shape) -> LM:
    """A random model (native route, seeded): 3 layers, 4 heads, d_model 64, vocab 100 unless ``shape``
    says otherwise; LayerNorm, GELU MLPs, standard positions."""
    dims = dict(n_layers=N_LAYERS, n_heads=N_HEADS, d_model=D_MODEL, d_head=16, d_mlp=128, d_vocab=VOCAB)
    dims.update(n_ctx=32, initializer_range=0.2, act_fn="gelu", normalization_type="LN")
    dims.update(shape)
    return load_native({**dims, "seed": seed, "model_name": "tiny"}, dtype=dtype)


def make_prompts(n: int = 4, seed: int = 0, model: LM | None = None) -> PromptSet:
    """Random prompts of lengths 6 and 5 (right-padded), one token replaced at named position X.

    With ``model``, the answer is the model's top clean prediction and the wrong answer its top
    corrupted one, so that LD_clean - LD_corrupted is well away from 0 (the normalisation then
    does not amplify rounding).
    """
    rng = np.random.default_rng(seed)
    clean, corrupted, pos_x, noise = [], [], [], []
    for i in range(n):
        length = 6 if i % 2 == 0 else 5
        c = rng.integers(1, VOCAB, length)
        k = c.copy()
        x = 1 + (i % 3)
        k[x] = (c[x] + 1 + rng.integers(0, VOCAB - 2)) % (VOCAB - 1) + 1
        clean.append(c)
        corrupted.append(k)
        pos_x.append(x)
        noise.append([x, x + 1] if i % 2 else [x])
    ans = [[int(a)] for a in rng.integers(1, VOCAB, n)]
    wrong = [[int(a)] for a in rng.integers(1, VOCAB, n)]
    if model is not None:
        with torch.no_grad():
            for i in range(n):
                lc = model.logits(torch.as_tensor(clean[i])[None])[0, -1]
                lk = model.logits(torch.as_tensor(corrupted[i])[None])[0, -1]
                ans[i] = [int(lc.argmax())]
                order = lk.argsort(descending=True)
                wrong[i] = [int(order[0]) if int(order[0]) != ans[i][0] else int(order[1])]
    return PromptSet(
        task="toytask",
        clean=clean,
        corrupted=corrupted,
        answer_pos=[len(c) - 1 for c in clean],
        answers=ans,
        wrong=wrong,
        noise_positions=noise,
        positions={"X": np.array(pos_x)},
        pad_id=0,
    )


@pytest.fixture(scope="module")
def model() -> LM:
    """The tiny random model of :func:`make_model` (modules that need another model override it)."""
    return make_model()


@pytest.fixture(scope="module")
def prompts(model) -> PromptSet:
    """:func:`make_prompts` answered by ``model``."""
    return make_prompts(model=model)


# ----------------------------------------------------------------------------- an IOI-shaped model and prompts
# ----------------------------------------------------------------------------- statistics
def tiny_ioi_model() -> LM:
    model = make_model(
        torch.float32, n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=40, n_ctx=16,
        initializer_range=0.8 / 32**0.5,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    state = model.ht_state_dict()  # initialised LN weights are 1 and biases 0: make them matter
    state["ln_final.w"] = 1.0 + 0.5 * torch.randn(32, generator=g)
    state["ln_final.b"] = 0.3 * torch.randn(32, generator=g)
    state["unembed.b_U"] = 0.3 * torch.randn(40, generator=g)
    model.load_ht_state_dict(state)
    return model


def ioi_like_prompts(n: int = 6) -> PromptSet:
    rng = np.random.default_rng(0)
    clean, answers, wrong, io, s1, s2, end = [], [], [], [], [], [], []
    for i in range(n):
        length = 10 + (i % 2)  # two lengths: exercises right padding
        toks = rng.integers(5, 40, size=length)
        a, b = 1, 2  # IO and S names
        p_io, p_s1, p_s2 = (1, 3, 6) if i % 2 == 0 else (3, 1, 7)
        toks[p_io], toks[p_s1], toks[p_s2] = a, b, b
        clean.append(toks)
        answers.append([a])
        wrong.append([b])
        io.append(p_io), s1.append(p_s1), s2.append(p_s2), end.append(length - 1)
    return PromptSet(
        task="ioi", clean=clean, corrupted=clean, answer_pos=np.array(end), answers=answers, wrong=wrong,
        noise_positions=[[p] for p in s2],
        positions={"IO": np.array(io), "S1": np.array(s1), "S2": np.array(s2), "END": np.array(end)},
    )  # fmt: skip


# ----------------------------------------------------------------------------- synthetic effects frames
CURVE_LAYERS = 12


def bump(height: float, centre: int = 6) -> np.ndarray:
    layers = np.arange(CURVE_LAYERS)
    return height * np.exp(-0.5 * ((layers - centre) / 1.5) ** 2)


def layer_effects(
    curves: dict[tuple[str, str, int], np.ndarray], model="gpt2-xl", task="factual"
) -> pd.DataFrame:
    rows = []
    for (corr, metric, window), eff in curves.items():
        for layer, e in enumerate(eff):
            rows.append(dict(
                model=model, task=task, corruption=corr, site="mlp", window=window, method="exact",
                component=str(layer), layer=layer, head=-1, position=-1, metric=metric, effect=float(e),
                effect_sd=0.05, n_prompts=50, detected="",
            ))  # fmt: skip
    return pd.DataFrame(rows)


def nm_attention_frame(clean_io=0.6, str_s1=0.58, gn=(0.3, 0.3), str_pt_io=0.55, gn_pt_io=0.3):
    rows = []

    def add(corr, patched, io, s1):
        for tgt, v in (("IO", io), ("S1", s1), ("other", 1 - io - s1)):
            rows.append(dict(model="gpt2", corruption=corr, patched=patched, target=tgt, attention=v))

    add("clean", False, clean_io, 0.1)
    add("str", False, 0.1, str_s1)
    add("gn", False, *gn)
    add("str", True, str_pt_io, 0.1)
    add("gn", True, gn_pt_io, 0.3)
    return pd.DataFrame(rows)


PAPER_METRIC_NAMES = {"Logit difference": "logit_diff", "Probability": "prob", "KL divergence": "kl"}


# Zhang & Nanda, Table 5 (App. H.2): IOI, S2 corrupted. (corruption, metric) -> (negative, positive)
PAPER_TABLE5 = {
    ("STR", "Logit difference"): ("10.7, 11.10", "5.5, 7.9, 8.6, 8.10, 9.9"),
    ("STR", "Probability"): ("10.7", "5.5, 7.9, 8.6, 8.10, 9.9"),
    ("STR", "KL divergence"): ("10.7, 11.10", "5.5, 7.9, 8.6, 8.10, 9.9"),
    ("GN", "Logit difference"): ("10.7, 11.10", "3.0, 5.5, 7.9, 8.6, 8.10, 9.9"),
    ("GN", "Probability"): ("0.10, 10.7, 11.10", "3.0, 5.5, 7.9, 8.6"),
    ("GN", "KL divergence"): ("0.10, 10.7, 11.10", "5.5, 7.9, 8.6"),
}


# Table 3 (App. E): greater-than. (corruption, metric) -> (positive, negative)
PAPER_TABLE3 = {
    ("STR", "Logit difference"): ("6.9, 7.10, 8.11, 9.1, 10.4", ""),
    ("STR", "Probability"): ("7.10, 8.11, 9.1", ""),
    ("STR", "KL divergence"): ("6.9, 7.10, 8.11, 9.1", "10.7"),
    ("GN", "Logit difference"): ("0.9, 7.10, 8.10, 9.1, 10.4", "6.1, 8.6, 9.5"),
    ("GN", "Probability"): ("5.5, 6.1, 6.9, 7.10, 7.11, 8.8, 9.1", ""),
    ("GN", "KL divergence"): ("5.5, 6.1, 6.9, 7.10, 7.11, 8.8, 9.1", "5.9, 7.6"),
}


def parse_heads(cell: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in h.split(".")) for h in cell.split(", ") if h]


def head_effects(model, task, det, n_layers=12, n_heads=12, positions=(-1,), shuffle=True, seed=0):
    """Synthetic effects frame: det[(corruption, metric)] = {"positive": [(l, h, pos)], "negative": [...]}."""
    rng = np.random.default_rng(seed)
    rows = []
    for (corr, metric), signs in det.items():
        pos_set = {tuple(x) for x in signs.get("positive", [])}
        neg_set = {tuple(x) for x in signs.get("negative", [])}
        for layer in range(n_layers):
            for head in range(n_heads):
                for p in positions:
                    key = (layer, head, p)
                    d = "positive" if key in pos_set else "negative" if key in neg_set else ""
                    eff = {"positive": 1.0, "negative": -1.0, "": rng.normal(0, 0.01)}[d]
                    rows.append(dict(
                        model=model, task=task, corruption=corr.lower(), site="attn_head", window=1, method="exact",
                        component=f"{layer}.{head}" + (f"@{p}" if p >= 0 else ""), layer=layer, head=head, position=p,
                        metric=metric, effect=eff, effect_sd=0.1, n_prompts=20, detected=d,
                    ))  # fmt: skip
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True) if shuffle else df


def signed_detections(paper, first, second, pos=-1):
    return {
        (c, PAPER_METRIC_NAMES[m]): {
            first: [(*h, pos) for h in parse_heads(a)],
            second: [(*h, pos) for h in parse_heads(b)],
        }
        for (c, m), (a, b) in paper.items()
    }
