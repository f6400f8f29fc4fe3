"""The command line as a user meets it: exit codes, messages, laziness, run directories."""

import json
import sysconfig
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import runner

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "flax", "optax", "orbax", "transformers", "datasets", "torch", "tokenizers", "wandb", "safetensors")


def ccrun(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "recipes/apps-1.3b.yaml", "recipes/base/apps-data.yaml"],
        ["resolve", "recipes/code-clippy-125m.yaml"],
        ["diff", "recipes/apps-125m.yaml", "recipes/apps-1.3b.yaml"],
        ["schema", "--check"],
        ["run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", "RUNS"],
    ],
    ids=lambda a: a[0],
)
def test_recipe_commands_import_no_heavy_library(argv, tmp_path):
    argv = [str(tmp_path) if a == "RUNS" else a for a in argv]
    probe = (
        "import sys\n"
        "from runner.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


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
    Either way: the same output and exit code."""
    fast = subprocess.run([sys.executable, "-m", "runner.entry", *argv], cwd=ROOT, capture_output=True, text=True)
    full = ccrun(*argv)
    assert (fast.returncode, fast.stdout, fast.stderr) == (full.returncode, full.stdout, full.stderr)


def test_the_validate_fast_path_imports_no_typer():
    probe = ("import sys\nfrom runner.entry import main\ntry:\n    main(['validate', 'recipes/smoke.yaml'])\n"
             "except SystemExit as e:\n    print(e.code, sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click')))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "0 []", out.stdout + out.stderr


def test_validate_reports_ok_recipes_and_fragments():
    out = ccrun("validate", "recipes/smoke.yaml", "recipes/base/logging.yaml")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok  recipes/smoke.yaml  smoke  ")
    assert lines[1] == "ok  recipes/base/logging.yaml  (fragment: keys and types checked)"


def test_validate_checks_every_file_and_fails_if_any_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    out = ccrun("validate", "recipes/smoke.yaml", str(bad))
    assert out.returncode == 2
    assert out.stdout.startswith("ok  recipes/smoke.yaml")
    assert out.stderr == f"{bad}:1:1: model: required\n"


def test_validate_applies_set_to_every_recipe():
    out = ccrun("validate", "recipes/smoke.yaml", "--set", "train.steps=5")
    assert out.returncode == 2
    assert out.stderr == "recipes/smoke.yaml:25:64: schedule.warmup_steps: must be <= train.steps (30 > 5)\n"


def test_resolve_prints_canonical_yaml_and_hash():
    out = ccrun("resolve", "recipes/apps-125m.yaml", "--set", "train.micro_batch_size=64")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert data["train"]["grad_accum_steps"] == 4 and "extends" not in data
    digest = ccrun("resolve", "recipes/apps-125m.yaml", "--hash")
    assert digest.returncode == 0 and len(digest.stdout.strip()) == 64
    assert digest.stdout.strip().startswith(ccrun("validate", "recipes/apps-125m.yaml").stdout.split()[3])


def test_resolve_or_raw_never_fails(tmp_path):
    broken = tmp_path / "b.yaml"
    broken.write_text("name: b\nmodel: {arch: nope}\n")
    out = ccrun("resolve", str(broken), "--or-raw")
    assert out.returncode == 0
    assert out.stdout.startswith("# ccrun: ") and out.stdout.endswith("name: b\nmodel: {arch: nope}\n")
    assert ccrun("resolve", str(broken)).returncode == 2


def test_smoke_recipe_runs_end_to_end(tmp_path):
    """`ccrun RECIPE` (short for `ccrun run RECIPE`): data → model → train → evals → final/."""
    transformers = pytest.importorskip("transformers")
    out = ccrun("recipes/smoke.yaml", "--runs-dir", str(tmp_path), "--set", "train.steps=60",
                "--set", "schedule.decay_steps=40", "--set", "evals[1].limit=2", "--set", "evals[1].sampling[0].n_samples=2",
                "--set", "evals[1].sampling[0].k=[1, 2]", "--set", "evals[2].sampling=[{temperature: 0.0, k: [1]}]",
                "--set", "evals[2].max_new_tokens=32")
    assert out.returncode == 0, out.stderr[-3000:]
    run = Path(out.stdout.strip())
    assert run.parent == tmp_path / "smoke"
    for name in ("recipe.yaml", "overrides.yaml", "resolved.yaml", "provenance.json", "metrics.jsonl", "summary.json",
                 "data/manifest.json", "final/config.json", "final/model.safetensors", "final/tokenizer.json",
                 "plots/loss.png", "plots/lr.png",
                 "eval/loss/results.json", "eval/humaneval/samples.jsonl", "eval/humaneval/results.json",
                 "eval/apps/samples.jsonl", "eval/apps/results.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "60").is_dir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["results"]["train"]["steps"] == 60
    devices = json.loads((run / "provenance.json").read_text())["devices"]
    assert devices and devices[0]["platform"] == "cpu"
    losses = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in line]
    assert losses[-1] < losses[0]
    for stage in ("data: dedup (variables)", "model: gpt-neo scratch", "train: 60 steps", "eval humaneval: pass@1",
                  "eval apps: pass@1"):
        assert stage in out.stderr
    manifest = json.loads((run / "data" / "manifest.json").read_text())  # the corpus: this Python's stdlib
    assert manifest["documents"]["sources"][0]["root"] == sysconfig.get_paths()["stdlib"]
    assert set(summary["results"]["apps"]) == {"1"}
    (wandb_dir,) = run.glob("wandb/offline-run-*")  # W&B offline: recipe hash, metrics, eval tables, recipe artifact
    log = next(wandb_dir.glob("run-*.wandb")).read_bytes()
    assert summary["recipe_hash"].encode() in log and b"train/loss" in log
    assert b"recipe-smoke" in log and b"recipe/smoke.yaml" in log and b"resolved.yaml" in log
    for name in ("humaneval", "apps"):
        (table,) = wandb_dir.glob(f"files/media/table/eval/{name}/samples_*.table.json")
        table = json.loads(table.read_text())
        samples = (run / "eval" / name / "samples.jsonl").read_text().splitlines()
        assert len(table["data"]) == len(samples) and "completion" in table["columns"]
    assert (run / "wandb_id").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(run / "final")  # the export loads in PyTorch
    assert model.config.n_layer == 2 if hasattr(model.config, "n_layer") else model.config.num_layers == 2


def test_a_failed_run_keeps_its_directory_and_says_why(tmp_path):
    out = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), "--set", "data.sources[0].include=[nothing/*.py]")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the sources hold no rows" in out.stderr
    (run,) = (tmp_path / "smoke").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "no rows" in summary["error"]
    assert (run / "provenance.json").is_file()


def test_dry_run_creates_a_fresh_run_directory_each_time(tmp_path):
    runs = tmp_path / "runs"
    first = ccrun("run", "recipes/smoke.yaml", "--dry-run", "--runs-dir", str(runs), "--set", "train.steps=40")
    second = ccrun("recipes/smoke.yaml", "--dry-run", "--runs-dir", str(runs), "--set", "train.steps=40")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    a, b = Path(first.stdout.strip()), Path(second.stdout.strip())
    assert a != b and a.parent == b.parent == runs / "smoke"
    digest = ccrun("resolve", "recipes/smoke.yaml", "--hash", "--set", "train.steps=40").stdout.strip()
    assert a.name.endswith(digest[:8]) and len(a.name.split("-")[0]) == 8  # yyyymmdd-HHMMSS-hash8
    assert {p.name for p in a.iterdir()} >= {"recipe.yaml", "overrides.yaml", "resolved.yaml", "provenance.json"}
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
    again = ccrun("resolve", str(a / "resolved.yaml"), "--hash")
    assert again.stdout.strip() == digest


def test_fragments_do_not_run(tmp_path):
    out = ccrun("run", "recipes/base/apps-data.yaml", "--dry-run", "--runs-dir", str(tmp_path))
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
    out = ccrun(*argv)
    assert out.returncode == 2, out
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_a_traceback():
    out = ccrun("--debug", "validate", "missing.yaml")
    assert out.returncode == 2 and "Traceback" in out.stderr and "file not found" in out.stderr


def test_version():
    out = ccrun("--version")
    assert (out.returncode, out.stdout) == (0, f"ccrun {runner.__version__}\n")


def test_a_sweep_runs_every_point_into_its_own_directory(tmp_path):
    args = ["run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), "--set", "train.steps=20",
            "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=15", "--set", "evals=[{suite: loss}]",
            "--set", "sweep={schedule.peak_lr: [1.0e-3, 3.0e-3]}"]
    out = ccrun(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [Path(line) for line in out.stdout.split()]
    assert len(runs) == 2 and len(set(runs)) == 2
    lrs = [yaml.safe_load((r / "resolved.yaml").read_text())["schedule"]["peak_lr"] for r in runs]
    assert lrs == [1e-3, 3e-3]
    assert all(yaml.safe_load((r / "resolved.yaml").read_text())["sweep"] is None for r in runs)
    assert "sweep:\n  schedule.peak_lr=0.001  succeeded  val/loss" in out.stderr
    assert [r.name.split("-", 3)[-1] for r in runs] == ["peak_lr=0.001", "peak_lr=0.003"]  # named by the point
    sweeps = [json.loads((r / "sweep.json").read_text()) for r in runs]
    assert [s["index"] for s in sweeps] == [0, 1] and sweeps[0]["point"] == {"schedule.peak_lr": 1e-3}
    group = sweeps[0]["group"]
    assert group.startswith("smoke-sweep-") and sweeps[1]["group"] == group
    for r in runs:  # grouped together in W&B
        assert group.encode() in next(r.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    one = ccrun(*args, "--sweep-index", "1")
    assert one.returncode == 0 and len(one.stdout.split()) == 1
    assert json.loads((Path(one.stdout.strip()) / "sweep.json").read_text())["group"] == group  # a job array's point
    assert ccrun(*args, "--sweep-index", "2").returncode == 2


SHORT = ["--set", "train.steps=30", "--set", "schedule.warmup_steps=5", "--set", "schedule.decay_steps=25",
         "--set", "train.checkpoint.every=10", "--set", "evals=[{suite: loss}]"]


def test_resume_and_reproduce(tmp_path):
    import os
    import signal
    import subprocess as sp
    import time

    done = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *SHORT)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = Path(done.stdout.strip())
    # A run killed after its first checkpoint, then resumed in place.
    proc = sp.Popen([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"),
                     *SHORT], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True,
                    env={**os.environ, "CCRUN_TEST_STEP_SLEEP": "0.2"})
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("smoke/*/checkpoints/10"))
        if found:
            proc.send_signal(signal.SIGKILL)
            killed = found[0].parent.parent
            break
        time.sleep(0.05)
    proc.communicate()
    assert killed is not None, "the run finished before it could be killed"
    assert json.loads((killed / "summary.json").read_text())["status"] == "running"
    resumed = ccrun("resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr and "data: reused" in resumed.stderr
    from safetensors.numpy import load_file

    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "bitwise the same weights"
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    again = ccrun("reproduce", str(reference), "--runs-dir", str(tmp_path / "c"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.startswith("reproduced: ")


def test_compare_two_runs(tmp_path):
    made = []
    for lr in ("1.0e-3", "3.0e-3"):
        out = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path), *SHORT, "--set", f"schedule.peak_lr={lr}")
        assert out.returncode == 0, out.stderr[-2000:]
        made.append(out.stdout.strip())
    shown = ccrun("compare", *made, "--plot", str(tmp_path / "curves.png"))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[0] == "metric" and any(line.startswith("val/loss") for line in lines)
    assert any(line.startswith("schedule.peak_lr") and "0.001" in line and "0.003" in line for line in lines)
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    bad = ccrun("compare", str(tmp_path))
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_wandb_online_without_network_goes_offline_and_says_why(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_DIR": str(tmp_path), "HOME": str(tmp_path)})  # no key anywhere
    out = subprocess.run([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path),
                          *SHORT, "--set", "logging.wandb.mode=online"], cwd=ROOT, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wandb: online logging is off (" in out.stderr and "logging offline instead" in out.stderr
    run = Path(out.stdout.strip())
    assert json.loads((run / "summary.json").read_text())["status"] == "succeeded"


def test_two_launches_at_once_make_two_directories(tmp_path):
    import subprocess as sp

    procs = [sp.Popen([sys.executable, "-m", "runner.cli", "run", "recipes/smoke.yaml", "--dry-run", "--runs-dir",
                       str(tmp_path)], cwd=ROOT, stdout=sp.PIPE, stderr=sp.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dirs = {out.strip() for out, _ in outs}
    assert len(dirs) == 3 and all(Path(d).parent == tmp_path / "smoke" for d in dirs)
    assert all((Path(d) / "resolved.yaml").is_file() for d in dirs)


def test_loss_suites_reuse_the_last_validation_or_measure_their_own(tmp_path):
    evals = ("evals=[{suite: loss}, {suite: loss, name: loss-b, batch_size: 8, max_batches: 3},"
             " {suite: loss, name: loss-c, batch_size: 2}]")
    out = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "a"), *SHORT, "--set", evals)
    assert out.returncode == 0, out.stderr[-3000:]
    run = Path(out.stdout.strip())
    results = json.loads((run / "summary.json").read_text())["results"]
    final = results["train"]["final"]
    assert results["loss"] == {"val/loss": final["val/loss"], "val/perplexity": final["val/perplexity"],
                               "from": "training"}
    assert results["loss-b"]["from"] == "eval" and results["loss-b"]["rows"] == 24  # 3 batches of 8
    # all blocks in batches of 2: the same token-weighted mean as the training's validation
    assert results["loss-c"]["val/loss"] == pytest.approx(final["val/loss"], rel=1e-5)
    for name in ("loss", "loss-b", "loss-c"):
        assert json.loads((run / "eval" / name / "results.json").read_text()) == results[name]
    assert "eval loss-b: val loss" in out.stderr
    # a recipe without train: the loss suite still runs (on the untrained model)
    eval_only = ccrun("run", "recipes/smoke.yaml", "--runs-dir", str(tmp_path / "b"), "--set", "train=null",
                      "--set", "optimizer=null", "--set", "schedule=null", "--set", "evals=[{suite: loss, max_batches: 2}]")
    assert eval_only.returncode == 0, eval_only.stderr[-3000:]
    summary = json.loads((Path(eval_only.stdout.strip()) / "summary.json").read_text())
    loss = summary["results"]["loss"]
    assert loss["from"] == "eval" and loss["rows"] == 16 and loss["val/loss"] > final["val/loss"]
    row = subprocess.run([sys.executable, "-m", "runner.cli", "compare", eval_only.stdout.strip()], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert any(line.startswith("val/loss") for line in row.splitlines())
