"""What a run will cost, before it runs: FLOPs, seconds and memory of the workflow's jobs.

One module per concept (import them directly; this package imports nothing eagerly):

===========  ==========================================================================================
``work``     the work of a sweep counted from the engine's own plan (FLOPs exactly as torch counts them)
``rates``    a device's rates and the time model (:class:`~patchbench.cost.rates.DeviceRate`)
``measure``  measuring a device's rates with the engine's own pieces
``device``   rates measured once and cached per machine, or a datasheet GPU's published figures
``shapes``   a config's model as a shape, without loading its weights
``jobs``     the workflow's model-loading jobs of a config and their predictions
``cluster``  cluster requests from the estimate, and the partition-limit check
``report``   ``patchbench estimate``
===========  ==========================================================================================
"""
