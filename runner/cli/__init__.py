"""ccrun's command line: one small module per group of commands, each parsing its arguments and
calling the library; errors leave through one place (`app.main`).

  app.py      the typer app, shared options, `main` (argv sugar, the one error path)
  recipes.py  validate, resolve, diff, schema
  runs.py     run, resume, reproduce;  launch.py  launch (Slurm through submitit)
  evals.py    eval, eval-samples
  compare.py  compare;  data.py  data;  serve.py  serve
  manage.py   runs, init, export (runner.export)

Heavy libraries (jax, flax, transformers, datasets) are imported only inside the commands that
need them, so `ccrun validate` stays instant.
"""

# Each module registers its commands; imported in the order `ccrun --help` lists them.
from . import recipes, runs, launch, compare, data, evals, serve, manage  # noqa: F401, I001
from .app import app, main

__all__ = ["app", "main"]
