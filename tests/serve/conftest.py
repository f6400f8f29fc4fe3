"""One tiny model saved as a Hugging Face directory, served once for the whole package: uvicorn in a
thread of this process on a free loopback port, so tests share compiled shapes and can reach the
server's batcher (to count batches, or to make one request fail). Its timeouts are short
(HEADER_TIMEOUT, BODY_TIMEOUT) and its connection cap small (MAX_CONNECTIONS), so that the tests of
slow and many clients finish in seconds.

Small on purpose (every shape is compiled before the server is ready): 96 positions and max_batch 4
make 3 rows buckets (1, 2, 4) x 2 KV-slot buckets (128, 223), 12 programs; prompts of two prefill
blocks, requests past the first slot bucket, more samples than a batch holds and requests sharing a
batch all still happen."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from ..helpers import serving

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 2.0  # s
BODY_TIMEOUT = 3.0  # s
MAX_CONNECTIONS = 48
POSITIONS = 96  # the served model's context; max_new_tokens is at most POSITIONS - 1
MAX_BATCH = 4  # requests per batch; 6 sent together share batches


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    from flax import nnx

    from runner.data.tokenizer import train_tokenizer
    from runner.model import GPTConfig, GPTNeo, save_pretrained
    from runner.model.hf import build_from_params, flat_params

    out = tmp_path_factory.mktemp("tiny-clippy")
    texts = [p.read_text() for p in sorted((ROOT / "runner").rglob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=320, out_dir=out)
    config = GPTConfig("gpt-neo", len(tok), POSITIONS, 32, 2, 4, 64, ("global", "local"), window_size=32,
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = GPTNeo(config, rngs=nnx.Rngs(0))
    # weights less uniform than at init, so greedy text varies instead of repeating one token
    save_pretrained(build_from_params(config, {k: v * 3 for k, v in flat_params(model).items()}), out)
    return out


REF_BUDGETS = (48, 16)  # reference completions are computed with the first of these the prompt leaves room for
_references: dict[tuple, list[int]] = {}


def reference_greedy(served, ids: list[int], tokens: int, chunk: int = 16) -> list[int]:
    """The sampler's own greedy tokens (runner.evals.sample.generate) for one prompt alone: batch 1,
    its own prompt bucket, no server code. Computed with the first budget of REF_BUDGETS that holds
    `tokens` and leaves room for the prompt, and cut to `tokens`: greedy decoding's first k tokens do
    not depend on the budget, and every test's reference then runs the same few compiled programs
    (short prompts: 48 tokens; prompts of up to 80 tokens: 16); each answer is kept."""
    from runner.evals.sample import Sampling, generate

    positions = served.model.config.max_positions
    budget = next((b for b in REF_BUDGETS if tokens <= b and len(ids) + b <= positions), tokens)
    key = (id(served.model), tuple(ids), budget, chunk)
    if key not in _references:
        _references[key] = generate(served.model, [ids], n=1, sampling=Sampling(max_new_tokens=budget),
                                    eos_id=served.tokenizer.eos_token_id, batch_size=1, chunk=chunk)[0][0]
    return _references[key][:tokens]


@dataclass
class Running:
    url: str
    served: object  # runner.serve.Served
    batcher: object  # runner.serve.Batcher


@pytest.fixture(scope="session")
def server(hf_dir):
    from runner.serve.batcher import Batcher
    from runner.serve.source import open_hf

    served = open_hf(hf_dir)
    # a generous window, so requests sent together in a test surely share a batch; max_new_tokens
    # above the model's positions: the server caps it at POSITIONS - 1
    batcher = Batcher(served.model, served.tokenizer, max_batch=MAX_BATCH, wait_s=0.05, max_new_tokens=512)
    with serving(served, batcher, server_options=dict(header_timeout=HEADER_TIMEOUT, max_connections=MAX_CONNECTIONS),
                 max_new_tokens=512, body_timeout=BODY_TIMEOUT) as url:
        yield Running(url, served, batcher)
