"""Data acquisition: ast extraction, byte-exact derivations, checksums, offline errors, rules."""

from __future__ import annotations

import json
import os
import re

import pytest

from conftest import snakemake
from patchbench import upstream as ds
from patchbench.data_sources import MissingDataError, require_data_file
from patchbench.upstream import SOURCES, ChecksumError, extract_assignments, fetch_source, sha256_bytes


def test_extract_assignments_reads_literals_without_running_code(tmp_path):
    sentinel = tmp_path / "ran"
    src = (
        "import pathlib\n"
        f"pathlib.Path({str(sentinel)!r}).write_text('x')\n"
        "NAMES = ['Mary', 'John']\n"
        "WORDS = 'a b  c'.split(' ')\n"
        "NAMES = NAMES + ['late']\n"  # not a literal: refused
        "def f():\n    inner = [1, 2]\n"
    )
    with pytest.raises(ValueError):
        extract_assignments(src, ["NAMES"])
    got = extract_assignments(src.replace("NAMES = NAMES + ['late']\n", ""), ["NAMES", "WORDS"])
    assert got == {"NAMES": ["Mary", "John"], "WORDS": ["a", "b", "", "c"]}
    assert extract_assignments(src, ["inner"], scope="f") == {"inner": [1, 2]}
    with pytest.raises(KeyError, match="MISSING"):
        extract_assignments(src, ["MISSING"], scope="f")
    assert not sentinel.exists()


def test_abba_rule_reproduces_the_mirror(mirror):
    v = json.loads((mirror / "ioi" / "ioi_vocab.json").read_text())
    assert ds._abba_from_baba(v["baba_templates"]) == v["abba_templates"]
    assert ds._abba_from_baba(v["baba_late_ios"]) == v["abba_late_ios"]
    assert ds._abba_from_baba(v["baba_early_ios"]) == v["abba_early_ios"]


def _fake_upstream(mirror):
    """Upstream-shaped sources rebuilt from the mirror's lists (the real ones need the network)."""
    v = json.loads((mirror / "ioi" / "ioi_vocab.json").read_text())
    keys = {
        "NAMES": "names",
        "PLACES": "places",
        "OBJECTS": "objects",
        "ABC_TEMPLATES": "abc_templates",
        "BABA_TEMPLATES": "baba_templates",
        "BABA_LONG_TEMPLATES": "baba_long_templates",
        "BABA_LATE_IOS": "baba_late_ios",
        "BABA_EARLY_IOS": "baba_early_ios",
        "VERBS": "verbs",
        "ANIMALS": "animals",
        "PREFIXES": "prefixes",
    }
    ioi = (
        "import random\n"
        + "".join(f"{k} = {v[j]!r}\n" for k, j in keys.items())
        + "ABBA_TEMPLATES = BABA_TEMPLATES[:]\n"
    )
    nouns = json.loads((mirror / "greater-than" / "greaterthan_nouns.json").read_text())["nouns"]
    d = json.loads((mirror / "docstring" / "docstring_words.json").read_text())
    doc = f'variable_names = {" ".join(d["variable_names"])!r}.split(" ")\ncommon_single_token_nouns = {d["common_single_token_nouns"]!r}\n'
    a = json.loads((mirror / "arithmetic" / "arithmetic_templates.json").read_text())
    t = a["templates"]
    arith = (
        "def get_arithmetic_data_two_operands(tokenizer, args):\n"
        f"    addition_templates = {t['+']!r}\n    subtraction_templates = {t['-']!r}\n"
        f"    multiplication_templates = {t['*']!r}\n    division_templates = {t['/']!r}\n"
        f"    operator_word_indices = {a['operator_word_indices']!r}\n    return []\n"
    )
    return {
        "ioi_dataset.py": ioi.encode(),
        "utils.py": f"NOUNS = {nouns!r}\n".encode(),
        "prompts.py": doc.encode(),
        "intervention.py": arith.encode(),
        "vocab.json": (mirror / "gpt2-tokenizer" / "vocab.json").read_bytes(),
        "merges.txt": (mirror / "gpt2-tokenizer" / "merges.txt").read_bytes(),
    }


@pytest.mark.parametrize("relpath", sorted(SOURCES))
def test_every_source_derives_the_mirror_bytes(mirror, relpath):
    src = SOURCES[relpath]
    raw = _fake_upstream(mirror)
    for up in src.upstream:
        if up.name not in raw:  # verbatim files: the mirror's bytes are the upstream bytes
            raw[up.name] = (mirror / relpath).read_bytes()
        if up.sha256 is not None:
            assert sha256_bytes(raw[up.name]) == up.sha256
    out = src.derive(raw)
    assert out == (mirror / relpath).read_bytes()
    assert sha256_bytes(out) == src.sha256


def test_fetch_source_checks_both_checksums(mirror, tmp_path):
    body = (mirror / "rome" / "known_1000.json").read_bytes()
    urls = []

    def fetch(url):
        urls.append(url)
        return body

    out = fetch_source("rome/known_1000.json", tmp_path / "rome" / "known_1000.json", fetch=fetch)
    assert out.read_bytes() == body and urls == ["https://rome.baulab.info/data/dsets/known_1000.json"]
    with pytest.raises(ChecksumError, match="sha256"):
        fetch_source("rome/known_1000.json", tmp_path / "bad.json", fetch=lambda url: body + b" ")
    assert not (tmp_path / "bad.json").exists()
    # a derived file whose upstream changed is refused too
    raw = _fake_upstream(mirror)
    changed = raw["utils.py"].replace(b"abduction", b"abductions")
    with pytest.raises(ChecksumError, match="derived content"):
        fetch_source("greater-than/greaterthan_nouns.json", tmp_path / "n.json", fetch=lambda url: changed)


def test_urls_are_pinned_to_commits():
    for src in SOURCES.values():
        for up in src.upstream:
            assert up.url.startswith("https://")
            if "githubusercontent" in up.url:
                assert re.search(r"/[0-9a-f]{40}/", up.url), up.url


def test_missing_file_offline_error_names_both_ways(tmp_path):
    with pytest.raises(MissingDataError) as err:
        require_data_file(tmp_path, "rome/known_1000.json")
    msg = str(err.value)
    assert str(tmp_path / "rome" / "known_1000.json") in msg
    assert "data_rome_known_1000" in msg and "snakemake" in msg  # online: the data rule
    assert "data_dir" in msg and "../shared/data" in msg  # offline: a mirror directory
    assert require_data_file(tmp_path.parent, tmp_path.name) == tmp_path


def test_data_rules_match_the_sources(root, tmp_path):
    """The generated data rules: one per source, each writing exactly its mirror file, with a log."""
    res = snakemake("-n", "--config", f"data_mirror={tmp_path}", "--", "data_mirror", cwd=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rules = {}
    for name, output, log in re.findall(
        r"^rule (data_\w+):\n\s+output: (\S+)\n\s+log: (\S+)", res.stdout, flags=re.M
    ):
        relpath = os.path.relpath(output, tmp_path)
        rules[name] = relpath
        assert (
            f"python -m patchbench.upstream {relpath} {output} > {log}" in res.stdout
        )  # writes exactly that file
    assert rules == {s.rule: s.relpath for s in SOURCES.values()}
