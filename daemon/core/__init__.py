"""The base everything else stands on: error types, atomic writes, XDG places and shipped
files, finding and running external tools, the ffprobe probe, and the typed job artifacts.
Imports only :mod:`vs_scripts.plan` and the standard library."""
