"""Fixtures for the model tests."""

import pytest


@pytest.fixture
def save_hf(tmp_path):
    def save(model, name="hf", **kwargs):
        out = tmp_path / name
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        return out

    return save
