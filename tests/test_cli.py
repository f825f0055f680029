"""The console script runs a sweep on the workflow's code path and writes raw + effects frames."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import make_model, make_prompts
from patchbench import cli
from patchbench.engine.sweep import run_sweep
from patchbench.metrics import effects
from patchbench.rawframe import read_frame
from patchbench.sites import SweepSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path, monkeypatch):

    model = make_model()
    prompts = make_prompts(model=model)
    path = tmp_path / "ps.parquet"
    prompts.to_parquet(path)
    seen = {}

    def fake_loader(name, dtype="float32", device="auto"):
        seen.update(name=name, dtype=dtype, device=device)
        return model

    monkeypatch.setattr(cli, "load_model_for_cli", fake_loader)
    return model, prompts, path, seen


def test_sweep_command_writes_raw_and_effects(setup, tmp_path):
    model, prompts, path, seen = setup
    raw_p, eff_p = tmp_path / "raw.parquet", tmp_path / "eff.parquet"
    args = f"--prompts {path} --corruption gn --site mlp --window 3 --position X --samples 2 --out {raw_p}"
    rc = cli.main(f"sweep --model tiny-dir {args} --effects {eff_p} --no-progress --device cpu".split())
    assert rc == 0 and seen == {"name": "tiny-dir", "dtype": "float32", "device": "cpu"}
    raw = read_frame(raw_p)
    spec = SweepSpec("gn", "mlp", position="X", window=3, noise=raw.attrs["patchbench"]["spec"]["noise"])
    assert spec.noise.n_samples == 2
    direct = run_sweep(model, prompts, spec, progress=False)
    pd.testing.assert_frame_equal(raw, direct)
    meta = raw.attrs["patchbench"]
    assert meta["model"] == "tiny-dir" and meta["sanity"]["passed"] and meta["spec"]["window"] == 3
    eff = read_frame(eff_p)
    assert set(eff["metric"]) == {"prob", "logit_diff", "kl"}
    assert (eff["component"].str.endswith("@X")).all() and (eff["model"] == "tiny-dir").all()
    mine = effects(raw).set_index(["component", "metric"])["effect"]
    assert (eff.set_index(["component", "metric"])["effect"] - mine).abs().max() == 0
    assert set(eff["detected"]) <= {"positive", "negative", ""}


def test_effects_command(setup, tmp_path):
    _, _, path, _ = setup
    raw_p, eff_p = tmp_path / "raw.parquet", tmp_path / "eff.parquet"
    args = f"--prompts {path} --corruption str --site head_v --heads 1.2,2.0 --out {raw_p} --no-progress"
    assert cli.main(f"sweep --model m {args}".split()) == 0
    assert cli.main(["effects", str(raw_p), "--out", str(eff_p), "--metrics", "prob,stolfo"]) == 0
    eff = read_frame(eff_p)
    assert list(eff["component"].unique()) == ["1.2+2.0"] and set(eff["metric"]) == {"prob", "stolfo"}


def test_errors_are_reported_not_raised(setup, tmp_path, capsys):
    _, _, path, _ = setup
    rc = cli.main(
        f"sweep --model m --prompts {tmp_path}/missing.parquet --corruption str --site mlp --out {tmp_path}/r".split()
    )
    assert rc == 2 and "missing.parquet does not exist" in capsys.readouterr().err
    rc = cli.main(
        f"sweep --model m --prompts {path} --corruption str --site attn_head --window 3 --out {tmp_path}/r".split()
    )
    assert rc == 2 and "only defined for the mlp / attn_out site" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--model", "m"])
