"""The Snakemake report's front page: per experiment its key figure beside its robust and fragile findings.

:func:`summary_rst` turns the facts :func:`patchbench.analysis.robustness_report.write_experiment`
writes per experiment (its JSON file) into the reStructuredText that the Snakefile's ``report:``
shows first. It imports nothing beyond the standard library, so the job that writes it starts fast.

Snakemake shows the workflow description in a narrow column beside the rule graph, vertically
centred (a page taller than the window opens scrolled past its title). The page carries its own
style sheet (:data:`LANDING_CSS`, a raw HTML block Snakemake's report keeps): full width, the rule
graph below, aligned to the top; each experiment is a row of its summary and its key figure,
embedded in the page as a data URI (the report is one self-contained file).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FRONT_PAGE_ITEMS", "LANDING_CSS", "LANDING_ID", "REPORT_HEAD", "summary_rst"]

#: At most this many components per list on the report's front page (the tables hold all).
FRONT_PAGE_ITEMS = 12

#: The head of the report's front page, generated or static (``workflow/report/workflow.rst``):
#: the configured ``report.title`` and ``suite``, filled in by Snakemake's Jinja2 pass when the
#: report is built, so a changed title needs no rerun.
REPORT_HEAD = (
    '{{ snakemake.config["report"]["title"] }}\n' + "=" * 78 + "\n\n"
    'Suite ``{{ snakemake.config["suite"] }}``: the corruption x metric x window grid of Zhang & Nanda,\n'
    "*Towards Best Practices of Activation Patching in Language Models: Metrics and Methods* (ICLR 2024),\n"
    "computed by patchbench.\n"
)


#: The element that marks the landing page, for the style sheet's ``:has()`` selectors and for tests.
LANDING_ID = "pb-landing"
#: The landing page's style: the report's own containers widened and aligned to the top.
LANDING_CSS = f"""
div.overflow-auto:has(#{LANDING_ID}) {{ align-items: flex-start !important; justify-content: flex-start !important; }}
div.items-start:has(> div.py-2 #{LANDING_ID}) {{ flex-wrap: wrap; }}
div.py-2:has(#{LANDING_ID}) {{ flex: 1 1 100%; }}
.prose:has(#{LANDING_ID}) {{ max-width: none !important; }}
.pb-exp {{ display: grid; grid-template-columns: minmax(16rem, 2fr) minmax(20rem, 3fr); gap: 1.5rem; align-items: start; }}
.pb-fig img {{ width: 100%; height: auto; margin: 0; }}
@media (max-width: 900px) {{ .pb-exp {{ grid-template-columns: 1fr; }} }}
"""


def _raw_html(html: str) -> list[str]:
    body = [f"   {line}" if line else "" for line in html.strip().splitlines()]
    return [".. raw:: html", "", *body, ""]


def _rst_literal(text: str) -> str:
    return f"``{text}``"


def _rst_escape(text: str) -> str:
    """Plain text safe in reStructuredText and in the report's Jinja2 pass."""
    out = str(text).replace("\\", "\\\\")
    for ch in "*_|":  # emphasis, references (P_*), substitutions
        out = out.replace(ch, "\\" + ch)
    out = out.replace("`", "'")
    return out.replace("{{", "{ {").replace("{%", "{ %").replace("{#", "{ #")


def _report_link(name: str) -> str:
    """A link to report item ``name`` when this report holds it (Jinja2, rendered by Snakemake), else its name."""
    return f'{{% if "{name}" in report_items %}}`{name}`_{{% else %}}{_rst_literal(name)}{{% endif %}}'


def summary_rst(facts: Sequence[dict], practices: Mapping[str, Any] | None = None) -> str:
    """The Snakemake report's front page: the practice benchmark's verdicts, then each experiment's
    key figure beside its robust and fragile findings.

    ``facts`` are the experiments' JSON files (:func:`write_experiment`), each with ``key_figure``
    (the path of its figure's PNG, read now and embedded) when it has one. ``practices``: the
    practice benchmark's front-page facts (``rows``: recommendation, comparison, pairs, difference,
    verdict; ``verdict_rule``; :func:`patchbench.practices.report.front_page_facts`) with
    ``summary`` (its Markdown summary's path) and ``figures`` (each task's PNG), or None when the
    config's grid has no organism. The page is a Jinja2 template, as Snakemake renders the workflow
    description (``files``: the report's items): the verdict table, robustness figure and practice
    summary are linked when the report holds them (by file name), plain names otherwise (a report
    of a partial DAG). It opens on :data:`REPORT_HEAD`.
    """
    lines = [
        '{% set report_items = files | map(attribute="target") | list %}',
        REPORT_HEAD,
        *_raw_html(f'<style>{LANDING_CSS}</style>\n<div id="{LANDING_ID}"></div>'),
        "Localization robustness of every experiment: which components activation patching detects "
        "whatever the corruption, metric and window (robust), which only under some settings (fragile), "
        "and what Zhang & Nanda (ICLR 2024) advise for this model and task. Intervals and detection "
        "probabilities come from a bootstrap over prompts. The paper's tables and figures are under "
        "Tables and Figures; under Claims, claims.csv checks its statements on the paper's models and "
        "claims_applied.csv on the others (paper claims applied to them).", "",
    ]  # fmt: skip
    if practices:
        lines += _practices_rst(practices)
    if not facts:
        lines += ["No experiment has a robustness report yet: run ``snakemake robustness``.", ""]
    for f in facts:  # in the order given: the config's experiment order
        name = _rst_escape(f"{f['experiment']} on {f['model']}")
        lines += [name, "-" * len(name), ""]
        lines += _raw_html('<div class="pb-exp"><div class="pb-text">')
        lines += [
            f"Task {_rst_literal(f['task'])}, site {_rst_literal(f['site'])}, positions {_rst_literal(f['positions'])}; "
            f"{f['n_prompts']} prompts, {f['n_cells']} cells, {f['n_boot']} resamples.",
            "",
        ]
        robust = f["robust"]
        shown = ", ".join(_rst_literal(c) for c in robust[:FRONT_PAGE_ITEMS])
        more = f" and {len(robust) - FRONT_PAGE_ITEMS} more" if len(robust) > FRONT_PAGE_ITEMS else ""
        lines += [f"**Robust** ({len(robust)}): {shown + more if robust else 'none'}.", ""]
        fragile = f["fragile"]
        lines += [f"**Fragile** ({len(fragile)}){':' if fragile else ': none.'}", ""]
        for item in fragile[:FRONT_PAGE_ITEMS]:
            where = "; ".join(
                f"{k} {item[c]}"
                for k, c in (("detected:", "detected_in"), ("uncertain:", "uncertain_in"))
                if item[c]
            )
            lines.append(f"- {_rst_literal(item['component'])}: {item['verdict']} ({_rst_escape(where)})")
        if len(fragile) > FRONT_PAGE_ITEMS:
            lines.append(f"- and {len(fragile) - FRONT_PAGE_ITEMS} more in the table")
        lines += ["", "**Recommendations**", ""]
        lines += [f"- {_rst_escape(r)}" for r in f["recommendations"]]
        links = [_report_link(f["files"]["verdicts"])]
        if "figure" in f["files"]:
            links.append(_report_link(f["files"]["figure"]))
        lines += ["", "Table and robustness figure: " + ", ".join(links) + ".", ""]
        lines += _raw_html('</div><div class="pb-fig">')
        lines += _key_figure(f.get("key_figure"), f"{f['experiment']} on {f['model']}")
        lines += _raw_html("</div></div>")
    return "\n".join(lines) + "\n"


def _practices_rst(practices: Mapping[str, Any]) -> list[str]:
    """The practice benchmark's section: each comparison's verdict over all organisms, its figures."""
    title = "Which of the paper's recommendations hold against known circuits"
    lines = [title, "-" * len(title), ""]
    lines += [
        "Every practice of the grid (corruption, direction, metric, window, method, detection rule) scored "
        "against the circuits the organisms were built with (circuit.json); each recommendation of the "
        "paper compared on pairs of practices that differ only in what it is about. Difference: "
        "recommended minus advised against, over all organisms, with its 95 % bootstrap interval. "
        + _rst_escape(practices["verdict_rule"]),
        "",
    ]
    if not practices["rows"]:
        lines += ["No comparison has a score defined on these organisms.", ""]
    for r in practices["rows"]:
        lines.append(
            f"- **{_rst_escape(r['verdict'])}**: {_rst_escape(r['recommendation'])}, "
            f"{_rst_escape(r['comparison'])}: {_rst_escape(r['difference'])} ({r['pairs']} pairs)"
        )
    lines += ["", "Per organism, per practice: " + _report_link(Path(practices["summary"]).name) + ".", ""]
    for fig in practices["figures"]:
        lines += _key_figure(
            fig, Path(fig).stem.replace("_", " "), "F1 of every practice against circuit.json"
        )
    return lines


def _key_figure(path: str | None, what: str, shows: str = "the effects of every component") -> list[str]:
    """A figure embedded in the page (a PNG as a data URI), or a line saying there is none."""
    if not path or not Path(path).is_file():
        return [f"No figure for {_rst_escape(what)}.", ""]
    # base64 in lines of 76 (docutils refuses lines over 10000 characters; a URL's line breaks are dropped)
    data = base64.encodebytes(Path(path).read_bytes()).decode("ascii").strip()
    alt = str(what).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return _raw_html(f'<img alt="{alt}: {shows}" src="data:image/png;base64,\n{data}">')
