"""The toy accuracy table: one row per (model, task), goals from issue 5, and which scores the
workflow's experiments rest on."""

from __future__ import annotations

import json

import pandas as pd

from patchbench.toy.evaluate import GOALS, accuracy_table, markdown_table


def _acc(path, model, scores):
    tasks = {t: {"score": s, "n": 10, "goal": GOALS[t], "met": s >= GOALS[t]} for t, s in scores.items()}
    path.write_text(json.dumps({"model": model, "tasks": tasks}))
    return path


def test_accuracy_table_marks_the_tasks_each_model_is_patched_on(tmp_path):
    files = [
        _acc(tmp_path / "a.json", "toy-a", {"ioi": 0.95, "factual": 0.1}),
        _acc(tmp_path / "b.json", "toy-b", {"ioi": 0.0, "factual": 0.9}),
    ]
    summary = tmp_path / "s.json"
    summary.write_text(json.dumps({"model": "toy-a", "wall_s": 12.34, "final_loss": 1.23456}))
    table = accuracy_table(files, [summary], patched={"toy-a": ["ioi"], "toy-b": ["factual"]})
    rows = {(r.model, r.task): r for r in table.itertuples()}
    assert rows["toy-a", "ioi"].patched and not rows["toy-a", "factual"].patched
    assert rows["toy-b", "factual"].patched and not rows["toy-b", "ioi"].patched
    assert rows["toy-a", "ioi"].met and not rows["toy-b", "ioi"].met
    assert rows["toy-a", "ioi"].train_wall_s == 12.3 and pd.isna(rows["toy-b", "ioi"].train_wall_s)
    assert "patched" not in accuracy_table(files).columns  # no config, no claim about it
    md = markdown_table(table)
    assert md.splitlines()[0].startswith("| model | task |") and md.count("\n") == 2 + len(table)
