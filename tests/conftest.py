"""Tests never touch the network, and run with the repository as the working directory."""

import os
from pathlib import Path

import pytest

from .helpers import ROOT

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(key, value)


@pytest.fixture
def root() -> Path:
    return ROOT
