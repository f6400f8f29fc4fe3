"""The bottom of ccrun: pieces every layer may use and that import nothing above them.

  errors.py   the exception hierarchy: every error ccrun raises on purpose carries its exit code
  io.py       atomic writes (temp file + rename), JSON files
  streams.py  named random streams under the recipe's seed (imports jax)
  procs.py    multi-process helpers: which process records, broadcasts (jax only when distributed)

Nothing here imports another `runner` package except `runner.common` itself.
"""
