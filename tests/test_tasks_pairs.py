"""A task from a file of prompt pairs (patchbench.tasks.pairs): the rules, checked row by row."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from conftest import ROOT
from patchbench.config import ConfigError, validate_config
from patchbench.preflight import check_workflow_config
from patchbench.prompts import PromptSet
from patchbench.tasks import build_configured, check_task_contract
from patchbench.tasks.pairs import FILE_VARIANT, PromptFileError

CAPITALS = [
    {"clean": "The capital of [[country:France]] is", "corrupted": "The capital of Italy is",
     "answer": "Paris", "wrong": "Rome"},
    {"clean": "The capital of [[country:Germany]] is", "corrupted": "The capital of Spain is",
     "answer": " Berlin", "wrong": "Madrid", "meta_continent": "Europe"},
]  # fmt: skip


@pytest.fixture(scope="module")
def toy_tokenizer():
    from patchbench.toy.tokenizer import load_tokenizer

    return load_tokenizer(ROOT / "models" / "organisms" / "organism-facts")


def test_records_become_a_prompt_set_with_named_positions_and_one_token_answers(gpt2_tokenizer):
    ps = PromptSet.from_records(CAPITALS, gpt2_tokenizer, task="capitals")
    enc = lambda t: gpt2_tokenizer.encode(t)  # noqa: E731
    assert ps.clean[0].tolist() == enc("The capital of France is")
    assert ps.corrupted[1].tolist() == enc("The capital of Spain is")
    # a space separates prompt and answer, whether the file writes it or not
    assert [a.tolist() for a in ps.answers] == [enc(" Paris"), enc(" Berlin")]
    assert [w.tolist() for w in ps.wrong] == [enc(" Rome"), enc(" Madrid")]
    assert ps.positions["country"].tolist() == [3, 3] and ps.positions["country_first"].tolist() == [3, 3]
    assert ps.positions["END"].tolist() == [4, 4] and ps.answer_pos.tolist() == [4, 4]
    assert [n.tolist() for n in ps.noise_positions] == [[3], [3]]  # default: where clean and corrupted differ
    assert ps.meta["continent"].tolist()[1] == "Europe" and ps.meta["text"][0] == "The capital of France is"
    assert ps.variant == FILE_VARIANT
    check_task_contract(ps)


def test_every_problem_is_named_with_its_row_column_and_fix(gpt2_tokenizer):
    bad = copy.deepcopy(CAPITALS) + [
        {"clean": "The capital of [[country:France]] is", "corrupted": "The capital of the Netherlands is",
         "answer": "Paris", "wrong": "Amsterdam"},
        {"clean": "The capital of [[country:Peru]] is", "corrupted": "The capital of Chile is",
         "answer": "Lima Peru", "wrong": "San Jose"},
        {"clean": "The capital of [[country:Peru]] is", "corrupted": "The capital of Chile is",
         "answer": "Lima", "wrong": "Lima"},
    ]  # fmt: skip
    with pytest.raises(PromptFileError) as err:
        PromptSet.from_records(bad, gpt2_tokenizer, task="capitals")
    msg = str(err.value)
    assert msg.startswith("records of task capitals (task capitals, tokenizer ") and "4 problems" in msg
    assert "record 2, column 'corrupted': 6 tokens, the clean prompt 5" in msg
    assert "record 3, column 'answer': ' Lima Peru' after the prompt is 2 tokens" in msg and "Fix:" in msg
    assert "record 3, column 'wrong': ' San Jose' after the prompt is 2 tokens" in msg
    assert "record 4, column 'wrong': [' Lima'] is also an answer" in msg


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"clean": "The capital of [[country:France is"}, "record 0, column 'clean': a marker is not closed"),
        ({"clean": "The capital of [[END:France]] is"}, "marker name 'END' is not allowed"),
        ({"noise_positions": "city"}, "column 'noise_positions': ['city'] are not marked"),
        ({"answer": ""}, "record 0, column 'answer': empty"),
        ({"anwser": "x"}, "record 0: unknown column(s) ['anwser']"),
        ({"answer": "Paris|Paris"}, "names an alternative twice"),
        ({"corrupted": "The capital of France is"}, "the same tokens as the clean prompt"),
    ],
)
def test_a_broken_record_is_refused(gpt2_tokenizer, change, expected):
    records = copy.deepcopy(CAPITALS)
    records[0].update(change)
    with pytest.raises(PromptFileError, match="Fix") as err:
        PromptSet.from_records(records, gpt2_tokenizer)
    assert expected in str(err.value)


def test_rows_must_mark_the_same_names_and_words_must_be_known(gpt2_tokenizer, toy_tokenizer):
    records = copy.deepcopy(CAPITALS)
    records[1]["clean"] = "The capital of Germany is"
    with pytest.raises(PromptFileError, match="record 1, column 'clean': marks \\[\\], record 0 marks"):
        PromptSet.from_records(records, gpt2_tokenizer)
    with pytest.raises(PromptFileError, match="holds words the tokenizer does not know"):
        PromptSet.from_records(CAPITALS, toy_tokenizer)


def test_a_jsonl_file_may_list_alternatives_and_prepend_bos(tmp_path, gpt2_tokenizer):
    path = tmp_path / "years.jsonl"
    lines = [
        {"clean": "The war lasted from 1732 to 17", "corrupted": "The war lasted from 1701 to 17",
         "answer": ["40", "50"], "wrong": ["10", "20"], "noise_positions": []},
        {"clean": "The war lasted from 1762 to 17", "corrupted": "The war lasted from 1701 to 17",
         "answer": ["70", "80"], "wrong": ["50"]},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ps = PromptSet.from_file(path, gpt2_tokenizer, prepend_bos=True, answer_separator="")
    assert ps.task == "years" and len(ps) == 2
    assert ps.clean[0][0] == gpt2_tokenizer.eos_token_id and ps.answer_pos[0] == len(ps.clean[0]) - 1
    assert [len(a) for a in ps.answers] == [2, 2] and [len(w) for w in ps.wrong] == [2, 1]
    assert ps.answers[0].tolist() == [gpt2_tokenizer.encode("40")[0], gpt2_tokenizer.encode("50")[0]]
    check_task_contract(ps)  # alternatives of a file's task pass the single-answer rule
    path.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(PromptFileError, match="years.jsonl, line 2: not valid JSON"):
        PromptSet.from_file(path, gpt2_tokenizer)


# ----------------------------------------------------------------------------- in a config
def _config(file: str = "examples/countries.csv", **task) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["models"] = {"organism-facts": cfg["models"]["organism-facts"]}
    cfg["tasks"] = {"factual": {"n_prompts": 20}, "countries": {"file": file, **task}}
    cfg["experiments"] = {
        "factual_mlp": dict(task="factual", models=["organism-facts"], site="mlp", position="subject_last"),
        "countries_mlp": dict(task="countries", models=["organism-facts"], site="mlp", position="subject"),
    }
    return cfg


def test_a_file_task_sits_beside_a_built_in_task(monkeypatch, toy_tokenizer):
    monkeypatch.chdir(ROOT)
    cfg = _config()
    cells = check_workflow_config(cfg)
    assert {c.task for cs in cells.values() for c in cs} == {"factual", "countries"}
    ps = build_configured("countries", cfg["tasks"]["countries"], toy_tokenizer, cfg["data_dir"])
    assert (
        len(ps) == 24 and ps.task == "countries" and set(ps.positions) == {"END", "subject", "subject_first"}
    )
    cfg = _config(n_prompts=6)
    check_workflow_config(cfg)
    assert len(build_configured("countries", cfg["tasks"]["countries"], toy_tokenizer, cfg["data_dir"])) == 6


def test_task_names_file_and_rows_are_checked_before_any_job(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cfg = _config()
    cfg["tasks"]["capitals"] = {"n_prompts": 5}
    with pytest.raises(
        ConfigError, match="'capitals' is not a built-in task .*Fix: to read your own prompt pairs"
    ):
        validate_config(cfg)
    cfg = _config()
    cfg["tasks"]["factual"] = {"file": "examples/countries.csv"}
    with pytest.raises(ConfigError, match="may not take the built-in task's name 'factual'"):
        validate_config(cfg)
    with pytest.raises(PromptFileError, match="n_prompts is 30 but the file has 24 rows"):
        check_workflow_config(_config(n_prompts=30))
    with pytest.raises(ConfigError, match="takes the options"):
        check_workflow_config(_config(options={"max_n": 3}))
    bad = tmp_path / "bad.csv"
    text = (ROOT / "examples" / "countries.csv").read_text().splitlines()
    text[3] = text[3].replace(",Quillon,", ",Quillon Merrow,").replace(",Odrava,", ",Odrava Vell,")
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(PromptFileError) as err:
        check_workflow_config(_config(file=str(bad)))
    msg = str(err.value)
    assert (
        "(task countries, tokenizer " in msg
        and "row 3, column 'answer'" in msg
        and "row 3, column 'wrong'" in msg
    )
    with pytest.raises(FileNotFoundError, match="prompt-pair file nowhere.csv: does not exist"):
        check_workflow_config(_config(file="nowhere.csv"))


def test_the_cli_sweeps_a_csv_file_and_names_the_model_by_its_directory(tmp_path, monkeypatch):
    from patchbench import cli
    from patchbench.rawframe import read_frame

    monkeypatch.chdir(ROOT)
    raw = tmp_path / "raw.parquet"
    args = "sweep --model models/organisms/organism-facts --prompts examples/countries.csv --corruption str"
    args += f" --site mlp --position subject --layers 3 --device cpu --no-progress --out {raw}"
    assert cli.main(args.split()) == 0
    frame = read_frame(raw)
    meta = frame.attrs["patchbench"]
    assert (
        meta["model"] == "organism-facts" and meta["task"] == "countries" and frame["prompt"].nunique() == 24
    )
    assert cli.main([*args.split(), "--name", "my-facts"]) == 0
    assert read_frame(raw).attrs["patchbench"]["model"] == "my-facts"
