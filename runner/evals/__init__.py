"""Evaluation: running model-written programs in a sandbox and estimating pass@k.

Public: `Sandbox` and its `Result` (sandbox.py), `pass_at_k` and `aggregate` (passk.py).
"""

from .passk import aggregate, pass_at_k
from .sandbox import OUTCOMES, Result, Sandbox

__all__ = ["OUTCOMES", "Result", "Sandbox", "aggregate", "pass_at_k"]
