"""§3.2 name-mover attention and S-inhibition value recovery for one model (rule ``nm_attention``)."""

import pandas as pd

from patchbench.analysis.ioi_classes import read_classes
from patchbench.analysis.nm_attention import ATTENTION_COLUMNS, RECOVERY_COLUMNS, nm_attention_frames
from patchbench.corruption import NoiseSpec
from patchbench.models import load_model
from patchbench.prompts import PromptSet
from patchbench.rawframe import metadata, write_frame
from patchbench.runlog import rule_log
from patchbench.staleness import record

sm = snakemake  # noqa: F821  (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    spec = sm.params.model
    classes = read_classes(sm.input.classes)
    nm, si = (
        [(int(la), int(h)) for la, h in classes.loc[classes["class"] == c, ["layer", "head"]].to_numpy()]
        for c in ("name_mover", "s_inhibition")
    )
    log.info("name movers %s, S-inhibition heads %s", nm, si)
    if not nm:
        log.warning("%s has no name-mover heads: writing empty §3.2 frames", spec.name)
        att, rec = pd.DataFrame(columns=list(ATTENTION_COLUMNS)), pd.DataFrame(columns=list(RECOVERY_COLUMNS))
    else:
        model = load_model(spec)
        prompts = PromptSet.from_parquet(sm.input.prompts, d_vocab=model.shape.d_vocab)
        noise = NoiseSpec(**sm.params.noise)
        att, rec = nm_attention_frames(model, prompts, spec.name, nm_heads=nm, si_heads=si, noise=noise)
    for frame in (att, rec):
        frame.attrs["patchbench"] = record(metadata(frame), sm.params.fingerprint)
    write_frame(att, sm.output.attention)
    write_frame(rec, sm.output.recovery)
    log.info("attention:\n%s\nrecovery:\n%s", att.to_string(index=False), rec.to_string(index=False))
