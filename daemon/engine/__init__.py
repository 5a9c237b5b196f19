"""The engine: a batch of clips -> verified deliverables (:mod:`.finish`), one clip's stages
(:mod:`.pipeline`), one check of an output (:mod:`.measure` + :mod:`.checks`), sequence
assembly (:mod:`.assemble`), argv builders (:mod:`.commands`), presets and model files, and the
typed job artifacts (:mod:`.artifacts`). Never imports :mod:`daemon.runtime`."""
