"""Shipping an organism: copy a trained model into the committed directory, with provenance.

``snakemake --cores 2 train_organisms`` trains every organism under ``<results_dir>/models/`` and
then calls :func:`install` to copy each into the shipped directory (``models/organisms/<name>/``),
which the configs load. ``provenance.json`` there records how the weights came to be: the
command, the git commit and whether the tree had uncommitted changes, the seed and settings,
training wall time, thread count and the load average of the (possibly shared) machine, the
machine and library versions, the held-out accuracies, the ablation check, and the sha256 of
every shipped file, so that :func:`verify` (and the tests) can tell whether the weights in the
repository are the ones the record describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from patchbench.toy.settings import ToyModelSettings

__all__ = ["PROVENANCE", "SHIPPED_DIR", "SHIPPED_FILES", "install", "machine", "sha256", "verify"]

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
#: Files of one organism's directory that are shipped (optional ones are copied when present).
SHIPPED_FILES = (
    "config.json",
    "model.safetensors",
    "circuit.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "heldout.json",
    "accuracy.json",
    "train_summary.json",
    "training_curve.csv",
    "ablation.json",
    "checks.json",
)
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "train_summary.json")


def sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


SHIPPED_DIR = "models/organisms"  # where the shipped toy models live, relative to the repository


def _git(args: list[str], cwd: Path) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    """Where the training ran: OS, CPU model, cores, load average, Python / torch / TransformerLens versions."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        tl = version("transformer_lens")
    except Exception:  # noqa: BLE001 - provenance is best effort for the version string only
        tl = ""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "platform": platform.platform(),
        "load_average_1_5_15_min_at_install": load,  # the machine may be shared: wall times depend on it
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": tl,
        "cuda": torch.cuda.is_available(),
    }


def install(
    trained_dir: Path | str,
    extra_files: dict[str, Path | str],
    dest: Path | str,
    settings: ToyModelSettings,
    command: str,
    repo: Path | str,
) -> dict:
    """Copy the trained organism in ``trained_dir`` (plus ``extra_files``: shipped name -> source,
    e.g. the held-out combinations) into ``dest`` and write ``dest/provenance.json``."""
    src, dest, repo = Path(trained_dir), Path(dest), Path(repo)
    missing = [f for f in REQUIRED if not (src / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{src} lacks {missing}; train it first (snakemake --cores 2 train_organisms)"
        )
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    sources = {f: src / f for f in SHIPPED_FILES if (src / f).exists()} | {
        k: Path(v) for k, v in extra_files.items()
    }
    files = {}
    for name, path in sources.items():
        shutil.copyfile(path, dest / name)
        files[name] = sha256(dest / name)
    summary = json.loads((src / "train_summary.json").read_text())

    def optional(name: str) -> Any:
        return json.loads((dest / name).read_text()) if (dest / name).exists() else None

    st = settings
    record = {
        "model": st.name,
        "command": command,
        "commit": _git(["rev-parse", "HEAD"], repo),
        # uncommitted changes to the code and data that made it (the shipped models themselves,
        # rewritten by this install, are not what made it)
        "uncommitted_changes": bool(
            _git(
                ["status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){SHIPPED_DIR}"], repo
            )
        ),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "seed": st.train.seed,
        "threads": st.train.threads,
        "steps": st.train.steps,
        "train_wall_s": round(float(summary["wall_s"]), 1),
        "train_load_average_at_end": summary.get("load_average_at_end"),
        "final_loss": summary.get("final_loss"),
        "final_terms": summary.get("final_terms", {}),
        "architecture": asdict(st.model),
        "training": asdict(st.train),
        "corpus": {
            "n_docs": st.corpus.n_docs,
            "seed": st.corpus.seed,
            "mix": st.corpus.mix,
            "heldout_fraction": st.corpus.heldout_fraction,
            "ioi_answer_p": st.corpus.ioi_answer_p,
        },
        "circuit": st.circuit.to_dict() if st.circuit is not None else None,
        "impose": asdict(st.impose) if st.circuit is not None else None,
        "development": list(st.development),  # what the recipe's development tried before these settings
        "heldout_accuracy": (optional("accuracy.json") or {}).get("tasks"),
        "ablation": optional("ablation.json"),
        "checks": (optional("checks.json") or {}).get("line"),
        "sha256": files,
    }
    (dest / PROVENANCE).write_text(json.dumps(record, indent=1) + "\n")
    log.info(
        "installed %s into %s (commit %s%s)",
        st.name,
        dest,
        record["commit"][:10],
        ", uncommitted changes" if record["uncommitted_changes"] else "",
    )
    return record


def verify(model_dir: Path | str) -> list[str]:
    """Files whose sha256 differs from ``provenance.json`` (empty when everything matches)."""
    model_dir = Path(model_dir)
    record = json.loads((model_dir / PROVENANCE).read_text())
    return [
        f
        for f, digest in record["sha256"].items()
        if not (model_dir / f).exists() or sha256(model_dir / f) != digest
    ]
