"""The DocQA generator: determinism, the shipped files, answers grounded in the documents."""

import json
import pytest

from fractal_llm.gpt import docqa
from fractal_llm.gpt.data import DOCQA_DIR

SHIPPED = {split: DOCQA_DIR / f"{split}.jsonl" for split in docqa.SPLITS}


def _read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def _document_and_qa(conversation):
    """(document text, [(question, answer), ...]) of a generated conversation."""
    turns = [m for m in conversation["messages"] if m["role"] != "system"]
    document, first_question = turns[0]["content"].rsplit("\n\nQuestion: ", 1)
    questions = [first_question] + [t["content"].removeprefix("Question: ") for t in turns[2::2]]
    answers = [t["content"] for t in turns[1::2]]
    return document, list(zip(questions, answers))


def test_same_arguments_give_the_same_conversation_and_others_differ():
    assert docqa.make_conversation(0, "train", 7) == docqa.make_conversation(0, "train", 7)
    assert docqa.make_conversation(0, "train", 7) != docqa.make_conversation(1, "train", 7)
    assert docqa.make_conversation(0, "train", 7) != docqa.make_conversation(0, "train", 8)
    assert docqa.generate(5, seed=3) == docqa.generate(5, seed=3)


def test_cli_rewrites_the_shipped_files_byte_for_byte(tmp_path):
    docqa.main(["--out", str(tmp_path)])
    for split, path in SHIPPED.items():
        assert (tmp_path / f"{split}.jsonl").read_bytes() == path.read_bytes()


def test_shipped_sizes():
    counts = {split: len(_read_lines(path)) for split, path in SHIPPED.items()}
    assert counts == {"train": docqa.DEFAULT_TRAIN, "validation": docqa.DEFAULT_VALIDATION}
    total_bytes = sum(path.stat().st_size for path in SHIPPED.values())
    assert 0.5e6 < total_bytes < 3e6


def test_every_answer_appears_verbatim_in_its_document_and_roles_alternate():
    rows = [json.loads(line) for line in _read_lines(SHIPPED["train"])]
    n_two_turn = n_system = 0
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        n_system += roles[0] == "system"
        body = roles[1:] if roles[0] == "system" else roles
        assert body in (["user", "assistant"], ["user", "assistant"] * 2)
        document, qa = _document_and_qa(row)
        n_two_turn += len(qa) == 2
        for question, answer in qa:
            assert question.endswith("?")
            assert answer and answer in document
        if len(qa) == 2:
            assert qa[0] != qa[1]
    # both optional features occur at roughly their configured rates
    assert 0.15 < n_two_turn / len(rows) < 0.35
    assert 0.2 < n_system / len(rows) < 0.4


def test_documents_are_short_and_every_kind_occurs():
    texts = [_document_and_qa(docqa.make_conversation(0, "train", i))[0] for i in range(600)]
    assert all(150 <= len(t) <= 800 for t in texts)
    for marker in ("INVOICE", "MEMORANDUM", "SHIP TO:", "EMPLOYEE INFORMATION FORM", "PURCHASE ORDER", "Transaction ID"):
        assert sum(marker in t for t in texts) > 50, marker


def test_validation_documents_do_not_repeat_train_documents():
    train_docs = {_document_and_qa(json.loads(line))[0] for line in _read_lines(SHIPPED["train"])}
    validation_docs = [_document_and_qa(json.loads(line))[0] for line in _read_lines(SHIPPED["validation"])]
    assert not train_docs.intersection(validation_docs)
    assert len(set(validation_docs)) == len(validation_docs)


def test_document_texts_are_deterministic_and_look_like_the_chat_documents():
    texts = docqa.document_texts(400, seed=0)
    assert texts == docqa.document_texts(400, seed=0)
    assert texts != docqa.document_texts(400, seed=1)
    with_qa = [t for t in texts if "\n\nQuestion: " in t]
    assert 0.35 < len(with_qa) / len(texts) < 0.65
    for text in with_qa:
        for block in text.split("\n\nQuestion: ")[1:]:
            question, answer = block.split("\nAnswer: ")
            assert question.endswith("?") and answer in text.split("\n\nQuestion: ")[0]
    # same document families as the chat data, and not the chat documents themselves
    chat_docs = {_document_and_qa(docqa.make_conversation(0, "train", i))[0] for i in range(400)}
    plain = {t.split("\n\nQuestion: ")[0] for t in texts}
    assert not chat_docs.intersection(plain)
    for marker in ("INVOICE", "MEMORANDUM", "SHIP TO:", "PURCHASE ORDER"):
        assert any(marker in t for t in texts)


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match="split='test'"):
        docqa.make_conversation(0, "test", 0)
