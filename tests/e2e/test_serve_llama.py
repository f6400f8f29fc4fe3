"""`ccrun serve` on a Llama-family model with a Llama-2-style tokenizer (BOS, no pad): the server's
greedy completion is the sampler's own for the prompt as the tokenizer encodes it (BOS first),
and the OpenAI completions route answers too. The model and tokenizer go through the same code as
GPT-Neo's (runner.serve), nothing Llama-specific."""

import httpx
import pytest

from ..helpers import serving
from ..helpers_tokenizers import write_tokenizer

pytestmark = pytest.mark.e2e
MAKES_RUN_DIRS = False  # a model directory served, no run
POSITIONS = 64


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from flax import nnx

    from runner.data.tokenizer import load_tokenizer
    from runner.model import Llama, LlamaConfig, save_pretrained
    from runner.model.hf import build_from_params, flat_params
    from runner.serve.batcher import Batcher
    from runner.serve.source import open_hf

    out = tmp_path_factory.mktemp("tiny-llama")
    write_tokenizer("llama2", out)
    tok = load_tokenizer(out)
    config = LlamaConfig("llama", len(tok), POSITIONS, 32, 2, 4, 2, 64, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    model = Llama(config, rngs=nnx.Rngs(0))
    # weights less uniform than at init, so greedy text varies instead of repeating one token
    save_pretrained(build_from_params(config, {k: v * 3 for k, v in flat_params(model).items()}), out)
    served = open_hf(out)
    batcher = Batcher(served.model, served.tokenizer, max_batch=1, wait_s=0.01, max_new_tokens=16)
    with serving(served, batcher, max_new_tokens=16) as url:
        yield url, served


def test_a_llama_model_serves_the_samplers_greedy_completion(llama_server):
    from runner.evals.sample import Sampling, generate

    url, served = llama_server
    prompt = "def add(a, b):\n"
    ids = served.tokenizer(prompt, add_special_tokens=True)["input_ids"]  # the tokenizer's own: <s> first
    assert ids[0] == served.tokenizer.bos_token_id
    want = generate(served.model, [ids], n=1, sampling=Sampling(max_new_tokens=8),
                    eos_id=served.tokenizer.eos_token_id, batch_size=1)[0][0]
    r = httpx.post(url + "/models/tiny", timeout=120,
                   json={"inputs": prompt, "parameters": {"max_new_tokens": 8, "do_sample": False}})
    assert r.status_code == 200, r.text
    text = r.json()[0]["generated_text"]
    assert text == prompt + served.tokenizer.decode(want)
    r = httpx.post(url + "/v1/completions", timeout=120,
                   json={"model": "tiny", "prompt": prompt, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == served.tokenizer.decode(want)
    info = httpx.get(url + "/info").json()
    assert info["model"]["type"] == "llama" and info["model"]["parameters"] == served.model.config.num_params()
