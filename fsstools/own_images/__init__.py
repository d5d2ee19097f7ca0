"""Your own images: the engine of ``fsstools.segment`` and ``fsstools segment`` (backbone,
features, a method, result files)."""
