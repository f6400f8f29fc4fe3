"""`git diff` on recipes shows resolved changes with `ccrun resolve` as a textconv driver (README)."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def test_git_diff_shows_resolved_changes(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "recipes", repo / "recipes")
    git("init", "-q", cwd=repo)
    driver = f"{shlex.quote(sys.executable)} -m runner.cli resolve --relative-to recipes --or-raw"
    git("config", "diff.ccrun.textconv", driver, cwd=repo)
    (repo / ".gitattributes").write_text("recipes/*.yaml diff=ccrun\nrecipes/base/*.yaml diff=ccrun\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "recipes", cwd=repo)

    recipe = repo / "recipes" / "apps-125m.yaml"
    recipe.write_text(recipe.read_text().replace("micro_batch_size: 32 ", "micro_batch_size: 64 "))
    changed = [line for line in git("diff", cwd=repo).splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    # The derived gradient accumulation shows up although nobody wrote it.
    assert changed == [
        "-  micro_batch_size: 32",
        "-  grad_accum_steps: 8",
        "+  micro_batch_size: 64",
        "+  grad_accum_steps: 4",
    ]

    # A fragment (or a broken file) still diffs: as raw text under a comment, never a failed git diff.
    base = repo / "recipes" / "base" / "logging.yaml"
    base.write_text(base.read_text().replace("ccrun-code-clippy", "renamed"))
    out = git("diff", "--", "recipes/base/logging.yaml", cwd=repo)
    assert "+    project: renamed" in out and "# ccrun: " in out
