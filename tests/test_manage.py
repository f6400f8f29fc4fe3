"""`ccrun runs`, `ccrun init`, `ccrun export`, recipes named by their name, shell completion: as a
user runs them. The run directory is made the cheap way (the conductor's `create_run_dir`, a tiny
model as its final/, two orbax checkpoints written with the trainer's own Checkpoints class), so
no training runs here; tests/e2e/test_runs_listing.py does it after a real run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from runner.cli import main

from .helpers import ROOT, ccrun, ccrun_here

BEST, LATEST = 2, 4  # the checkpoints' steps; the best holds the weights x2, the latest x3


def cli(capsys, *args, cwd=None):
    """`ccrun ARGS` in this process (no jax start-up per call): (exit code, stdout, stderr)."""
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return exit_.value.code or 0, out.out, out.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A succeeded run directory: final/ (a tiny GPT-Neo with a tokenizer trained on ccrun's source),
    checkpoints/ (best at step 2, latest at step 4), summary.json with a HumanEval result,
    data/manifest.json."""
    import jax
    from flax import nnx

    from runner.data.tokenizer import train_tokenizer
    from runner.model import GPTConfig, GPTNeo, save_pretrained
    from runner.recipe.load import load_recipe
    from runner.recipe.resolve import recipe_hash
    from runner.recipe.results import (BestCheckpoint, HumanEvalResult, SamplingScores, Scores, RunSummary,
                                       TrainSummary, dump_summary)
    from runner.run import create_run_dir
    from runner.train.checkpoint import Checkpoints

    work = tmp_path_factory.mktemp("manage")
    ckpt = work / "ckpt"
    texts = [p.read_text() for p in sorted((ROOT / "runner" / "recipe").glob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=300, out_dir=ckpt)
    config = GPTConfig("gpt-neo", len(tok), 64, 32, 2, 4, 64, ("global", "local"), window_size=16,
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = GPTNeo(config, rngs=nnx.Rngs(0))
    save_pretrained(model, ckpt)
    (work / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (work / "r.yaml").write_text("""\
name: tiny-export
description: A tiny model for the export tests.
model: {arch: gpt-neo, checkpoint: ./ckpt}
data: {sources: [{type: jsonl, paths: [d.jsonl]}], seq_len: 32, validation: {fraction: 0.1}}
optimizer: {type: adamw}
schedule: {type: constant, peak_lr: 1.0e-3}
train: {batch_size: 2, steps: 4, checkpoint: {every: 2, keep_best_by: val/loss}}
evals:
  - {suite: loss}
  - {suite: humaneval, limit: 2, sampling: [{temperature: 0.0, k: [1]}]}
""")
    loaded = load_recipe(work / "r.yaml")
    run = create_run_dir(loaded, runs_root=work / "runs")
    shutil.copytree(ckpt, run.path / "final")
    ckpts = Checkpoints(run.path / "checkpoints", keep_best_by="val/loss")
    state = nnx.state(model)
    for step, scale, val in ((BEST, 2.0, 1.5), (LATEST, 3.0, 2.5)):
        # scaled in numpy: in jax each weight's shape would compile a multiply of its own
        scaled = jax.tree.map(lambda x, s=scale: np.asarray(x) * np.float32(s), state)
        ckpts.save(step, scaled, {"count": np.int32(step)}, {"step": step, "seed": 0}, {"val/loss": val}, force=True)
    ckpts.close()
    humaneval = HumanEvalResult(name="humaneval", problems=2, pass_at_k={1: 0.5}, sampling=[SamplingScores(
        setting={"temperature": 0.0, "k": [1]}, overall=Scores(problems=2, pass_at_k={1: 0.5}))])
    summary = RunSummary(name="tiny-export", recipe_hash=recipe_hash(loaded.recipe), status="succeeded",
                         wall_time_s=65.4, evals=[humaneval],
                         train=TrainSummary(steps=LATEST, best=BestCheckpoint(step=BEST, metric="val/loss", value=1.5),
                                            weights_step=BEST, final={"train/loss": 2.25, "val/loss": 1.5,
                                                                      "val/perplexity": 4.48}))
    (run.path / "summary.json").write_text(dump_summary(summary))
    (run.path / "data").mkdir()
    (run.path / "data" / "manifest.json").write_text(json.dumps({
        "documents": {"rows": 12, "sources": [{"type": "jsonl"}], "filters": [], "dedup": {"type": "none", "duplicates": 0},
                      "kept": 12},
        "split": {"method": "fraction", "validation_rows": 1, "train_rows": 11},
        "tokens": {"train": {"examples": 11, "blocks": 300, "loss_tokens": 9300}}, "seq_len": 32,
        "cache": {"hit": False, "key": "0123456789abcdef"}}))
    return run.path


def logits_of(model_dir: Path, ids: np.ndarray) -> np.ndarray:
    """transformers' (PyTorch) logits of a Hugging Face model directory."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def our_logits(model, ids: np.ndarray) -> np.ndarray:
    """runner.model's own logits, the forward pass compiled whole (eagerly, each of its operations
    compiles on its own: seconds)."""
    from flax import nnx

    return np.asarray(nnx.jit(lambda m, x: m(x))(model, ids))


def card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


# --- ccrun runs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_root(run_dir, tmp_path_factory) -> Path:
    """Under one root: the run above (newest), a failed, a dry-run, a damaged and an incomplete one."""
    import datetime as dt

    from runner.recipe.results import RunSummary, dump_summary
    from runner.track.rundir import RunDir

    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(run_dir, root / "tiny-export" / run_dir.name, ignore=shutil.ignore_patterns("checkpoints"))
    made = {}
    for minute, kind in enumerate(("failed", "dry", "damaged", "incomplete")):
        run = RunDir.create(root, f"r-{kind}", "ab" * 32, now=dt.datetime(2024, 1, 1, 12, minute, tzinfo=dt.timezone.utc))
        shutil.copy(run_dir / "resolved.yaml", run.file("resolved.yaml"))
        made[kind] = run.path
    (made["failed"] / "summary.json").write_text(dump_summary(RunSummary(
        name="r-failed", recipe_hash="ab" * 32, status="failed", error="RunFailed: loss is nan", wall_time_s=7530)))
    (made["failed"] / "metrics.jsonl").write_text('{"step": 10, "train/loss": 3.0}\n{"step": 20, "train/loss": 2.0}\n')
    (made["dry"] / "plan.json").write_text("{}")
    (made["damaged"] / "summary.json").write_text('{"name": "r-damaged", "status": "maybe"}')
    return root


def test_runs_lists_every_run_newest_first(runs_root):
    out = ccrun("runs", str(runs_root))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["status", "recipe", "hash", "steps", "val", "loss", "pass@1", "wall", "path"]
    rows = [line.split() for line in lines[1:6]]
    # newest first: the fixture's run was made today, the others in 2024, one minute apart
    assert [r[0] for r in rows] == ["succeeded", "incomplete", "damaged", "dry", "failed"]
    ok = rows[0]
    assert ok[1:8] == ["tiny-export", ok[2], "4", "1.5000", "0.5000", "1m05s", ok[7]] and len(ok[2]) == 8
    assert Path(ok[7]).parent.parent == runs_root and Path(ok[7]).name.endswith(ok[2])
    assert rows[3][:3] == ["dry", "run", "r-dry"]
    failed = rows[4]
    assert failed[:4] == ["failed", "r-failed", "abababab", "20"] and failed[-2] == "2h05m"  # steps: the last logged
    assert lines[6].startswith("damaged: ") and "summary.json: not a ccrun summary" in lines[6]


def test_runs_json_and_empty_and_missing_directories(runs_root, tmp_path, capsys):
    code, out, _ = cli(capsys, "runs", runs_root, "--json")
    listed = json.loads(out)
    assert code == 0 and [r["status"] for r in listed] == ["succeeded", "incomplete", "damaged", "dry run", "failed"]
    assert listed[0]["val_loss"] == 1.5 and listed[0]["pass_at_1"] == 0.5 and listed[0]["wall_time_s"] == 65.4
    assert listed[4]["error"] == "RunFailed: loss is nan"
    code, out, err = cli(capsys, "runs", tmp_path)
    assert (code, out) == (0, "") and "no run directories under" in err
    code, _, err = cli(capsys, "runs", tmp_path / "nowhere")
    assert code == 2 and err.count("\n") == 1 and "no such directory" in err
    code, out, err = cli(capsys, "runs", cwd=tmp_path)  # DIR defaults to runs/
    assert code == 2 and "runs: no such directory" in err


# --- ccrun init ---------------------------------------------------------------------------------


def test_init_writes_a_starter_recipe_that_validates_and_runs_by_name(tmp_path, capsys):
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    code, out, err = cli(capsys, "init", "my-exp", cwd=tmp_path)
    assert code == 0, err
    path = tmp_path / "recipes" / "my-exp.yaml"
    assert out.strip() == "recipes/my-exp.yaml" and path.is_file()
    first, second = path.read_text().splitlines()[:2]
    assert first == "# yaml-language-server: $schema=../schemas/recipe.schema.json" and second == "name: my-exp"
    # `ccrun validate` passes on it, and it is found by its name alone (recipes/my-exp.yaml)
    assert cli(capsys, "validate", "my-exp", cwd=tmp_path)[0] == 0
    assert ccrun("validate", str(path)).returncode == 0
    code, out, _ = cli(capsys, "resolve", "my-exp", "--hash", cwd=tmp_path)
    assert code == 0 and len(out.strip()) == 64
    before = path.read_bytes()
    code, _, err = cli(capsys, "init", "my-exp", cwd=tmp_path)  # never overwritten
    assert code == 2 and "exists" in err and path.read_bytes() == before
    for bad in ("-x", "a/b", "has space", ".hidden"):
        code, _, err = cli(capsys, "init", "--", bad, cwd=tmp_path)
        assert code == 2 and "not a recipe name" in err, bad


def test_init_from_extends_the_recipe_with_a_relative_path(tmp_path, capsys):
    code, out, err = cli(capsys, "init", "smoke-fast", "--from", "smoke", "--dir", tmp_path / "mine")
    assert code == 0, err
    path = tmp_path / "mine" / "smoke-fast.yaml"
    lines = path.read_text().splitlines()
    schema = Path(lines[0].split("$schema=")[1])
    assert (path.parent / schema).resolve() == ROOT / "schemas" / "recipe.schema.json"  # ccrun's own schemas
    assert lines[1] == "name: smoke-fast"
    assert (path.parent / lines[2].removeprefix("extends: ")).resolve() == ROOT / "recipes" / "smoke.yaml"
    code, out, _ = cli(capsys, "validate", path)
    assert code == 0 and "smoke-fast" in out
    code, _, err = cli(capsys, "init", "x", "--from", "smok", "--dir", tmp_path / "mine")
    assert code == 2 and "did you mean smoke?" in err and not (tmp_path / "mine" / "x.yaml").exists()


# --- recipes by name, completion ----------------------------------------------------------------


def test_a_recipe_is_found_by_its_name(tmp_path):
    dry = ccrun("smoke", "--dry-run", "--runs-dir", str(tmp_path))  # ccrun smoke → ccrun run recipes/smoke.yaml
    assert dry.returncode == 0, dry.stderr
    assert (tmp_path / "smoke").is_dir()
    # the rest in this process (tests.helpers.ccrun_here: a fresh process's answer)
    unknown = ccrun_here("smok")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "ccrun: smok: neither a command nor a recipe in recipes/ (did you mean smoke?)"]
    wrong = ccrun_here("diff", "smoke", "apps-126m")
    assert wrong.returncode == 2 and "did you mean apps-125m" in wrong.stderr and "Traceback" not in wrong.stderr
    assert ccrun_here("diff", "smoke", "recipes/smoke.yaml").returncode == 0  # names and paths mix
    assert ccrun_here("nonsense-command").returncode == 2  # click's own error, as before


def test_shell_completion_lists_commands_and_recipes():
    def complete(words: str, fresh: bool = False) -> list[str]:
        env = {**os.environ, "_CCRUN_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        if fresh:  # as the shell runs it
            out = subprocess.run([sys.executable, "-m", "runner.cli"], cwd=ROOT, env=env, capture_output=True, text=True)
        else:
            out = ccrun_here(env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("ccrun init x --from sm", fresh=True) == ["smoke", "smoke-llama-lora"]
    assert complete("ccrun init x --from recipes/sm") == ["recipes/smoke.yaml", "recipes/smoke-llama-lora.yaml"]
    assert complete("ccrun ex") == ["export"]
    shown = ccrun_here("--show-completion", "bash")
    assert shown.returncode == 0 and "_CCRUN_COMPLETE" in shown.stdout


# --- ccrun export -------------------------------------------------------------------------------


def test_export_of_final_loads_in_transformers_with_the_card(run_dir, tmp_path, capsys):
    import transformers

    from runner.model import from_pretrained

    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", run_dir, "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "model.safetensors").read_bytes() == (run_dir / "final" / "model.safetensors").read_bytes()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = np.array([tokenizer("def add(a, b):\n    return a + b\n")["input_ids"][:24]])
    ours = our_logits(from_pretrained(run_dir / "final"), ids)  # runner.model's own logits of final/
    np.testing.assert_allclose(logits_of(out, ids), ours, rtol=1e-4, atol=1e-4)
    front, body = card(out)
    assert front["library_name"] == "transformers" and "ccrun" in front["tags"]
    (index,) = front["model-index"]
    (result,) = index["results"]
    assert index["name"] == "tiny-export" and result["dataset"]["type"] == "openai_humaneval"
    assert result["metrics"] == [{"type": "pass@1", "name": "pass@1", "value": 0.5}]
    assert "| humaneval | 2 | pass@1 | 0.5000 |" in body
    assert f"AutoModelForCausalLM.from_pretrained({str(out)!r})" in body
    assert "| val/loss | 1.5000 |" in body and "| wall time | 1m05s |" in body
    assert "train: 11 examples, 300 blocks of 32 tokens" in body  # the data manifest, described
    assert (run_dir / "resolved.yaml").read_text().strip() in body
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"recipe hash: {summary['recipe_hash']}" in body


@pytest.mark.parametrize("which, step, scale", [("best", BEST, 2.0), ("latest", LATEST, 3.0)])
def test_export_of_a_checkpoint_holds_its_weights(run_dir, tmp_path, capsys, which, step, scale):
    from runner.model import from_pretrained
    from runner.model.hf import flat_params

    out = tmp_path / which
    code, stdout, err = cli(capsys, "export", run_dir, "--out", out, "--checkpoint", which)
    assert code == 0, err
    final, exported = flat_params(from_pretrained(run_dir / "final")), flat_params(from_pretrained(out))
    assert final.keys() == exported.keys()
    for key in final:
        np.testing.assert_allclose(np.asarray(exported[key]), scale * np.asarray(final[key]), rtol=1e-6, err_msg=str(key))
    ids = np.arange(1, 17)[None]
    np.testing.assert_allclose(logits_of(out, ids), our_logits(from_pretrained(out), ids), rtol=1e-4, atol=1e-4)
    front, body = card(out)
    assert f"the {which} checkpoint (step {step})" in body
    if which == "best":  # the run's evaluations are of these weights (summary: weights_step 2)
        assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5
    else:
        assert "model-index" not in front and "--checkpoint latest` evaluates this checkpoint" in body


def test_export_refuses_bad_input_and_writes_nothing(run_dir, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "export", run_dir, "--out", used)
    assert code == 2 and "not empty" in err and os.listdir(used) == ["keep.txt"]
    code, _, err = cli(capsys, "export", tmp_path, "--out", tmp_path / "a")
    assert code == 2 and "not a run directory" in err
    code, _, err = cli(capsys, "export", run_dir, "--out", tmp_path / "b", "--checkpoint", "newest")
    assert code == 2 and "best or latest" in err
    code, _, err = cli(capsys, "export", run_dir, "--out", tmp_path / "c", "--push-to-hub", "no owner")
    assert code == 2 and "not a hub repository id" in err
    assert sorted(os.listdir(tmp_path)) == ["used"]  # no partial directory left either


def test_push_to_hub_offline_or_unreachable_is_one_clear_line(run_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "runner.cli", "export", str(run_dir), "--push-to-hub", "me/tiny"]
    out = subprocess.run([*args, "--out", str(tmp_path / "a")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "ccrun: --push-to-hub: the hub is offline here (HF_HUB_OFFLINE is set); unset it to push, or push the "
        "directory later (nothing was written)"]
    assert not (tmp_path / "a").exists()
    env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_test")  # port 9: refused at once
    out = subprocess.run([*args, "--out", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 2, out.stderr
    assert lines[0].startswith("ccrun: --push-to-hub me/tiny: the hub cannot be reached (")
    assert lines[1].startswith(f"the export is kept in {tmp_path / 'b'}")
    assert (tmp_path / "b" / "README.md").is_file()  # the export itself is done and kept


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(run_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", sorted(os.listdir(kwargs["folder_path"])), kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, "export", run_dir, "--out", out, "--push-to-hub", "me/tiny")
    assert code == 0, err
    assert stdout.splitlines() == [str(out), "https://huggingface.co/me/tiny"]
    (_, repo, create), (_, files, upload) = calls
    assert repo == "me/tiny" and create["exist_ok"] is True and create["repo_type"] == "model"
    assert upload["repo_id"] == "me/tiny" and upload["folder_path"] == str(out)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert "AutoTokenizer.from_pretrained('me/tiny')" in (out / "README.md").read_text()
