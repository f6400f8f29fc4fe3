"""bench/data_stage.py --quick: the data-stage bench writes its corpus, runs the Code Clippy recipe's
data stage at num_proc 1 and 2, and prints one JSON line whose figures are present, positive and
agree with each other.

Expected values come from the figures' definitions: every training document the stage read is
removed by one filter, removed as a duplicate, or kept (the manifest's counts, recomputed here); a
per-core rate is the input over the run's time; the projection's documents and text bytes are the
seed's 209 GB (REFERENCE.md) over the synthetic corpus's compressed bytes, times its documents and
text bytes.
"""


import pytest

from ..helpers import bench_report

# A benchmark's smoke run: slow for the fast suite, and it makes no run directory.
pytestmark = pytest.mark.e2e
MAKES_RUN_DIRS = False


@pytest.fixture(scope="module")
def report():
    return bench_report("data_stage.py", "--quick", env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
                        timeout=300)


def test_figures_are_present_and_positive(report):
    assert report["bench"] == "data_stage"
    for key in ("docs", "train_docs", "mb", "compressed_mb", "kept", "tokens", "docs_per_s_per_core",
                "mb_per_s_per_core", "docs_per_s_per_core_np2", "speedup_1_to_2", "text_bytes_per_token"):
        assert report[key] > 0, key
    assert set(report["total_s"]) == {"np1", "np2"} and min(report["total_s"].values()) > 0
    assert min(report["peak_disk_mb"].values()) > 0 and min(report["peak_rss_mb"].values()) > 0
    # the pipeline's stages, each timed in both runs
    for stage in ("read jsonl.zst", "metadata join", "filter stars", "filter digit_fraction", "filter max_line_length",
                  "filter decontaminate", "dedup", "tokenize", "pack"):
        row = report["stages"][stage]
        assert row["s_np1"] > 0 and row["s_np2"] > 0 and row["docs_per_s_per_core"] > 0, stage
        assert row["mb_per_s_per_core"] > 0, stage
    stream = report["stream"]["workers1"]  # the training stream, one pass, its work in one process
    for key in ("first_block_s", "pass_s", "cpu_s", "docs_per_s", "tokens_per_s", "tokens_per_s_per_core"):
        assert stream[key] > 0, key
    assert report["stream"]["worker_cores_per_gpu"] > 0
    projection = report["projection"]
    for key in ("docs", "text_gb", "core_h", "wall_h_one_core", "wall_h_rate_x_efficiency", "wall_h_as_written",
                "cpu_efficiency_1_to_2", "disk_peak_tb", "out_dir_tb", "compression_ratio"):
        assert projection[key] > 0, key
    assert projection["cores"] == 64 and projection["seed_compressed_gb"] == 209.0


def test_documents_are_accounted_for(report):
    # each training document is removed by a filter, removed as a duplicate, or kept
    removed = sum(report["filters_removed"].values())
    assert removed + report["duplicates"] + report["kept"] == report["train_docs"]
    # the kinds of document the bench planted add up to the documents it wrote
    assert sum(report["planted"].values()) == report["train_docs"]
    assert report["docs"] > report["train_docs"]  # + the validation shards (2.5%)


def test_rates_follow_from_times(report):
    # per core: per CPU second of the one-process run; the speedup is of wall times
    c1, t1 = report["total_cpu_s"]["np1"], report["total_s"]["np1"]
    assert report["docs_per_s_per_core"] == pytest.approx(report["docs"] / c1, rel=0.01, abs=0.1)
    assert report["mb_per_s_per_core"] == pytest.approx(report["text_bytes"] / 1e6 / c1, rel=0.01, abs=0.002)
    assert report["docs_per_s_wall_np1"] == pytest.approx(report["docs"] / t1, rel=0.01, abs=0.1)
    assert report["speedup_1_to_2"] == pytest.approx(t1 / report["total_s"]["np2"], rel=0.01)
    # one process works no faster than the wall clock runs (CPU seconds <= wall seconds)
    assert c1 <= t1 * 1.05
    # the as-written projection (serial stages in one process) is never faster than spreading all of it
    projection = report["projection"]
    assert projection["wall_h_as_written"] >= projection["wall_h_calling_process"] > 0
    assert projection["wall_h_one_core"] > projection["wall_h_rate_x_efficiency"]


def test_projection_scales_the_synthetic_corpus_to_the_seeds_bytes(report):
    projection = report["projection"]
    scale = 209e9 / report["compressed_bytes"]
    assert projection["docs"] == pytest.approx(report["docs"] * scale, rel=1e-6)
    assert projection["text_gb"] == pytest.approx(report["text_bytes"] * scale / 1e9, abs=0.05)
