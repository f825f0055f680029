"""The task registry, Parquet round trips and the refusal of broken prompt sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from patchbench.data_sources import MissingDataError
from patchbench.prompts import PromptSet, PromptSetError
from patchbench.tasks import TASKS, build_task, check_task_contract, load_prompts

NAMES = {
    "ioi",
    "ioi_s1io",
    "ioi_abc",
    "greater_than",
    "docstring",
    "arithmetic_add",
    "arithmetic_sub",
    "arithmetic_mul",
    "factual",
}
NAMED = {
    "ioi": {"IO", "S1", "S2", "END"},
    "greater_than": {"YY", "END"},
    "docstring": {"C_def", "END"},
    "arithmetic_add": {"X3", "Y3", "END"},
    "factual": {"subject_first", "subject_last", "END"},
}


@pytest.fixture(scope="module")
def small_sets(gpt2_tokenizer, mirror):
    return {name: build_task(name, gpt2_tokenizer, mirror, n_prompts=12, seed=0) for name in sorted(NAMES)}


def test_registry_names():
    assert set(TASKS) == NAMES
    assert {t.default_n_prompts for n, t in TASKS.items() if n.startswith("ioi")} == {500}
    assert TASKS["greater_than"].default_n_prompts == 300
    assert TASKS["docstring"].default_n_prompts == 200
    with pytest.raises(KeyError, match="registered tasks"):
        build_task("nope", None, ".", 1, 0)


def test_named_positions_and_meta(small_sets):
    for name, ps in small_sets.items():
        assert ps.task == name and len(ps) == 12
        assert NAMED.get(name, set()) <= set(ps.positions)
        assert {"text", "corrupted_text"} <= set(ps.meta.columns)
        assert np.array_equal(ps.answer_pos, ps.positions["END"])
        for i in range(len(ps)):
            # every corruption leaves the tokens outside its key positions unchanged
            # (factual: the partner prompt, compared in test_tasks_factual)
            if name != "factual":
                diff = set(np.flatnonzero(ps.clean[i] != ps.corrupted[i]).tolist())
                assert diff and diff <= set(ps.noise_positions[i].tolist())


def test_parquet_round_trip(small_sets, tmp_path):
    for name, ps in small_sets.items():
        path = tmp_path / f"{name}.parquet"
        ps.to_parquet(path)
        back = load_prompts(path, d_vocab=50257)
        assert back.task == name and back.variant == ps.variant and back.pad_id == ps.pad_id
        pd.testing.assert_frame_equal(back.to_frame(), ps.to_frame(), check_dtype=False)


def _tamper(src: PromptSet, path, column, fn):
    df = src.to_frame()
    df[column] = fn(df[column].copy())
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = pq.read_schema(path).metadata
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_loader_refuses_broken_sets(small_sets, tmp_path):
    ps = small_sets["ioi"]
    path = tmp_path / "broken.parquet"

    def shorten(col):
        col.iloc[3] = col.iloc[3][:-1]
        return col

    ps.to_parquet(path)
    _tamper(ps, path, "corrupted", shorten)
    with pytest.raises(PromptSetError, match=r"ioi\S* prompt 3 .*equal token length"):
        load_prompts(path)

    ps.to_parquet(path)
    _tamper(ps, path, "pos_S2", lambda c: c.where(c.index != 5, 99))
    with pytest.raises(PromptSetError, match=r"prompt 5 .*position S2=99 is outside the prompt"):
        load_prompts(path)

    ps.to_parquet(path)
    _tamper(ps, path, "answers", lambda c: pd.Series([a if i != 7 else a + [262] for i, a in enumerate(c)]))
    with pytest.raises(PromptSetError, match=r"ioi\S* prompt 7 .*one token each; a multi-token answer"):
        load_prompts(path)

    ps.to_parquet(path)
    _tamper(ps, path, "answers", lambda c: pd.Series([a if i != 2 else [60000] for i, a in enumerate(c)]))
    with pytest.raises(PromptSetError, match=r"prompt 2 .*outside the model's vocabulary"):
        load_prompts(path, d_vocab=50257)


def test_contract_allows_answer_sets_only_for_greater_than(small_sets):
    check_task_contract(small_sets["greater_than"])
    assert min(len(a) for a in small_sets["greater_than"].answers) > 1


def test_missing_data_file_names_the_fix(gpt2_tokenizer, tmp_path):
    with pytest.raises(MissingDataError) as err:
        build_task("docstring", gpt2_tokenizer, tmp_path, n_prompts=3, seed=0)
    msg = str(err.value)
    assert "docstring/docstring_words.json" in msg and str(tmp_path) in msg
    assert "snakemake" in msg and "data_dir" in msg and "../shared/data" in msg
