"""The data stage: sources, SEART filters, identifier-sequence dedup, APPS formatting, packing.

Public: `prepare_data(recipe, out_dir)` (see stage.py), `apps_prompt` and `read_problems` (shared
with the APPS eval), `DataError` (bad data input, runner.common.errors: exit code 2).
"""

from ..common.errors import DataError
from .apps import apps_prompt, read_problems
from .stage import describe, prepare_data

__all__ = ["DataError", "apps_prompt", "describe", "prepare_data", "read_problems"]
