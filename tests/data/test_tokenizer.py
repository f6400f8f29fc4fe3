"""Tokenizers round-trip code exactly: tabs, runs of spaces, blank lines, unicode identifiers."""

from pathlib import Path

import pytest

from runner.data.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CODE = [p.read_text() for p in sorted((ROOT / "runner").rglob("*.py"))]

TRICKY = [
    "def f(x):\n\tif x:\n\t\treturn x\n\treturn  None\n",
    "class Ä:\n    def __init__(self, größe=3):\n        self.größe = größe    # trailing spaces    \n",
    "x = [\n        1,\n\n\n        2,  \t  3]\r\n",
    "    \n\t\n  \t  \n",  # whitespace only
    "π = 3.14159\n変数 = 'ünïcödé'\nλ = lambda ω: ω ** 2\n",
    "s = 'tabs\\tinside'  ;  y=1\n" + " " * 37 + "deep = True\n",
    "<|endoftext|>def after_eos():\n    pass\n",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    tok = train_tokenizer(CODE, vocab_size=600, out_dir=out)
    return tok, out


@pytest.mark.parametrize("text", TRICKY + CODE[:3], ids=range(len(TRICKY) + 3))
def test_round_trip_is_exact(trained, text):
    tok, _ = trained
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # skip_special_tokens drops the EOS marker and nothing else: indentation survives
    assert tok.decode(ids, skip_special_tokens=True) == text.replace("<|endoftext|>", "")


def test_saved_tokenizer_loads_with_autotokenizer(trained):
    tok, out = trained
    loaded = load_tokenizer(out)
    for text in TRICKY:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    assert loaded.eos_token == "<|endoftext|>" and loaded.eos_token_id == 0
    assert len(loaded) == 600


def test_whitespace_runs_are_learned_as_ordinary_tokens(trained):
    tok, _ = trained
    four = tok.encode("    ")
    assert len(four) == 1, "a run of 4 spaces (Python indentation) is one token"
    assert tok.convert_ids_to_tokens(four)[0] not in tok.all_special_tokens


def test_vocab_too_small():
    with pytest.raises(TokenizerError, match="below the 256 bytes"):
        train_tokenizer(["x"], vocab_size=100)


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(TokenizerError, match="no such tokenizer directory"):
        load_tokenizer(str(tmp_path / "none"))


def test_hub_tokenizer_without_network_is_a_clear_error():
    with pytest.raises(TokenizerError, match="cannot load tokenizer 'ccrun-tests/no-such-tokenizer'.*local directory"):
        load_tokenizer("ccrun-tests/no-such-tokenizer")
