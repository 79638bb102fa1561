"""Tokenizer: rustbpe training, nanochat file format round trip, chat rendering masks."""

import pickle
import subprocess
import sys

import pytest
import tiktoken
import torch

from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers like 12345 and 2024 get split into pairs of digits.",
    "User: what is the capital of France? Assistant: Paris is the capital of France.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole.",
    "Fractals appear at the boundary between trainable and untrainable hyperparameters.",
] * 20
VOCAB = 300


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train_from_iterator(CORPUS, VOCAB)


def test_vocab_and_special_ids(tok):
    assert tok.get_vocab_size() == VOCAB
    ids = [tok.encode_special(name) for name in SPECIAL_TOKENS]
    assert ids == list(range(VOCAB - len(SPECIAL_TOKENS), VOCAB))
    assert tok.get_bos_token_id() == VOCAB - 9


def test_encode_decode_and_digit_split(tok):
    text = "The quick brown fox 12345!"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(i < VOCAB - 9 for i in ids)
    pieces = [tok.id_to_token(i) for i in tok.encode("12345")]
    assert max(len(p) for p in pieces) <= 2  # numbers split into <=2-digit groups
    assert tok.encode("hi", prepend="<|bos|>", append="<|assistant_end|>")[0] == tok.get_bos_token_id()
    assert tok.encode(["a b", "c"]) == [tok.encode("a b"), tok.encode("c")]
    # special-token text is not interpreted as a special token
    assert tok.get_bos_token_id() not in tok.encode("<|bos|>")


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    with open(tmp_path / "tokenizer.pkl", "rb") as f:
        assert isinstance(pickle.load(f), tiktoken.Encoding)  # nanochat's own format
    tb = torch.load(tmp_path / "token_bytes.pt")
    assert tb.dtype == torch.int32 and tb.shape == (VOCAB,)
    assert (tb[-9:] == 0).all() and (tb[:256] == 1).all() and tb[256:VOCAB - 9].min() >= 2
    loaded = Tokenizer.from_directory(tmp_path)
    text = "\n".join(CORPUS[:6])
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.fingerprint() == tok.fingerprint()


def test_fingerprint_stable_across_processes_and_sensitive(tok, tmp_path):
    tok.save(tmp_path)
    code = f"from nanochat.tokenizer import Tokenizer; print(Tokenizer.from_directory({str(tmp_path)!r}).fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == tok.fingerprint()
    other = Tokenizer.train_from_iterator(CORPUS, VOCAB + 1)
    assert other.fingerprint() != tok.fingerprint()


def test_training_is_deterministic(tok):
    again = Tokenizer.train_from_iterator(CORPUS, VOCAB)
    assert again.fingerprint() == tok.fingerprint()


def test_render_conversation_masks(tok):
    conv = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And 2+3?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me compute."},
                {"type": "python", "text": "print(2+3)"},
                {"type": "python_output", "text": "5"},
                {"type": "text", "text": "It is 5."},
            ]},
        ]
    }
    ids, mask = tok.render_conversation(conv)
    s = tok.encode_special
    expected_ids, expected_mask = [s("<|bos|>")], [0]

    def add(t, m):
        expected_ids.extend(t)
        expected_mask.extend([m] * len(t))

    add([s("<|user_start|>")] + tok.encode("Be brief.\n\nWhat is the capital of France?") + [s("<|user_end|>")], 0)
    add([s("<|assistant_start|>")], 0)
    add(tok.encode("Paris.") + [s("<|assistant_end|>")], 1)
    add([s("<|user_start|>")] + tok.encode("And 2+3?") + [s("<|user_end|>")], 0)
    add([s("<|assistant_start|>")], 0)
    add(tok.encode("Let me compute.") + [s("<|python_start|>")] + tok.encode("print(2+3)") + [s("<|python_end|>")], 1)
    add([s("<|output_start|>")] + tok.encode("5") + [s("<|output_end|>")], 0)
    add(tok.encode("It is 5.") + [s("<|assistant_end|>")], 1)
    assert ids == expected_ids
    assert mask == expected_mask
    supervised = tok.decode([i for i, m in zip(ids, mask) if m])
    assert supervised == "Paris.<|assistant_end|>Let me compute.<|python_start|>print(2+3)<|python_end|>It is 5.<|assistant_end|>"

    short_ids, short_mask = tok.render_conversation(conv, max_tokens=7)
    assert short_ids == ids[:7] and short_mask == mask[:7]


def test_render_for_completion(tok):
    conv = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    prompt = tok.render_for_completion(conv)
    s = tok.encode_special
    assert prompt == [s("<|bos|>"), s("<|user_start|>"), *tok.encode("Hi"), s("<|user_end|>"), s("<|assistant_start|>")]


@pytest.mark.parametrize(
    "messages, match",
    [
        ([{"role": "assistant", "content": "x"}], "alternate"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
        ([{"role": "system", "content": "s"}], "system"),
        ([], "empty"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "img", "text": "x"}]}], "type"),
        ([{"role": "user", "content": 5}], "string"),
    ],
)
def test_render_rejects_bad_conversations(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        tok.render_conversation({"messages": messages})


def test_bad_vocab_and_too_little_text():
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train_from_iterator(CORPUS, 100)
    with pytest.raises(ValueError, match="only supports"):
        Tokenizer.train_from_iterator(["ab ab"], 400)
