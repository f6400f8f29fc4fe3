"""The APPS suite's `prompt`: the reference's generation prompt by default, GPT-Code-Clippy's
training prompt on request (to evaluate its released checkpoints as they were trained)."""

import pytest

from runner.data.apps import apps_prompt, fn_name_of, read_problems
from runner.evals import suites
from runner.recipe.schema_eval import AppsEval

from ..helpers import ROOT


class Sampled(Exception):
    pass


@pytest.mark.parametrize("style", ["apps", "code-clippy"])
def test_the_apps_suite_prompts_in_the_style_asked(style, monkeypatch):
    fixture = ROOT / "tests" / "fixtures" / "apps-smoke.jsonl"
    seen = []

    def complete(model, tokenizer, prompts, **kwargs):
        seen.extend(prompts)
        raise Sampled

    monkeypatch.setattr(suites, "complete", complete)
    spec = AppsEval(suite="apps", path=str(fixture), limit=2, prompt=style)
    with pytest.raises(Sampled):
        suites.run_apps(spec, None, None, None, seed=0, workers=1)
    rows = read_problems(fixture, limit=2)
    assert seen == [apps_prompt(r["question"], r.get("starter_code"), fn_name_of(r.get("input_output")), style)
                    for r in rows]
    assert all(p.startswith("\nQUESTION:\n") and p.endswith("\nANSWER:\n") for p in seen)
    if style == "code-clippy":  # its extra blank lines around the format hint
        assert all("\n\nUse " in p and "format\n\nANSWER:\n" in p for p in seen)
