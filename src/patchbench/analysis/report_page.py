"""The Snakemake report's front page: every experiment's robust and fragile findings, with links.

:func:`summary_rst` turns the facts :func:`patchbench.analysis.robustness_report.write_experiment`
writes per experiment (its JSON file) into the reStructuredText that the Snakefile's ``report:``
shows first. It imports nothing beyond the standard library, so the job that writes it starts fast.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FRONT_PAGE_ITEMS", "REPORT_HEAD", "summary_rst"]

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


def summary_rst(facts: Sequence[dict]) -> str:
    """The Snakemake report's front page: each experiment's robust and fragile findings, with links.

    ``facts`` are the experiments' JSON files (:func:`write_experiment`). The page is a Jinja2
    template, as Snakemake renders the workflow description (``files``: the report's items): links
    to the verdict table and the figure (report items, by file name) appear when the report holds
    them, plain names otherwise (a report of a partial DAG). It opens on :data:`REPORT_HEAD`.
    """
    lines = [
        '{% set report_items = files | map(attribute="target") | list %}',
        REPORT_HEAD,
        "Localization robustness of every experiment: which components activation patching detects "
        "whatever the corruption, metric and window (robust), which only under some settings (fragile), "
        "and what Zhang & Nanda (ICLR 2024) advise for this model and task. Intervals and detection "
        "probabilities come from a bootstrap over prompts. The paper's tables and figures are under "
        "Tables and Figures; claims.csv checks its statements on this run.", "",
    ]  # fmt: skip
    if not facts:
        lines += ["No experiment has a robustness report yet: run ``snakemake robustness``.", ""]
    for f in facts:  # in the order given: the config's experiment order
        name = _rst_escape(f"{f['experiment']} on {f['model']}")
        lines += [name, "-" * len(name), ""]
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
        lines += ["", "Table and figure: " + ", ".join(links) + ".", ""]
    return "\n".join(lines) + "\n"
