"""Chat data for fine-tuning: load conversations, tokenize them once (disk cache), and batch them.

Sources (`dataset_id`):
- "docqa": the shipped document-QA dataset (fractal_llm/gpt/datasets/docqa/{train,validation}.jsonl);
- a local .json / .jsonl file (its only split: `split` is not used, and evaluation is refused), or a local
  directory `datasets` can read, split by its file names (train.jsonl, validation.jsonl);
- anything else: a Hugging Face hub dataset id, loaded with `split` at the commit its `revision` (empty: the
  default branch) names when this process first asks (`resolve_revision`, huggingface_hub's dataset_info;
  a full commit hash needs no lookup, so it also works offline). The commit is what the caches are keyed on
  and what the run records (repro.dataset, `dataset_identity`): two hosts never train on different data
  under one key, and a moved branch does not change the data within one process.
All go through `datasets.load_dataset`, whose own cache holds the downloaded data. Records need a "messages" list of {"role", "content"};
ShareGPT-style "conversations" ({"from", "value"}) and prompt/response columns are mapped to it.

Tokenized data are cached under paths.data_cache_dir() in one .npz per (dataset, commit, split,
tokenizer, max_seq_len, source file contents, format version), written atomically under a file lock
so processes filling the same cache at once do the work once and read identical data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fractal_llm import paths
from fractal_llm.errors import FractalLLMError

DOCQA_ID = "docqa"
DOCQA_DIR = Path(__file__).resolve().parent / "datasets" / "docqa"
DOCQA_SPLITS = ("train", "validation")
LOCAL_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
CACHE_FORMAT_VERSION = 1  # bump when the cache layout or the rendering rules change
IGNORE_INDEX = -1
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")  # a full git commit hash: a revision that never moves
_COMMITS: dict[tuple[str, str], str] = {}  # (hub dataset id, revision) -> commit, resolved once per process

# ShareGPT speaker names -> chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "chatgpt": "assistant", "system": "system"}
PROMPT_COLUMNS = ("prompt", "instruction", "question", "input")
RESPONSE_COLUMNS = ("response", "completion", "output", "answer")


class DatasetError(FractalLLMError):
    """A dataset id, file or record layout that cannot be used; the message names the dataset."""


@dataclass
class TokenizedDataset:
    ids: list[np.ndarray]  # per example, int32 token ids (at most max_seq_len + 1 of them)
    masks: list[np.ndarray]  # per example, uint8, 1 = supervised token (assistant content)
    key: str  # cache key: identifies dataset, revision, split, tokenizer and max_seq_len
    n_dropped: int = 0  # conversations dropped because no supervised target survived truncation

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def mean_supervised_tokens(self) -> float:
        """Mean number of supervised *targets* per example (mask shifted by one, as training sees it)."""
        if not self.masks:
            return 0.0
        return float(np.mean([int(mask[1:].sum()) for mask in self.masks]))


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64, IGNORE_INDEX where unsupervised or padding
    n_supervised: int  # number of targets != IGNORE_INDEX


# ---------------------------------------------------------------------------- dataset ids
def _is_local_id(dataset_id: str) -> bool:
    """Paths are recognised by their suffix, a leading ./ ../ / ~, or by existing on disk.

    Hub ids ("owner/name") contain a slash too, so a slash alone does not make a path.
    """
    return (
        dataset_id.lower().endswith(LOCAL_SUFFIXES)
        or dataset_id.startswith(("/", "./", "../", "~"))
        or os.path.exists(os.path.expanduser(dataset_id))
    )


def check_dataset_id(dataset_id: str) -> None:
    """Cheap check for config validation: the shipped data and local files must exist. No hub access."""
    if not isinstance(dataset_id, str) or not dataset_id.strip():
        raise DatasetError(f"dataset_id={dataset_id!r}: must be 'docqa', a local .json/.jsonl path or a Hugging Face dataset id")
    if dataset_id == DOCQA_ID:
        for split in DOCQA_SPLITS:
            if not (DOCQA_DIR / f"{split}.jsonl").is_file():
                raise DatasetError(f"dataset_id='docqa': shipped file {DOCQA_DIR / f'{split}.jsonl'} is missing; "
                                   "regenerate it with `python -m fractal_llm.gpt.docqa --out fractal_llm/gpt/datasets/docqa`")
        return
    if _is_local_id(dataset_id) and not os.path.exists(os.path.expanduser(dataset_id)):
        raise DatasetError(f"dataset_id={dataset_id!r}: local file not found ({Path(dataset_id).expanduser().resolve()})")


def check_has_validation(dataset_id: str, wanted_by: str) -> None:
    """Cheap check that the dataset has a validation split (no hub access: hub ids are not checked). A single
    local file is read as the training data whatever the split, so evaluating on it would report training
    loss as validation loss; a directory is split by its file names (train.jsonl, validation.jsonl)."""
    source = _local_source(dataset_id, "validation")
    if source is not None and dataset_id != DOCQA_ID and not source.is_dir():
        raise DatasetError(f"dataset_id={dataset_id!r}: a single file has no validation split, which {wanted_by} "
                           "reads. Put train.jsonl and validation.jsonl in one directory and pass the directory, "
                           "or turn those off.")


def is_hub_id(dataset_id: str) -> bool:
    return dataset_id != DOCQA_ID and not _is_local_id(dataset_id)


def resolve_revision(dataset_id: str, revision: str) -> str:
    """The commit a hub dataset's revision names (resolved once per process), else revision unchanged
    (the shipped and local data are keyed on their contents)."""
    if not is_hub_id(dataset_id) or COMMIT_RE.match(revision):
        return revision
    if (dataset_id, revision) not in _COMMITS:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import OfflineModeIsEnabled
        try:
            info = HfApi().dataset_info(dataset_id, revision=revision or None)
        except OfflineModeIsEnabled as err:
            raise DatasetError(f"dataset_id={dataset_id!r} dataset_revision={revision!r}: the hub is offline "
                               "(HF_HUB_OFFLINE), so the revision cannot be resolved to a commit; set "
                               "dataset_revision to the full commit hash") from err
        _COMMITS[(dataset_id, revision)] = info.sha
    return _COMMITS[(dataset_id, revision)]


def is_movable_revision(dataset_id: str, revision: str) -> bool:
    """A hub dataset's revision that may name other data later (a branch or tag, or empty: the default branch)."""
    return is_hub_id(dataset_id) and not COMMIT_RE.match(revision)


def pin_revision(dataset_id: str, revision: str, commit: str) -> None:
    """Make this process read `revision` of a hub dataset at `commit`, whatever it names today: a sweep's pin
    (fractal_llm/runners/pins.py), so a run requeued days later trains on the same data."""
    if not COMMIT_RE.match(commit):
        raise DatasetError(f"dataset_id={dataset_id!r} dataset_revision={revision!r}: pinned to {commit!r}, "
                           "which is not a full commit hash")
    _COMMITS[(dataset_id, revision)] = commit


def dataset_identity(dataset_id: str, revision: str) -> str:
    """What a run trained on, for its record: a hub dataset at its commit (owner/name@<commit>), else the id."""
    return f"{dataset_id}@{resolve_revision(dataset_id, revision)}" if is_hub_id(dataset_id) else dataset_id


def _local_source(dataset_id: str, split: str) -> Path | None:
    """The file (or directory) a local or shipped dataset id reads, or None for a hub id."""
    if dataset_id == DOCQA_ID:
        if split not in DOCQA_SPLITS:
            raise DatasetError(f"dataset_split={split!r}: the docqa dataset has splits {DOCQA_SPLITS}")
        return DOCQA_DIR / f"{split}.jsonl"
    if _is_local_id(dataset_id):
        return Path(dataset_id).expanduser()
    return None


# ---------------------------------------------------------------------------- conversations
def load_conversations(dataset_id: str, revision: str = "", split: str = "train") -> list[dict]:
    """Conversations as [{"messages": [{"role", "content"}, ...]}, ...], loaded through `datasets`."""
    import datasets  # slow import: only when data are actually read

    check_dataset_id(dataset_id)
    source = _local_source(dataset_id, split)
    if source is None:  # a hub download: its progress bars are worth seeing
        table = datasets.load_dataset(dataset_id, revision=resolve_revision(dataset_id, revision), split=split)
    else:
        with _without_progress_bars(datasets):
            table = _load_local(datasets, source, split)
    return _to_conversations(table, dataset_id)


def _load_local(datasets, source: Path, split: str):
    if source.is_dir():
        return datasets.load_dataset(str(source), split=split)
    # A private datasets cache under our home keeps the user's HF cache free of temporary files.
    return datasets.load_dataset("json", data_files={"train": str(source)}, split="train",
                                 cache_dir=str(paths.data_cache_dir() / "hf_datasets"))


@contextmanager
def _without_progress_bars(datasets):
    """A local file converts in a fraction of a second; its "Generating train split" bars would only break
    into the runner's progress bar. The caller's setting is restored afterwards."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _to_conversations(table, dataset_id: str) -> list[dict]:
    columns = list(table.column_names)
    if "messages" in columns:
        rows = [{"messages": [_message(m, dataset_id, i) for m in row]} for i, row in enumerate(table["messages"])]
    elif "conversations" in columns:
        rows = [{"messages": [_sharegpt_message(m, dataset_id, i) for m in row]} for i, row in enumerate(table["conversations"])]
    elif (prompt := _first_present(PROMPT_COLUMNS, columns)) and (response := _first_present(RESPONSE_COLUMNS, columns)):
        rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                for p, r in zip(table[prompt], table[response])]
    else:
        raise DatasetError(
            f"dataset_id={dataset_id!r}: no chat column; found columns {columns}. Expected 'messages' "
            f"(list of {{role, content}}), 'conversations' (ShareGPT {{from, value}}), or a prompt column "
            f"{PROMPT_COLUMNS} with a response column {RESPONSE_COLUMNS}"
        )
    if not rows:
        raise DatasetError(f"dataset_id={dataset_id!r}: no records")
    return rows


def _first_present(names: tuple[str, ...], columns: list[str]) -> str | None:
    return next((name for name in names if name in columns), None)


def _message(message, dataset_id: str, index: int) -> dict:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise DatasetError(f"dataset_id={dataset_id!r}: record {index}: a message must have 'role' and 'content', got {message!r}")
    return {"role": message["role"], "content": message["content"]}


def _sharegpt_message(message, dataset_id: str, index: int) -> dict:
    speaker = message.get("from") if isinstance(message, dict) else None
    if speaker not in SHAREGPT_ROLES or "value" not in message:
        raise DatasetError(f"dataset_id={dataset_id!r}: record {index}: ShareGPT message needs 'from' in "
                           f"{sorted(SHAREGPT_ROLES)} and 'value', got {message!r}")
    return {"role": SHAREGPT_ROLES[speaker], "content": message["value"]}


# ---------------------------------------------------------------------------- tokenization + cache
def _file_digest(path: Path) -> str:
    """Content hash of a local source (a directory hashes its files' names, sizes and mtimes)."""
    h = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = child.stat()
            h.update(f"{child.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(dataset_id: str, revision: str, split: str, tokenizer, max_seq_len: int) -> str:
    source = _local_source(dataset_id, split)
    parts = {
        "format": CACHE_FORMAT_VERSION,
        "dataset_id": dataset_id,
        "revision": resolve_revision(dataset_id, revision),  # a hub dataset's commit, never a branch name
        # A local file holds one split whatever `split` says, so it does not enter the key.
        "split": split if source is None or dataset_id == DOCQA_ID else "",
        "source": _file_digest(source) if source is not None else "",
        "tokenizer": tokenizer.fingerprint(),
        "max_seq_len": max_seq_len,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _tokenize(conversations: list[dict], tokenizer, max_seq_len: int, dataset_id: str) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    ids_list, mask_list, dropped = [], [], 0
    for index, conversation in enumerate(conversations):
        try:
            ids, mask = tokenizer.render_conversation(conversation, max_tokens=max_seq_len + 1)
        except ValueError as err:  # re-raised with the dataset and record that caused it
            raise DatasetError(f"dataset_id={dataset_id!r}: record {index}: {err}") from err
        mask_arr = np.asarray(mask, dtype=np.uint8)
        if not mask_arr[1:].any():  # nothing left to learn after the shift (e.g. truncated away)
            dropped += 1
            continue
        ids_list.append(np.asarray(ids, dtype=np.int32))
        mask_list.append(mask_arr)
    return ids_list, mask_list, dropped


def _save_npz(path: Path, ids: list[np.ndarray], masks: list[np.ndarray], n_dropped: int) -> None:
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in ids])
    flat_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    flat_masks = np.concatenate(masks) if masks else np.zeros(0, dtype=np.uint8)
    paths.atomic_write(path, lambda f: np.savez(f, ids=flat_ids, masks=flat_masks, offsets=offsets,
                                                n_dropped=np.int64(n_dropped)), binary=True)


def _load_npz(path: Path, key: str) -> TokenizedDataset:
    with np.load(path) as data:
        flat_ids, flat_masks, offsets = data["ids"], data["masks"], data["offsets"]
        n_dropped = int(data["n_dropped"])
    ids = [flat_ids[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    masks = [flat_masks[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return TokenizedDataset(ids=ids, masks=masks, key=key, n_dropped=n_dropped)


def cache_path(key: str) -> Path:
    return paths.data_cache_dir() / f"tokenized-{key}.npz"


def load_tokenized(dataset_id: str, revision: str, split: str, tokenizer, max_seq_len: int) -> TokenizedDataset:
    """Tokenized conversations (each at most max_seq_len + 1 tokens), from the disk cache when present."""
    if not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise DatasetError(f"max_seq_len={max_seq_len!r}: must be a positive int")
    check_dataset_id(dataset_id)
    key = cache_key(dataset_id, revision, split, tokenizer, max_seq_len)
    path = cache_path(key)

    def build() -> None:
        conversations = load_conversations(dataset_id, revision, split)
        ids, masks, dropped = _tokenize(conversations, tokenizer, max_seq_len, dataset_id)
        if not ids:
            raise DatasetError(f"dataset_id={dataset_id!r} split={split!r}: none of {len(conversations)} conversations "
                               f"has a supervised (assistant) token within max_seq_len={max_seq_len}")
        _save_npz(path, ids, masks, dropped)

    paths.build_once(path, build, done=path.is_file)
    return _load_npz(path, key)


# ---------------------------------------------------------------------------- batches
def _example_order(n: int, seed: int) -> Iterator[int]:
    """Endless stream of example indices: a fresh permutation per epoch, seeded by (seed, epoch).

    Batches are cut from this stream, so they may straddle epochs and are always full, even when the
    dataset holds fewer examples than one batch.
    """
    epoch = 0
    while True:
        yield from np.random.default_rng([seed, epoch]).permutation(n).tolist()
        epoch += 1


def collate(ds: TokenizedDataset, indices: list[int], pad_id: int,
            widths: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int64 arrays padded to the longest example, or to the smallest of `widths` that holds
    it (a few static shapes for a compiled step); targets IGNORE_INDEX off the mask and on the padding."""
    width = max(len(ds.ids[i]) for i in indices) - 1
    width = min((w for w in widths if w >= width), default=width)
    inputs = np.full((len(indices), width), pad_id, dtype=np.int64)
    targets = np.full((len(indices), width), IGNORE_INDEX, dtype=np.int64)
    for row, i in enumerate(indices):
        ids, mask = ds.ids[i], ds.masks[i]
        n = len(ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = np.where(mask[1:] == 1, ids[1:], IGNORE_INDEX)
    return inputs, targets


def iterate_batches(ds: TokenizedDataset, batch_size: int, seed: int, pad_id: int, device="cpu",
                    widths: tuple[int, ...] = ()) -> Iterator[Batch]:
    """Endless batches in a seed-determined order; batches with no supervised target are skipped. `widths`:
    pad each batch to the smallest of these that holds its longest example (collate)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size={batch_size!r}: must be a positive int")
    if not any(mask[1:].any() for mask in ds.masks):
        # Every batch would be skipped: fail instead of looping forever.
        raise DatasetError(f"dataset {ds.key!r}: no example has a supervised target ({len(ds)} examples)")
    order = _example_order(len(ds), seed)
    while True:
        indices = [next(order) for _ in range(batch_size)]
        inputs, targets = collate(ds, indices, pad_id, widths)
        n_supervised = int((targets != IGNORE_INDEX).sum())
        if n_supervised == 0:
            continue
        yield Batch(
            inputs=torch.from_numpy(inputs).to(device),
            targets=torch.from_numpy(targets).to(device),
            n_supervised=n_supervised,
        )
