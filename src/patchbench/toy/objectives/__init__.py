"""Circuit-imposing objectives of the kinds other than IOI, one module per kind, each with a
``build`` (``patchbench.toy.impose.OBJECTIVES`` dispatches on ``Circuit.kind``; the IOI objective is
``patchbench.toy.impose_ioi``, the row helpers they share ``patchbench.toy.impose_rows``)."""
