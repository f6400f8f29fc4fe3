"""Training progress when stderr is not a terminal: one plain line every log_every steps."""

from runner.train.loop import progress_line


def test_the_line_says_step_share_loss_lr_speed_and_eta():
    line = progress_line(30, 300, 4.123456, 1.2e-4, 3456.4, 83.4)
    assert line == "train: step 30/300 (10%) loss 4.1235 lr 1.20e-04 3,456 tokens/s ETA 1m23s"


def test_eta_in_seconds_minutes_hours_and_no_speed_when_unknown():
    assert progress_line(1, 2, 1.0, 0.0, None, 7.2).endswith("lr 0.00e+00 ETA 7s")
    assert progress_line(1, 2, 1.0, 1e-3, 10.0, 3 * 3600 + 5 * 60 + 9).endswith("ETA 3h05m")
    assert progress_line(2, 2, 1.0, 1e-3, 10.0, 0.0).startswith("train: step 2/2 (100%)")
