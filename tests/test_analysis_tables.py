"""Tables 1-5: layout, row order and cell contents from small synthetic effects frames.

The synthetic frames carry the paper's own published detections (Tables 2-5 of Zhang & Nanda), so
a correct table function must print the paper's tables back, cell for cell.
"""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import (
    PAPER_METRIC_NAMES,
    PAPER_TABLE3,
    PAPER_TABLE5,
    head_effects,
    parse_heads,
    signed_detections,
)
from patchbench.analysis.frames import FrameError
from patchbench.analysis.ioi_classes import published_classes
from patchbench.analysis.tables import (
    NOT_RUN,
    constant_position,
    table1,
    table2,
    table3,
    table4,
    table5,
    write_table,
)

# Table 2 (App. D): docstring. (corruption, metric) -> (at C_def, at the last position)
PAPER_TABLE2 = {
    ("STR", "Logit difference"): ("0.0, 0.1, 0.5", "2.3, 3.0, 3.5, 3.6"),
    ("STR", "Probability"): ("", "3.0, 3.6"),
    ("STR", "KL divergence"): ("0.0, 0.1, 0.5, 2.2", "2.3, 3.0, 3.6"),
    ("GN", "Logit difference"): ("0.5", "1.4, 1.5, 2.2, 2.3, 3.0, 3.6, 3.7"),
    ("GN", "Probability"): ("", "3.0, 3.6"),
    ("GN", "KL divergence"): ("", "2.2, 2.3, 3.0, 3.5, 3.6"),
}


def test_table5_reproduces_the_papers_layout_and_cells():
    eff = head_effects("gpt2", "ioi", signed_detections(PAPER_TABLE5, "negative", "positive"))
    t = table5(eff)
    assert list(t.columns) == ["Corruption", "Metric", "Negative heads", "Positive heads"]
    assert list(zip(t["Corruption"], t["Metric"], strict=True)) == list(PAPER_TABLE5)  # paper's row order
    for _, r in t.iterrows():
        assert (r["Negative heads"], r["Positive heads"]) == PAPER_TABLE5[(r["Corruption"], r["Metric"])]


def test_table1_counts_published_classes_found():
    eff = head_effects("gpt2", "ioi", signed_detections(PAPER_TABLE5, "negative", "positive"))
    t = table1(eff, published_classes())
    assert list(t.columns) == ["Corruption", "Metric", "NM", "DT", "SI", "Negative NM", "Induction"]
    assert list(zip(t["Corruption"], t["Metric"], strict=True)) == [
        ("STR", "Probability"), ("GN", "Probability"), ("STR", "Logit difference"),
        ("GN", "Logit difference"), ("STR", "KL divergence"), ("GN", "KL divergence"),
    ]  # fmt: skip
    got = {(r.Corruption, r.Metric): tuple(r[2:]) for _, r in t.iterrows()}
    # Table 5's detections against Wang et al.'s classes (NM 9.6 9.9 10.0; DT 0.1 3.0; SI 7.3 7.9 8.6
    # 8.10; NNM 10.7 11.10; induction 5.5 6.9)
    assert got[("STR", "Probability")] == ("1/3", "0/2", "3/4", "1/2", "1/2")
    assert got[("GN", "Probability")] == ("0/3", "1/2", "2/4", "2/2", "1/2")
    assert got[("STR", "Logit difference")] == ("1/3", "0/2", "3/4", "2/2", "1/2")
    assert got[("GN", "Logit difference")] == ("1/3", "1/2", "3/4", "2/2", "1/2")
    assert got[("GN", "KL divergence")] == ("0/3", "0/2", "2/4", "2/2", "1/2")


def test_missing_sweep_reads_not_run_and_empty_detection_reads_empty():
    det = {("STR", "logit_diff"): {"positive": [(9, 9, -1)]}, ("STR", "prob"): {}}
    t = table3(head_effects("m", "greater_than", det))
    row = t.set_index(["Corruption", "Metric"])
    assert row.loc[("STR", "Logit difference"), "Positive"] == "9.9"
    assert row.loc[("STR", "Probability"), "Positive"] == ""
    assert row.loc[("GN", "KL divergence"), "Positive"] == NOT_RUN
    t1 = table1(head_effects("m", "ioi", det), published_classes())
    assert t1.set_index(["Corruption", "Metric"]).loc[("GN", "Probability"), "NM"] == NOT_RUN


def test_table3_and_table4_layouts():
    eff = head_effects("gpt2", "greater_than", signed_detections(PAPER_TABLE3, "positive", "negative"))
    t = table3(eff)
    assert list(t.columns) == ["Corruption", "Metric", "Positive", "Negative"]
    for _, r in t.iterrows():
        assert (r["Positive"], r["Negative"]) == PAPER_TABLE3[(r["Corruption"], r["Metric"])]
    t4 = table4(
        head_effects(
            "gpt2", "ioi_s1io", {("GN", "prob"): {"positive": [(9, 6, -1), (10, 0, -1), (9, 9, -1)]}}
        )
    )
    assert t4.set_index(["Corruption", "Metric"]).loc[("GN", "Probability"), "Positive"] == "9.6, 9.9, 10.0"
    with pytest.raises(FrameError, match="one model"):
        table4(
            pd.concat(
                [
                    head_effects("a", "ioi_s1io", {("STR", "kl"): {}}),
                    head_effects("b", "ioi_s1io", {("STR", "kl"): {}}),
                ]
            )
        )


def test_table2_splits_docstring_detections_by_position():
    c_def, last = 9, 13
    det = {}
    for (c, m), (at_c, at_last) in PAPER_TABLE2.items():
        det[(c, PAPER_METRIC_NAMES[m])] = {
            "positive": [(*h, c_def) for h in parse_heads(at_c)] + [(*h, last) for h in parse_heads(at_last)],
            "negative": [(1, 1, 4)],  # detected elsewhere: in neither column
        }
    eff = head_effects("attn-only-4l", "docstring", det, n_layers=4, n_heads=8, positions=(4, c_def, last))
    t = table2(eff, c_def_pos=c_def, last_pos=last)
    assert list(t.columns) == ["Corruption", "Metric", "At the position of C_def", "At the last position"]
    for _, r in t.iterrows():
        assert (r.iloc[2], r.iloc[3]) == PAPER_TABLE2[(r["Corruption"], r["Metric"])]
    assert constant_position([9, 9, 9], "C_def") == 9
    assert constant_position([9, 9, 10], "C_def") == 9


def test_write_table_writes_csv_markdown_latex(tmp_path):
    eff = head_effects("gpt2", "ioi", signed_detections(PAPER_TABLE5, "negative", "positive"))
    t = table5(eff)
    outs = write_table(t, [tmp_path / "t5.csv", tmp_path / "t5.md", tmp_path / "t5.tex"], caption="Table 5")
    assert [p.suffix for p in outs] == [".csv", ".md", ".tex"]
    back = pd.read_csv(tmp_path / "t5.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(back, t)
    md = (tmp_path / "t5.md").read_text()
    assert "| Corruption" in md and "0.10, 10.7, 11.10" in md
    tex = (tmp_path / "t5.tex").read_text()
    assert "\\begin{tabular}" in tex and "Negative heads" in tex and "\\caption{Table 5}" in tex
    with pytest.raises(ValueError, match="must end in"):
        write_table(t, [tmp_path / "t5.xlsx"])


def test_tables_carry_every_intervention_after_the_papers_rows():
    """Other corruptions and the noising direction get rows of their own after the paper's (its two
    corruptions, in its order), labelled by the registries (``STR (noising)``, ``Resample``, ``GN(nu=1)``)."""
    det = {
        ("str", "logit_diff"): {"positive": [(9, 9, -1)], "negative": []},
        ("zero_noising", "logit_diff"): {"positive": [(3, 0, -1)], "negative": [(10, 7, -1)]},
        ("resample", "prob"): {"positive": [(5, 5, -1)], "negative": []},
        ("str_noising", "kl"): {"positive": [(8, 6, -1)], "negative": []},
        ("gn@nu=1", "prob"): {"positive": [(7, 9, -1)], "negative": []},
    }
    t = table5(head_effects("gpt2", "ioi", det))
    order = list(dict.fromkeys(t["Corruption"]))
    assert order == ["STR", "GN", "STR (noising)", "GN(nu=1)", "Resample", "Zero (noising)"]
    cell = t.set_index(["Corruption", "Metric"])
    assert cell.loc[("Zero (noising)", "Logit difference"), "Negative heads"] == "10.7"
    assert cell.loc[("Zero (noising)", "Logit difference"), "Positive heads"] == "3.0"
    assert cell.loc[("STR (noising)", "KL divergence"), "Positive heads"] == "8.6"
    assert cell.loc[("GN", "Probability"), "Positive heads"] == NOT_RUN
    assert cell.loc[("Resample", "Probability"), "Positive heads"] == "5.5"
