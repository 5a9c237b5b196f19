"""Preset -> VapourSynth script.

* :mod:`vs_scripts.plan` is pure (standard library only): the preset model and its schema
  (``preset``), the media model (``media``), cadence maths (``cadence``), script planning and
  rendering (``render``) and the error types (``errors``). Unit-tested without VapourSynth.
* :mod:`vs_scripts.runtime` runs inside ``vspipe``: the filter helpers generated scripts import
  (``filters``) and the network definitions (``nets``). Nothing in it writes to stdout, which
  carries the y4m stream.
"""

__version__ = "0.1.0"
