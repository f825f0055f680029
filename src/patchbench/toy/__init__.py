"""The toy suite: a project-authored corpus, its tokenizer, two small transformers trained by the demo
and the model organisms with a known circuit (TransformerLens's native architecture through
:mod:`patchbench.lm`, weights in HookedTransformer's format).

The vocabulary is data: ``data/toy`` (mirror-shaped JSON, checked by ``tests/test_toy_data.py``).
Modules: ``corpus`` (training documents and held-out combinations), ``tokenizer`` (word-level, GPT-2-like segmentation), ``model``
(building the model, checkpoint format, ``load_toy``), ``train`` (training loop),
``evaluate`` (held-out accuracy per task), ``settings`` (the ``toy:`` config section: the
``ModelSpec`` / ``TrainSpec`` / ``ImposeSpec`` specs and each model's corpus; it imports no torch,
so the corpus and tokenizer jobs start fast). Model organisms (issue #13): ``circuit`` (the
circuit imposed, ``circuit.json``), ``impose`` (the SIIT-style objective that imposes it),
``ablation`` (the classifier + mean-ablation check), ``provenance`` (shipping the trained weights
to ``models/organisms/<name>/`` with ``provenance.json``).
"""
