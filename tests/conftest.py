"""Tests never touch the network, and run with the repository as the working directory.

Speed (the README's test command runs in several processes: pytest-xdist, pyproject's addopts):
- every test file runs whole on one worker, so its module-scoped fixtures are built once; the
  files of tests/serve run on one worker, so the served model is compiled once;
- every process of the session, the test workers and each `ccrun` they start, shares one JAX
  compilation cache (a directory of this session only, so nothing carries over between runs):
  the same tiny step compiled in ten processes is compiled once.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .helpers import ROOT

for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}.items():
    os.environ.setdefault(key, value)


def _session_compilation_cache() -> None:
    """One JAX compilation cache for the whole session (xdist's controller makes it; its workers and
    their subprocesses inherit the environment). Set before anything imports jax."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or os.environ.get("CCRUN_TEST_NO_JAX_CACHE"):
        return
    global _MADE
    _MADE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ccrun-tests-jax-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_MADE = None  # the cache directory this process made (the session's first), removed at its end
_session_compilation_cache()


def pytest_unconfigure(config):
    if _MADE and not hasattr(config, "workerinput"):
        shutil.rmtree(_MADE, ignore_errors=True)


# The longest scopes (`--durations` on 2 cores: tests/serve ~50 s, each of these 15-45 s) go to the
# workers first; handed out in file order, one of them came last and left the other worker idle.
SLOW_FIRST = ("tests/serve/", "tests/model/test_remat.py", "tests/train/test_loop.py", "tests/data/test_stream.py",
              "tests/test_plan.py", "tests/train/test_lora_train.py", "tests/model/test_lora.py",
              "tests/model/test_llama.py", "tests/train/test_mesh.py", "tests/evals/test_sandbox.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, slow in enumerate(SLOW_FIRST) if path.startswith(slow)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: every file keeps its tests' order, and its tests together


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Each test file whole on one worker (its module fixtures built once), and tests/serve whole
    on one (its one served model compiled once). xdist's own `loadgroup` cannot say this under
    pytest 9.2 (it renames node ids, which pytest no longer allows)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/serve" if path.startswith("tests/serve/") else path

    config.option.loadscopereorder = False  # hand scopes out in collection order (SLOW_FIRST), not by test count
    return ByFile(config, log)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def made_run(tmp_path_factory) -> Path:
    """A run directory as `ccrun run recipes/smoke.yaml --dry-run` makes it (copy it before changing it)."""
    from .helpers import ccrun_here

    root = tmp_path_factory.mktemp("made")
    made = ccrun_here("run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", str(root))
    assert made.returncode == 0, made.stderr
    return root / made.stdout.strip()
