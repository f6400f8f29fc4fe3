"""The data stage: sources, SEART filters, identifier-sequence dedup, APPS formatting, packing.

Public: `prepare_data(recipe, out_dir)` (see stage.py), `apps_prompt` (shared with the APPS eval),
`DataError` (bad data input: exit code 2 from the CLI).
"""

from .apps import apps_prompt
from .sources import DataError
from .stage import describe, prepare_data

__all__ = ["DataError", "apps_prompt", "describe", "prepare_data"]
