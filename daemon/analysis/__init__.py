"""Batch analysis: per-clip assessment and the batch plan (:mod:`.assessment`), colour
statistics, reference choice, matching and LUT baking (:mod:`.grading`)."""
