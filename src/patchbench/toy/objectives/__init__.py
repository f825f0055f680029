"""Circuit-imposing objectives, one module per circuit kind (``patchbench.toy.impose.make_objective``
dispatches on ``Circuit.kind``; the IOI objective and the helpers they share live in
``patchbench.toy.impose``)."""
