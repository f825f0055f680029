"""The toy suite: a project-authored corpus, its tokenizer and two small HookedTransformers.

The vocabulary is data: ``data/toy`` (mirror-shaped JSON, checked by ``tests/test_toy_data.py``).
Modules: ``corpus`` (training documents and held-out combinations), ``tokenizer`` (word-level, GPT-2-like segmentation), ``model``
(building the HookedTransformer, checkpoint format, ``load_toy``), ``train`` (training loop),
``evaluate`` (held-out accuracy per task), ``settings`` (the ``toy:`` config section: the
``ModelSpec`` / ``TrainSpec`` specs and each model's corpus; it imports no torch, so the corpus
and tokenizer jobs start fast).
"""
