"""Progress bars in job logs: whole lines, rate-limited, no carriage returns (patchbench.runlog)."""

from __future__ import annotations

import io
import sys

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

from patchbench.runlog import ProgressLines, rule_log


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bar_becomes_lines_at_most_one_per_interval():
    clock, out = Clock(), io.StringIO()
    stream = ProgressLines(out, interval=5.0, clock=clock)
    for _ in tqdm(range(20), file=stream, desc="sweep", mininterval=0):
        clock.now += 1.0  # one step per second: a redraw every second
    stream.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("sweep:   0%")  # the first state at once
    assert lines[-1].startswith("sweep: 100%") and "20/20" in lines[-1]  # the last state always
    # 21 redraws over 20 s: the first, then one per 5 s, then the final one
    assert len(lines) == 6, lines
    assert [int(x.split("/")[0].split("| ")[-1]) for x in lines[:5]] == [0, 5, 10, 15, 20]


def test_a_cleared_bar_leaves_its_last_state_and_other_text_passes_through():
    clock, out = Clock(), io.StringIO()
    stream = ProgressLines(out, interval=100.0, clock=clock)
    bar = tqdm(total=4, file=stream, desc="chunks", leave=False, mininterval=0)
    bar.update(2)
    stream.write("a warning\n")  # interrupts the bar: its own line
    bar.update(2)
    bar.close()  # leave=False clears the line: its last state is kept
    stream.write("done\n")
    stream.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("chunks:   0%")
    assert "a warning" in lines and "done" == lines[-1]
    assert any(x.startswith("chunks: 100%") for x in lines)
    assert not any("a warning" in x and "chunks" in x for x in lines)
    assert "\r" not in out.getvalue()


def test_rule_log_writes_tqdm_auto_bars_and_records_as_lines(tmp_path):
    log_file = tmp_path / "logs" / "job.log"
    with rule_log(log_file) as log:
        log.info("start")
        for _ in auto_tqdm(range(50), desc="targets", mininterval=0):
            pass
        log.info("end")
    assert not isinstance(sys.stderr, ProgressLines)  # restored
    text = log_file.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    bars = [x for x in lines if x.startswith("targets:")]
    assert 1 <= len(bars) <= 3 and bars[-1].startswith("targets: 100%"), lines  # not one per redraw
    assert lines[0].endswith("patchbench: start") and lines[-1].endswith("patchbench: end")


def test_a_final_redraw_already_written_is_not_written_twice():
    clock, out = Clock(), io.StringIO()
    stream = ProgressLines(out, interval=5.0, clock=clock)
    stream.write("\rbar: 0/1")
    clock.now = 10.0
    stream.write("\rbar: 1/1")  # written at once (5 s passed)
    stream.write("\rbar: 1/1")  # tqdm's close redraws it
    stream.write("\n")
    stream.close()
    assert out.getvalue() == "bar: 0/1\nbar: 1/1\n"
