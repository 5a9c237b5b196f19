"""Preset -> VapourSynth script. Pure rendering (``preset``, ``render``, ``media``) plus the
filter helpers (``filters``) that generated scripts import inside vspipe."""

__version__ = "0.1.0"
