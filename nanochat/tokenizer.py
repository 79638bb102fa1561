"""nanochat-compatible BPE tokenizer: a tiktoken Encoding plus nanochat's chat format.

On disk (same as nanochat): `tokenizer.pkl` is the pickled tiktoken Encoding and `token_bytes.pt`
is an int32 tensor with the UTF-8 byte length of every token id (0 for special tokens).
Training uses the `rustbpe` package (GPT-4 style byte-level BPE).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable
from pathlib import Path

import tiktoken
import torch

SPECIAL_TOKENS = [
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
]

# GPT-4's split pattern, except numbers split into groups of at most two digits (as nanochat).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

PICKLE_NAME = "tokenizer.pkl"
TOKEN_BYTES_NAME = "token_bytes.pt"
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
ASSISTANT_PART_TYPES = ("text", "python", "python_output")


class Tokenizer:
    """Thin wrapper around a tiktoken Encoding whose special tokens are nanochat's."""

    def __init__(self, encoding: tiktoken.Encoding):
        missing = [name for name in SPECIAL_TOKENS if name not in encoding.special_tokens_set]
        if missing:
            raise ValueError(f"tokenizer encoding lacks nanochat special tokens {missing}; it has {sorted(encoding.special_tokens_set)}")
        self.enc = encoding
        self.bos_token_id = self.encode_special("<|bos|>")
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def train_from_iterator(cls, texts: Iterable[str], vocab_size: int) -> "Tokenizer":
        """Train a byte-level BPE with rustbpe; vocab_size counts the nine special tokens too."""
        import rustbpe  # imported here: only training needs it

        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size={vocab_size!r}: must be an int >= {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} specials)")
        n_ranks = vocab_size - len(SPECIAL_TOKENS)
        bpe = rustbpe.Tokenizer()
        bpe.train_from_iterator(iter(texts), n_ranks, pattern=SPLIT_PATTERN)
        ranks = dict(bpe.get_mergeable_ranks())
        if len(ranks) != n_ranks:
            # rustbpe stops early when no pair is left to merge; a silently smaller vocab would break configs.
            raise ValueError(
                f"vocab_size={vocab_size}: the training text only supports {len(ranks) + len(SPECIAL_TOKENS)} tokens; "
                "give more (or more varied) text or a smaller vocab_size"
            )
        specials = {name: n_ranks + i for i, name in enumerate(SPECIAL_TOKENS)}
        encoding = tiktoken.Encoding(name="rustbpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
        return cls(encoding)

    @classmethod
    def from_directory(cls, path: str | Path) -> "Tokenizer":
        """Load `tokenizer.pkl` from a directory (or the pickle path itself)."""
        path = Path(path)
        pkl = path / PICKLE_NAME if path.is_dir() else path
        if not pkl.is_file():
            raise FileNotFoundError(f"no {PICKLE_NAME} at {pkl}")
        with open(pkl, "rb") as f:
            encoding = pickle.load(f)
        if not isinstance(encoding, tiktoken.Encoding):
            raise TypeError(f"{pkl} holds a {type(encoding).__name__}, expected a pickled tiktoken.Encoding")
        return cls(encoding)

    def save(self, path: str | Path) -> None:
        """Write tokenizer.pkl and token_bytes.pt into directory `path` (created if needed)."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / PICKLE_NAME, "wb") as f:
            pickle.dump(self.enc, f)
        torch.save(self.token_bytes(), directory / TOKEN_BYTES_NAME)

    def token_bytes(self) -> torch.Tensor:
        """int32 tensor: byte length of each token id, 0 for special tokens (for bits-per-byte)."""
        special_ids = set(self.enc._special_tokens.values())
        lengths = [0 if i in special_ids else len(self.enc.decode_single_token_bytes(i)) for i in range(self.enc.n_vocab)]
        return torch.tensor(lengths, dtype=torch.int32)

    # ------------------------------------------------------------------ basic coding
    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def get_special_tokens(self) -> list[str]:
        return list(SPECIAL_TOKENS)

    def encode_special(self, name: str) -> int:
        if name not in self.enc.special_tokens_set:
            raise ValueError(f"special token {name!r} unknown; allowed: {SPECIAL_TOKENS}")
        return self.enc.encode_single_token(name)

    def _token_id(self, token: int | str) -> int:
        return self.encode_special(token) if isinstance(token, str) else int(token)

    def encode(self, text: str | list[str], prepend: int | str | None = None, append: int | str | None = None):
        """Encode text (special-token strings are treated as plain text) or a list of texts."""
        if isinstance(text, str):
            return self._encode_one(text, prepend, append)
        if isinstance(text, list):
            batch = self.enc.encode_ordinary_batch(text)  # tiktoken encodes the list in parallel threads
            return [self._wrap(ids, prepend, append) for ids in batch]
        raise TypeError(f"text: expected str or list[str], got {type(text).__name__}")

    def _encode_one(self, text: str, prepend, append) -> list[int]:
        return self._wrap(self.enc.encode_ordinary(text), prepend, append)

    def _wrap(self, ids: list[int], prepend, append) -> list[int]:
        if prepend is not None:
            ids.insert(0, self._token_id(prepend))
        if append is not None:
            ids.append(self._token_id(append))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def id_to_token(self, token_id: int) -> str:
        return self.enc.decode([token_id])

    def fingerprint(self) -> str:
        """sha256 over pattern, mergeable ranks and special tokens; stable across processes.
        Computed once per tokenizer (it keys the data cache, looked up at every run)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.enc._pat_str.encode())
        for token, rank in sorted(self.enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
            h.update(rank.to_bytes(8, "little"))
            h.update(len(token).to_bytes(4, "little"))
            h.update(token)
        for name, token_id in sorted(self.enc._special_tokens.items(), key=lambda kv: kv[1]):
            h.update(token_id.to_bytes(8, "little"))
            h.update(name.encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ chat format
    def render_conversation(self, conversation: dict, max_tokens: int = 2048) -> tuple[list[int], list[int]]:
        """Token ids and a 0/1 mask (1 = supervised: assistant content and its <|assistant_end|>)."""
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens!r}: must be a positive int")
        messages = _merged_messages(conversation)
        ids: list[int] = []
        mask: list[int] = []

        def add(tokens: int | list[int], value: int) -> None:
            tokens = [tokens] if isinstance(tokens, int) else tokens
            ids.extend(tokens)
            mask.extend([value] * len(tokens))

        special = self.encode_special
        add(self.bos_token_id, 0)
        for message in messages:
            if message["role"] == "user":
                add(special("<|user_start|>"), 0)
                add(self.encode(message["content"]), 0)
                add(special("<|user_end|>"), 0)
                continue
            add(special("<|assistant_start|>"), 0)
            content = message["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                text_ids = self.encode(part["text"])
                if part["type"] == "text":
                    add(text_ids, 1)
                elif part["type"] == "python":
                    add(special("<|python_start|>"), 1)
                    add(text_ids, 1)
                    add(special("<|python_end|>"), 1)
                else:  # python_output: produced by the tool, not the model -> unsupervised
                    add(special("<|output_start|>"), 0)
                    add(text_ids, 0)
                    add(special("<|output_end|>"), 0)
            add(special("<|assistant_end|>"), 1)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation: dict) -> list[int]:
        """Prompt for sampling: drop the final assistant message, then open a new assistant turn."""
        messages = conversation.get("messages") if isinstance(conversation, dict) else None
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("render_for_completion: conversation must end with an assistant message")
        trimmed = dict(conversation, messages=list(messages[:-1]))
        ids, _ = self.render_conversation(trimmed, max_tokens=10**9)
        return ids + [self.encode_special("<|assistant_start|>")]

    def visualize_mask(self, ids: list[int], mask: list[int]) -> str:
        """Debug helper: tokens with supervised ones wrapped in [ ]."""
        return "".join(f"[{self.id_to_token(i)}]" if m else self.id_to_token(i) for i, m in zip(ids, mask))


def _merged_messages(conversation: dict) -> list[dict]:
    """Validate the message list and merge a leading system message into the first user message."""
    if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
        raise ValueError("conversation: expected a dict with a 'messages' list")
    messages = [dict(m) for m in conversation["messages"]]
    if not messages:
        raise ValueError("conversation.messages: empty; need at least one user message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"conversation.messages[{i}]: expected a dict with 'role' and 'content'")
    if messages[0]["role"] == "system":
        if len(messages) < 2 or messages[1]["role"] != "user":
            raise ValueError("conversation.messages: a system message must be followed by a user message")
        system, first = messages[0], messages[1]
        _check_text(system["content"], "conversation.messages[0].content")
        _check_text(first["content"], "conversation.messages[1].content")
        messages = [dict(first, content=system["content"] + "\n\n" + first["content"])] + messages[2:]
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(
                f"conversation.messages: role {message['role']!r} at turn {i} (after merging any system message); "
                f"roles must alternate user/assistant starting with user, expected {expected!r}"
            )
        where = f"conversation.messages turn {i} ({expected}).content"
        if expected == "user" or isinstance(message["content"], str):
            _check_text(message["content"], where)
        else:
            _check_parts(message["content"], where)
    return messages


def _check_text(value, where: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {type(value).__name__}")


def _check_parts(parts, where: str) -> None:
    if not isinstance(parts, list):
        raise ValueError(f"{where}: expected a string or a list of parts, got {type(parts).__name__}")
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ASSISTANT_PART_TYPES or not isinstance(part.get("text"), str):
            raise ValueError(f"{where}[{j}]: expected {{'type': one of {ASSISTANT_PART_TYPES}, 'text': str}}, got {part!r}")
