"""summary.json read through its types: `ccrun compare`'s row, the W&B run summary (and `compare
--wandb`'s row read back from it) and a summary that is not one. The summaries here are written
by hand, with the numbers a reader must find."""

import json
import os

import pytest

from runner.common.errors import BadInput
from runner.recipe.results import RunSummary
from runner.track.compare import run_row, wandb_view
from runner.track.rundir import RunDir
from runner.track.wandb import Tracker

SUMMARY = {
    "name": "smoke", "recipe_hash": "ab" * 32, "status": "succeeded", "error": None, "wall_time_s": 61.5,
    "train": {"steps": 300, "resumed_from": None, "latest_step": 300,
              "best": {"step": 200, "metric": "val/loss", "value": 2.5},
              "final": {"train/loss": 2.25, "val/loss": 2.75, "val/perplexity": 15.64}},
    "evals": [
        {"suite": "loss", "name": "loss", "val_loss": 2.75, "val_perplexity": 15.64, "measured": "training",
         "rows": None, "batch_size": None},
        {"suite": "humaneval", "name": "humaneval", "problems": 4, "pass_at_k": {"1": 0.25},
         "sampling": [{"setting": {"temperature": 0.2}, "overall": {"problems": 4, "pass_at_k": {"1": 0.25}}}]},
        {"suite": "apps", "name": "apps", "problems": 3, "pass_at_k": {"1": 0.0, "2": 0.5},
         "strict_accuracy": 0.0, "test_case_average": 0.375,
         "per_difficulty": {"interview": {"problems": 2, "pass_at_k": {"1": 0.0}, "strict_accuracy": 0.0,
                                          "test_case_average": 0.5}},
         "sampling": [{"setting": {"temperature": 0.8}, "overall": {"problems": 3, "pass_at_k": {"1": 0.0, "2": 0.5},
                                                                    "strict_accuracy": 0.0, "test_case_average": 0.375}}]},
    ],
}
ROW = {"status": "succeeded", "train/loss": 2.25, "val/loss": 2.75, "val/perplexity": 15.64,
       "humaneval/pass@1": 0.25, "apps/pass@1": 0.0, "apps/pass@2": 0.5, "apps/strict_accuracy": 0.0,
       "apps/test_case_average": 0.375,  # and per difficulty
       "apps/interview/strict_accuracy": 0.0, "apps/interview/test_case_average": 0.5}


def run_dir(tmp_path, summary) -> RunDir:
    (tmp_path / "resolved.yaml").write_text("name: smoke\n")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "throughput/tokens_per_s": v}) + "\n"
                                                    for s, v in ((10, 100.0), (20, 300.0), (30, 200.0))))
    return RunDir.open(tmp_path)


def test_compare_reads_the_typed_summary(tmp_path):
    run = run_dir(tmp_path, SUMMARY)
    summary = run.summary()
    assert summary.train.best.step == 200 and summary.suite("apps").per_difficulty["interview"].test_case_average == 0.5
    assert run_row(run) == {**ROW, "tokens_per_s": 200.0, "wall_time_s": 61.5}  # the median window


class FakeWandbRun:
    """What Tracker touches of a wandb run, and what the public API's Run gives compare back."""

    def __init__(self):
        self.summary, self.state, self.name, self.id, self.config = {}, "finished", "run", "x", {}

    def scan_history(self, keys=None):
        return iter([])


def test_the_wandb_summary_holds_the_same_numbers_compare_shows(tmp_path):
    tracker = Tracker.__new__(Tracker)  # W&B itself has no server here: its run is a stand-in
    tracker.run, tracker.log_line = FakeWandbRun(), print
    wandb_run = tracker.run
    tracker.results(RunSummary.model_validate(SUMMARY))
    assert wandb_run.summary == {k: v for k, v in ROW.items() if k != "status"}
    assert wandb_view(wandb_run).row == ROW


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not a ccrun summary"),
    (json.dumps({"name": "x", "recipe_hash": "h", "status": "succeeded", "results": {"train": {}}}),
     "results: Extra inputs are not permitted"),  # the shape before the typed summary
    (json.dumps({**SUMMARY, "status": "done"}), "status:"),
    (json.dumps({**SUMMARY, "evals": [{"suite": "mbpp", "name": "m"}]}), "evals.0"),
])
def test_a_summary_that_is_not_one_is_bad_input(tmp_path, content, needle):
    run = run_dir(tmp_path, SUMMARY)
    (tmp_path / "summary.json").write_text(content)
    with pytest.raises(BadInput, match=needle):
        run.summary()


def test_a_summary_that_is_not_a_regular_small_file_is_bad_input(tmp_path):
    """A FIFO never blocks the reader, /dev/zero or a huge file is refused before it is read."""
    from runner.recipe.results import MAX_SUMMARY_BYTES, SummaryError, read_summary

    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    with pytest.raises(SummaryError, match="not a regular file"):
        read_summary(fifo)
    with pytest.raises(SummaryError, match="not a regular file"):
        read_summary("/dev/zero")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_SUMMARY_BYTES + 1)
    with pytest.raises(SummaryError, match="more than"):
        read_summary(big)


def test_the_eval_log_line_gives_apps_strict_accuracy_and_test_case_average_per_difficulty():
    from runner.recipe.results import AppsResult, HumanEvalResult, SamplingScores, Scores
    from runner.run import eval_line

    overall = Scores(problems=3, pass_at_k={1: 0.01})
    setting = SamplingScores(setting={"n_samples": 5}, overall=overall)
    apps = AppsResult(name="apps", problems=3, pass_at_k={1: 0.01, 5: 0.03}, sampling=[setting],
                      strict_accuracy=0.01, test_case_average=0.085,
                      per_difficulty={"introductory": Scores(problems=1, strict_accuracy=0.03, test_case_average=0.15),
                                      "competition": Scores(problems=1, strict_accuracy=0.0, test_case_average=0.02)})
    assert eval_line(apps) == ("pass@1 0.0100, pass@5 0.0300, strict accuracy 0.0100, test-case average 0.0850 "
                               "(introductory 0.0300/0.1500, competition 0.0000/0.0200 strict/tests)")
    humaneval = HumanEvalResult(name="he", problems=3, pass_at_k={1: 0.5}, sampling=[setting])
    assert eval_line(humaneval) == "pass@1 0.5000"
