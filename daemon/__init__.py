"""Everything below the user interfaces, in three parts that depend one way
(``runtime`` -> ``analysis`` -> ``engine``, never back):

* :mod:`daemon.engine`: clip -> verified deliverable. Probing, script planning, encoding,
  muxing, one check of the output (verify + QC), sequence assembly, presets and models, typed
  job artifacts. ``finishline process`` and the daemon's workers both drive it; it knows
  nothing of queues, watchers or the TUI.
* :mod:`daemon.analysis`: batch assessment (noise, blockiness, look) and colour grading (the
  reference look, matches, ``.cube`` LUTs). Used by the engine's batch step.
* :mod:`daemon.runtime`: the hot-folder daemon: config, watcher, intake, the durable SQLite
  queue (and its read-only reader), workers, the service and systemd units, logging.
"""
