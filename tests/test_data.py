"""fractal_llm.gpt.data: loading through `datasets`, tokenization, the disk cache and batching."""

import json
import multiprocessing as mp
import types

import numpy as np
import pytest
import torch

from fractal_llm import paths

from fractal_llm.gpt import data

from fractal_llm.gpt import docqa
from nanochat.tokenizer import Tokenizer

KNOWN = {
    "messages": [
        {"role": "system", "content": "Extract the field."},
        {"role": "user", "content": "Invoice No: INV-20431\n\nQuestion: What is the invoice number?"},
        {"role": "assistant", "content": "INV-20431"},
        {"role": "user", "content": "Question: Who is billed?"},
        {"role": "assistant", "content": "Maria Chen"},
    ]
}
SHORT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_from_iterator(docqa.document_texts(400, seed=0), 512)


def _write_jsonl(path, conversations):
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations), encoding="utf-8")
    return path


@pytest.fixture
def local_file(tmp_path):
    return _write_jsonl(tmp_path / "chats.jsonl", [KNOWN, SHORT] + docqa.generate(30, seed=5))


def _cache_files():
    return sorted(paths.data_cache_dir().glob("tokenized-*.npz"))


# ---------------------------------------------------------------------------- loading
def test_docqa_loads_through_datasets_in_file_order():
    conversations = data.load_conversations("docqa", split="validation")
    shipped = [json.loads(line) for line in (data.DOCQA_DIR / "validation.jsonl").read_text().splitlines()]
    assert conversations == shipped
    assert len(conversations) == docqa.DEFAULT_VALIDATION


def test_local_directory_is_split_by_file_name(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [KNOWN])
    _write_jsonl(tmp_path / "validation.jsonl", [SHORT])
    assert data.load_conversations(str(tmp_path), split="train") == [KNOWN]
    assert data.load_conversations(str(tmp_path), split="validation") == [SHORT]
    data.check_has_validation(str(tmp_path), "eval_every=5")
    with pytest.raises(data.DatasetError, match=r"train\.jsonl'.*single file.*eval_every=5"):
        data.check_has_validation(str(tmp_path / "train.jsonl"), "eval_every=5")


def test_local_file_loads_without_progress_bars_and_keeps_the_setting(tmp_path, capfd):
    import datasets

    path = _write_jsonl(tmp_path / "fresh.jsonl", [KNOWN, SHORT])  # a new file: datasets converts it
    assert not datasets.are_progress_bars_disabled()
    assert data.load_conversations(str(path)) == [KNOWN, SHORT]
    assert "Generating train split" not in capfd.readouterr().err
    assert not datasets.are_progress_bars_disabled()  # the caller's setting is back


def test_local_jsonl_loads_with_messages(local_file):
    conversations = data.load_conversations(str(local_file))
    assert conversations[0] == KNOWN
    assert conversations[1] == SHORT
    assert len(conversations) == 32


def test_sharegpt_and_prompt_response_layouts_are_mapped(tmp_path):
    sharegpt = _write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}])
    assert data.load_conversations(str(sharegpt)) == [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}]
    pairs = _write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "Q?", "response": "A."}])
    assert data.load_conversations(str(pairs))[0]["messages"][1] == {"role": "assistant", "content": "A."}


def test_unknown_layout_names_dataset_and_columns(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "x", "label": 1}])
    with pytest.raises(data.DatasetError, match=r"odd\.jsonl.*\['text', 'label'\]"):
        data.load_conversations(str(path))


def test_missing_local_file_fails_cheaply_naming_it(tmp_path, tokenizer, monkeypatch):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(data.DatasetError, match="nope.jsonl.*not found"):
        data.check_dataset_id(missing)
    # load_tokenized must fail before reading or tokenizing anything
    monkeypatch.setattr(data, "load_conversations", lambda *a, **k: pytest.fail("loaded data for a missing file"))
    with pytest.raises(data.DatasetError, match="nope.jsonl"):
        data.load_tokenized(missing, "", "train", tokenizer, 64)


def test_dataset_id_checks():
    data.check_dataset_id("docqa")
    data.check_dataset_id("someone/some-chat-dataset")  # a hub id: not checked offline
    with pytest.raises(data.DatasetError, match="dataset_id=''"):
        data.check_dataset_id("")
    with pytest.raises(data.DatasetError, match="dataset_split='test'"):
        data.load_conversations("docqa", split="test")


def test_a_hub_dataset_is_pinned_to_its_commit_and_cached_under_it(tokenizer, tmp_path, monkeypatch):
    """The default branch ("") is resolved to a commit once per process; datasets loads that commit and the
    tokenized cache is keyed on it, so a branch that moves gets a new cache entry, never the old data."""
    import datasets
    import huggingface_hub
    monkeypatch.setenv("FRACTAL_LLM_HOME", str(tmp_path))
    monkeypatch.setattr(data, "_COMMITS", {})
    head, asked, loaded = {"sha": "a" * 40}, [], []

    def dataset_info(self, repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return types.SimpleNamespace(sha=head["sha"])

    def load_dataset(path, revision=None, split=None, **kwargs):
        loaded.append((path, revision, split))
        return datasets.Dataset.from_list([KNOWN, SHORT])

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    first = data.load_tokenized("someone/chats", "", "train", tokenizer, 64)
    head["sha"] = "b" * 40  # the branch moves on: this process keeps its commit
    assert data.load_tokenized("someone/chats", "", "train", tokenizer, 64).key == first.key
    assert asked == [("someone/chats", None)] and loaded == [("someone/chats", "a" * 40, "train")]
    assert data.dataset_identity("someone/chats", "") == f"someone/chats@{'a' * 40}"
    monkeypatch.setattr(data, "_COMMITS", {})  # a new process, or another host
    moved = data.load_tokenized("someone/chats", "", "train", tokenizer, 64)
    assert moved.key != first.key and loaded[-1] == ("someone/chats", "b" * 40, "train")
    assert data.load_tokenized("someone/chats", "b" * 40, "train", tokenizer, 64).key == moved.key
    assert len(asked) == 2  # a full commit hash needs no lookup (so it works offline)
    assert data.dataset_identity("docqa", "") == "docqa" and data.resolve_revision("docqa", "") == ""


def test_an_offline_hub_cannot_resolve_a_branch_and_says_what_to_set(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(data, "_COMMITS", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(data.DatasetError, match="dataset_revision='main'.*full commit hash"):
        data.resolve_revision("someone/chats", "main")


# ---------------------------------------------------------------------------- tokenization and targets
def test_targets_are_ignored_exactly_off_the_assistant_content(tokenizer, local_file):
    ds = data.load_tokenized(str(local_file), "", "train", tokenizer, 256)
    ids, mask = tokenizer.render_conversation(KNOWN, max_tokens=257)
    assert ds.ids[0].tolist() == ids and ds.masks[0].tolist() == mask
    pad = tokenizer.encode_special("<|assistant_end|>")
    inputs, targets = data.collate(ds, [1, 0], pad)  # SHORT first: it gets padded
    n = len(ids) - 1
    assert inputs.shape == targets.shape == (2, n)
    assert inputs[1].tolist() == ids[:-1]
    expected = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
    assert targets[1].tolist() == expected
    # the supervised targets decode to the two answers, each closed by <|assistant_end|>
    supervised = [t for t in targets[1].tolist() if t != -1]
    assert tokenizer.decode(supervised) == "INV-20431<|assistant_end|>Maria Chen<|assistant_end|>"
    # no user/system/assistant_start token is a target
    assert all(t == -1 for t, m in zip(targets[1].tolist(), mask[1:]) if m == 0)
    short_len = len(ds.ids[1]) - 1
    assert inputs[0, short_len:].tolist() == [pad] * (n - short_len)
    assert targets[0, short_len:].tolist() == [-1] * (n - short_len)
    assert tokenizer.decode([t for t in targets[0].tolist() if t != -1]) == "Hello there<|assistant_end|>"


def test_truncation_and_dropping(tokenizer, local_file):
    ids, mask = tokenizer.render_conversation(KNOWN)
    first_supervised = mask.index(1)
    # max_seq_len + 1 tokens are kept: cut just before the first answer token -> KNOWN is dropped
    ds = data.load_tokenized(str(local_file), "", "train", tokenizer, first_supervised - 1)
    assert all(len(x) <= first_supervised for x in ds.ids)
    assert ds.n_dropped >= 1 and len(ds) + ds.n_dropped == 32
    assert all(m[1:].any() for m in ds.masks)


def test_mean_supervised_tokens_counts_shifted_targets():
    ds = data.TokenizedDataset(
        ids=[np.arange(5), np.arange(4)],
        masks=[np.array([1, 0, 1, 1, 0], np.uint8), np.array([0, 0, 1, 1], np.uint8)],
        key="hand",
    )
    assert ds.mean_supervised_tokens == pytest.approx((2 + 2) / 2)  # mask[0] never becomes a target


# ---------------------------------------------------------------------------- cache
def test_second_call_reads_the_cache_without_rendering(tokenizer, local_file, monkeypatch):
    calls = []
    real = Tokenizer.render_conversation
    monkeypatch.setattr(Tokenizer, "render_conversation", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    first = data.load_tokenized(str(local_file), "", "train", tokenizer, 200)
    n_rendered = len(calls)
    assert n_rendered == 32
    key_file = data.cache_path(first.key)
    assert key_file.is_file()
    second = data.load_tokenized(str(local_file), "", "train", tokenizer, 200)
    assert len(calls) == n_rendered
    assert second.key == first.key
    assert [x.tolist() for x in second.ids] == [x.tolist() for x in first.ids]
    assert [x.tolist() for x in second.masks] == [x.tolist() for x in first.masks]
    # another max_seq_len, or changed file contents, is another cache entry
    assert data.load_tokenized(str(local_file), "", "train", tokenizer, 199).key != first.key
    _write_jsonl(local_file, [SHORT, KNOWN])
    changed = data.load_tokenized(str(local_file), "", "train", tokenizer, 200)
    assert changed.key != first.key and len(changed) == 2


def _fill_cache(path, tokenizer, barrier, results):
    rendered = []
    real = tokenizer.render_conversation
    tokenizer.render_conversation = lambda *a, **k: rendered.append(1) or real(*a, **k)
    barrier.wait()  # both processes ask for the same cache entry at the same moment
    ds = data.load_tokenized(path, "", "train", tokenizer, 512)
    flat = np.concatenate(ds.ids).tobytes() + np.concatenate(ds.masks).tobytes()
    results.put((len(rendered), ds.key, flat))


def test_concurrent_fill_renders_once_and_both_get_identical_data(tokenizer, tmp_path):
    path = str(_write_jsonl(tmp_path / "race.jsonl", docqa.generate(300, seed=9)))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_fill_cache, args=(path, tokenizer, barrier, results)) for _ in range(2)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    rendered = sorted(o[0] for o in outcomes)
    assert rendered == [0, 300]  # one process tokenized, the other waited and read its file
    assert outcomes[0][1:] == outcomes[1][1:]
    key = outcomes[0][1]
    assert [p.name for p in _cache_files() if key in p.name] == [f"tokenized-{key}.npz"]
    assert not list(paths.data_cache_dir().glob("*.tmp"))


# ---------------------------------------------------------------------------- batches
def _first_batches(ds, seed, n=6, batch_size=4):
    it = data.iterate_batches(ds, batch_size, seed, pad_id=0)
    return [next(it) for _ in range(n)]


def test_batch_order_is_fixed_by_the_seed(tokenizer):
    ds = data.load_tokenized("docqa", "", "validation", tokenizer, 256)
    a, b, c = _first_batches(ds, 0), _first_batches(ds, 0), _first_batches(ds, 1)
    assert all(torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets) for x, y in zip(a, b))
    assert not all(x.inputs.shape == y.inputs.shape and torch.equal(x.inputs, y.inputs) for x, y in zip(a, c))
    for batch in a:
        assert batch.inputs.dtype == batch.targets.dtype == torch.int64
        assert batch.inputs.shape[0] == 4 and batch.inputs.shape == batch.targets.shape
        assert batch.n_supervised == int((batch.targets != -1).sum()) > 0
        assert batch.inputs.shape[1] <= 256


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n = 10
    ds = data.TokenizedDataset(ids=[np.array([i, 100 + i]) for i in range(n)], masks=[np.array([0, 1], np.uint8)] * n, key="hand")
    batches = _first_batches(ds, seed=3, n=5, batch_size=4)  # 20 examples = 2 epochs, batches straddle them
    seen = [int(t) - 100 for b in batches for t in b.targets[:, 0]]
    assert sorted(seen[:n]) == list(range(n)) and sorted(seen[n:]) == list(range(n))
    assert seen[:n] != seen[n:]


def test_batches_without_targets_are_skipped_and_all_unsupervised_data_fails():
    ds = data.TokenizedDataset(
        ids=[np.array([1, 2, 3]), np.array([4, 5, 6])],
        masks=[np.array([0, 0, 0], np.uint8), np.array([0, 1, 1], np.uint8)],
        key="hand",
    )
    for batch in _first_batches(ds, seed=0, n=10, batch_size=1):
        assert batch.inputs.tolist() == [[4, 5]] and batch.targets.tolist() == [[5, 6]] and batch.n_supervised == 2
    dead = data.TokenizedDataset(ids=[np.array([1, 2])], masks=[np.array([1, 0], np.uint8)], key="dead")
    with pytest.raises(data.DatasetError, match="no example has a supervised target"):
        next(data.iterate_batches(dead, 2, 0, pad_id=0))
    with pytest.raises(data.DatasetError, match="batch_size=0"):
        next(data.iterate_batches(ds, 0, 0, pad_id=0))


def test_batch_smaller_dataset_than_batch_size_still_yields_full_batches():
    ds = data.TokenizedDataset(ids=[np.array([1, 2])], masks=[np.array([0, 1], np.uint8)], key="one")
    batch = next(data.iterate_batches(ds, 3, 0, pad_id=0))
    assert batch.inputs.tolist() == [[1]] * 3 and batch.n_supervised == 3
