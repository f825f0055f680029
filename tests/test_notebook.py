"""The example notebook (examples/own_task.ipynb) runs from a local model and a CSV task to a
robustness summary, executed as a user would with nbclient."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o["output_type"] == "error":
                raise AssertionError(f"{o['ename']}: {o['evalue']}")
            if o["output_type"] == "stream" and o["name"] == "stdout":
                out.append(o["text"])
    return "".join(out)


@pytest.mark.slow
def test_the_example_notebook_runs_to_a_robustness_summary(monkeypatch):
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", path)  # the kernel imports this checkout's package
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(ROOT / "examples" / "own_task.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "examples")}}
    ).execute()
    text = _text(nb)
    assert "24 prompts; named positions: ['END', 'subject', 'subject_first']" in text
    assert "[('str', 1, 240), ('str', 3, 240), ('gn', 1, 240), ('gn', 3, 240)]" in text
    assert "(96, 21)" in text  # 8 layers x 3 metrics x 4 cells, effects columns + intervals
    assert "4@subject" in text and "Recommendations" in text  # its enrichment MLPs 2-4 each carry a third
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
