"""The command line as a user meets it: exit codes, messages, laziness, run directories."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import runner

from .helpers import ROOT, ccrun, ccrun_here

HEAVY = ("jax", "flax", "optax", "orbax", "transformers", "datasets", "torch", "tokenizers", "wandb", "safetensors")


RECIPE_COMMANDS = [
    ["validate", "recipes/apps-1.3b.yaml", "recipes/base/apps-data.yaml"],
    ["resolve", "recipes/code-clippy-125m.yaml"],
    ["diff", "recipes/apps-125m.yaml", "recipes/apps-1.3b.yaml"],
    ["schema", "--check"],
    ["run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", "RUNS"],
]


def test_recipe_commands_import_no_heavy_library(tmp_path):
    """Each command in turn in one fresh process, the heavy libraries loaded so far printed after
    each: none (a command that loaded one shows it on its own line, and every line after)."""
    argvs = [[str(tmp_path) if a == "RUNS" else a for a in argv] for argv in RECIPE_COMMANDS]
    probe = (
        "import sys\n"
        "from runner.cli import main\n"
        f"for argv in {argvs!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"    print('loaded:', argv[0], sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    loaded = [line for line in out.stdout.splitlines() if line.startswith("loaded: ")]
    assert loaded == [f"loaded: {argv[0]} []" for argv in argvs], out.stdout + out.stderr


FRESH_ENTRY = [["validate", "recipes/smoke.yaml", "recipes/base/logging.yaml"], ["validate", "--help"]]


@pytest.mark.parametrize("argv", [
    ["validate", "recipes/smoke.yaml", "recipes/base/logging.yaml"],
    ["validate", "recipes/smoke.yaml", "--set", "train.steps=5", "recipes/apps-125m.yaml"],
    ["validate", "-s", "train.steps=5", "--set=seed=3", "recipes/smoke.yaml"],
    ["validate", "missing.yaml", "recipes"],
    ["validate", "--", "recipes/smoke.yaml"],
    ["validate", "--help"],
    ["validate"],
    ["validate", "--debug", "missing.yaml"],
])
def test_the_console_script_answers_validate_as_the_full_command_line_does(argv):
    """`ccrun` (runner.entry) answers a plain validate without typer; anything else goes to runner.cli.
    Either way: the same output and exit code. The full command line runs in this process (its answer
    is a fresh process's: test_in_process_is_a_fresh_process), and so does the console script but
    for two cases run as a user runs it."""
    if argv in FRESH_ENTRY:
        fast = subprocess.run([sys.executable, "-m", "runner.entry", *argv], cwd=ROOT, capture_output=True, text=True)
    else:
        fast = ccrun_here(*argv, entry=True)
    full = ccrun_here(*argv)
    assert (fast.returncode, fast.stdout, fast.stderr) == (full.returncode, full.stdout, full.stderr)


def test_the_validate_fast_path_imports_no_typer():
    probe = ("import sys\nfrom runner.entry import main\ntry:\n    main(['validate', 'recipes/smoke.yaml'])\n"
             "except SystemExit as e:\n    print(e.code, sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click')))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_validate_reports_ok_recipes_and_fragments():
    out = ccrun_here("validate", "recipes/smoke.yaml", "recipes/base/logging.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok  recipes/smoke.yaml  smoke  ")
    assert lines[1] == "ok  recipes/base/logging.yaml  (fragment: keys and types checked)"


def test_validate_checks_every_file_and_fails_if_any_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    out = ccrun_here("validate", "recipes/smoke.yaml", str(bad))
    assert out.returncode == 2
    assert out.stdout.startswith("ok  recipes/smoke.yaml")
    assert out.stderr == f"{bad}:1:1: model: required\n"


def test_validate_applies_set_to_every_recipe():
    out = ccrun_here("validate", "recipes/smoke.yaml", "--set", "train.steps=5")
    assert out.returncode == 2
    assert out.stderr == "recipes/smoke.yaml:26:64: schedule.warmup_steps: must be <= train.steps (30 > 5)\n"


def test_resolve_prints_canonical_yaml_and_hash():
    out = ccrun_here("resolve", "recipes/apps-125m.yaml", "--set", "train.micro_batch_size=64")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert data["train"]["grad_accum_steps"] == 4 and "extends" not in data
    digest = ccrun_here("resolve", "recipes/apps-125m.yaml", "--hash")
    assert digest.returncode == 0 and len(digest.stdout.strip()) == 64
    assert digest.stdout.strip().startswith(ccrun_here("validate", "recipes/apps-125m.yaml").stdout.split()[3])


def test_resolve_or_raw_never_fails(tmp_path):
    broken = tmp_path / "b.yaml"
    broken.write_text("name: b\nmodel: {arch: nope}\n")
    out = ccrun_here("resolve", str(broken), "--or-raw")
    assert out.returncode == 0
    assert out.stdout.startswith("# ccrun: ") and out.stdout.endswith("name: b\nmodel: {arch: nope}\n")
    assert ccrun_here("resolve", str(broken)).returncode == 2


def test_a_failed_run_keeps_its_directory_and_says_why(tmp_path):
    out = ccrun_here("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path),
                     "--set", "data.sources[0].include=[nothing/*.py]",
                     "--set", "logging.wandb.mode=disabled")  # (an offline W&B run costs 3 s and is not what is tested)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the sources hold no rows" in out.stderr
    (run,) = (tmp_path / "smoke").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "no rows" in summary["error"]
    assert (run / "provenance.json").is_file()


def test_dry_run_creates_a_fresh_run_directory_each_time(tmp_path):
    runs = tmp_path / "runs"
    first = ccrun_here("run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", str(runs), "--set", "train.steps=40")
    second = ccrun_here("recipes/smoke.yaml", "--dry-run", "--runs-dir", str(runs), "--set", "train.steps=40")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    a, b = Path(first.stdout.strip()), Path(second.stdout.strip())
    assert a != b and a.parent == b.parent == runs / "smoke"
    digest = ccrun_here("resolve", "recipes/smoke.yaml", "--hash", "--set", "train.steps=40").stdout.strip()
    assert a.name.endswith(digest[:8]) and len(a.name.split("-")[0]) == 8  # yyyymmdd-HHMMSS-hash8
    assert {p.name for p in a.iterdir()} - {"git.diff"} == {"recipe.yaml", "overrides.yaml", "resolved.yaml",
                                                          "provenance.json", "plan.json"}  # what a launch makes first
    assert json.loads((a / "plan.json").read_text())["steps"] == 40
    assert (a / "recipe.yaml").read_text() == (ROOT / "recipes" / "smoke.yaml").read_text()
    assert yaml.safe_load((a / "overrides.yaml").read_text()) == {"train.steps": 40}
    resolved = yaml.safe_load((a / "resolved.yaml").read_text())
    assert resolved["train"]["steps"] == 40
    prov = json.loads((a / "provenance.json").read_text())
    assert prov["ccrun_version"] == runner.__version__ and prov["recipe_hash"] == digest
    assert prov["command"][-2:] == ["--set", "train.steps=40"]
    assert prov["seeds"] == {"seed": 0} and "XLA_FLAGS" in prov["env"]
    assert prov["packages"]["pydantic"] and prov["python"]["version"]
    assert prov["recipe_files"][0]["path"].endswith("recipes/smoke.yaml")
    if prov["git"] is not None:
        assert len(prov["git"]["sha"] or "") in (0, 40)
        assert (a / "git.diff").exists() == prov["git"]["dirty"]
    # The run directory is itself a recipe source: it resolves to the same hash.
    again = ccrun_here("resolve", str(a / "resolved.yaml"), "--hash")
    assert again.stdout.strip() == digest


def test_fragments_do_not_run(tmp_path):
    out = ccrun_here("run", "recipes/base/apps-data.yaml", "--dry-run", "--runs-dir", str(tmp_path))
    assert out.returncode == 2 and "is a fragment" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["validate", "missing.yaml"], "file not found: missing.yaml"),
        (["validate", "recipes"], "is a directory"),
        (["run", "recipes/smoke.yaml", "--set", "train.stepz=4"], "train.stepz: unknown key (did you mean 'steps'?)"),
        (["run", "recipes/smoke.yaml", "--set", "novalue"], "expected dotted.key=value"),
        (["validate", "--no-such-option", "recipes/smoke.yaml"], "No such option"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_exits_2_without_traceback(argv, needle, tmp_path):
    out = ccrun_here(*argv)
    assert out.returncode == 2, out
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_a_traceback():
    out = ccrun_here("--debug", "validate", "missing.yaml")
    assert out.returncode == 2 and "Traceback" in out.stderr and "file not found" in out.stderr


def test_version():
    out = ccrun_here("--version")
    assert (out.returncode, out.stdout) == (0, f"ccrun {runner.__version__}\n")


def test_two_launches_at_once_make_two_directories(tmp_path):
    import subprocess as sp

    procs = [sp.Popen([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--dry-run", "--runs-dir",
                       str(tmp_path)], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dirs = {out.strip() for out, _ in outs}
    assert len(dirs) == 3 and all(Path(d).parent == tmp_path / "smoke" for d in dirs)
    assert all((Path(d) / "resolved.yaml").is_file() for d in dirs)


@pytest.mark.parametrize("argv", [
    ["validate", "recipes/smoke.yaml", "recipes/base/logging.yaml"],
    ["validate", "recipes/smoke.yaml", "--set", "train.steps=5"],
    ["diff", "recipes/apps-125m.yaml", "recipes/apps-1.3b.yaml"],
    ["eval-samples", "--help"],
    ["--debug", "validate", "missing.yaml"],
    ["frobnicate"],
], ids=" ".join)
def test_in_process_is_a_fresh_process(argv):
    """tests.helpers.ccrun_here (most command tests) answers byte for byte as `ccrun` in a new
    process does: exit code, stdout, stderr (help, click's usage errors, tracebacks, bad input)."""
    fresh, here = ccrun(*argv), ccrun_here(*argv)
    assert (here.returncode, here.stdout, here.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_in_process_restores_what_it_changed(tmp_path):
    import os

    from runner.cli.app import Options

    before = (os.getcwd(), dict(os.environ), sys.argv, sys.stdout, sys.stderr, Options.debug)
    out = ccrun_here("--debug", "validate", "missing.yaml", cwd=tmp_path, env={**os.environ, "CCRUN_PROBE": "1"})
    assert out.returncode == 2 and "Traceback" in out.stderr
    assert (os.getcwd(), dict(os.environ), sys.argv, sys.stdout, sys.stderr, Options.debug) == before
    assert "Traceback" not in ccrun_here("validate", "missing.yaml").stderr  # --debug did not stay on
