"""The pure planning core: preset model, media model, cadence, script rendering. Imports only
the standard library (the import contract in ``.ci/run`` checks)."""
