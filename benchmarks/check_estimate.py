"""Predicted against measured sweep times of a workflow run: the cost model's check on the demo.

Every exact sweep cell logs, before it runs, its predicted time (:mod:`patchbench.cost`, from this
machine's cached rates) and, after it, its measured time (``cost: predicted X s, measured Y s``
in ``results/logs/sweeps/...``). This script reads those lines of every cell of a config (the last
run of each), sums them per sweep job (one per experiment and model), and prints the table with
the ratios and the two checks: the predicted sum of sweep times within +-30 % of the measured sum,
and every job within a factor of 2.

On a quiet machine (nothing else running; the rates and the run must not share the CPUs)::

    patchbench estimate --configfile config/demo.yaml --measure     # this machine's rates, cached
    python benchmarks/check_estimate.py --configfile config/demo.yaml --run

``--run`` runs the config's sweep jobs again first (``snakemake --forcerun`` of the sweep rules,
building whatever they need); without it the logs of the last run are read.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"cost: predicted ([0-9.]+) s, measured ([0-9.]+) s")


def last_pair(log: Path) -> tuple[float, float] | None:
    """The last (predicted, measured) pair a cell's log holds, or None."""
    if not log.is_file():
        return None
    found = LINE.findall(log.read_text())
    return (float(found[-1][0]), float(found[-1][1])) if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/demo.yaml")
    ap.add_argument("--run", action="store_true", help="run the sweep jobs again first")
    ap.add_argument("--cores", type=int, default=2, help="--run: snakemake --cores (the demo's: 2)")
    ap.add_argument("--cells", action="store_true", help="also print every cell")
    args = ap.parse_args(argv)

    from patchbench.cell import cells_of
    from patchbench.cost.report import load_configs

    config = load_configs([args.configfile])
    cells = cells_of(config)
    if args.run:
        rules = [f"sweep_{name}" for name in cells]
        targets = [c.raw_path for cs in cells.values() for c in cs]
        cmd = ["snakemake", "--cores", str(args.cores), "--configfile", args.configfile, "--forcerun", *rules]
        print(
            "running:",
            " ".join(cmd[:6]),
            f"--forcerun <{len(rules)} sweep rules> <{len(targets)} sweep files>",
        )
        subprocess.run([*cmd, "--", *targets], check=True)

    jobs: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    missing = []
    for name, cs in cells.items():
        for c in cs:
            pair = last_pair(Path(c.log_path))
            if pair is None:
                missing.append(c.log_path)
            else:
                jobs[f"sweep_{name} {c.model}"].append((c.label, *pair))
    if missing:
        print(f"no 'cost: predicted ... measured ...' line in {len(missing)} log(s), e.g. {missing[0]}: run the "
              "sweeps (--run) after caching this machine's rates (patchbench estimate --measure)")  # fmt: skip
        if not jobs:
            return 1
    print(f"{'sweep job':<42} {'cells':>5} {'predicted s':>12} {'measured s':>11} {'measured/predicted':>19}")
    worst = 1.0
    for job, rows in jobs.items():
        p, m = sum(r[1] for r in rows), sum(r[2] for r in rows)
        worst = max(worst, m / p, p / m)
        print(f"{job:<42} {len(rows):>5} {p:>12.2f} {m:>11.2f} {m / p:>19.2f}")
        for label, pc, mc in rows if args.cells else ():
            print(f"    {label:<50} {pc:>8.2f} {mc:>11.2f} {mc / pc:>19.2f}")
    p = sum(r[1] for rows in jobs.values() for r in rows)
    m = sum(r[2] for rows in jobs.values() for r in rows)
    print(f"{'all sweep jobs':<42} {sum(map(len, jobs.values())):>5} {p:>12.2f} {m:>11.2f} {m / p:>19.2f}")
    total_ok = abs(p - m) <= 0.3 * m
    print(f"sum within +-30 % of measured: {'yes' if total_ok else 'NO'} ({100 * (p - m) / m:+.0f} %); "
          f"every job within a factor 2: {'yes' if worst <= 2 else 'NO'} (worst {worst:.2f}x)")  # fmt: skip
    return 0 if total_ok and worst <= 2 and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
