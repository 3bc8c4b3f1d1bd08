"""Answers: a question (and the conversation before it) in, a checked answer with numbered sources out.

The steps, each its own function: make a follow-up standalone (`standalone_question`), search, gather readable
passages (`rag.passage`), refuse when retrieval is not confident (no model is asked), let the configured writer
(`rag.generate`) write, then check every citation (`check_citations`): a number that names no source is dropped,
and a sentence whose cited passage does not support it (cosine similarity of the sentence to the passage's
sentences, by the same embedding model) is marked unsupported and counted. A model that says the sources lack the
answer gives the same "not in your notes" verdict as a search that found nothing confident.

Generation runs through a bounded queue: one answer is written at a time and a few wait; beyond that `BusyError`
says so at once. The chat, the CLI, the widget and the OpenAI-compatible endpoint all call `Answerer`.
"""

from __future__ import annotations

import collections
import re
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from rag.embed import Embedder
from rag.errors import RagError
from rag.generate import NOT_IN_NOTES, AnswerWriter, ExtractiveWriter, Message, make_writer, split_sentences
from rag.passage import Source, file_reader, gather_sources
from rag.retrieve import SearchResult

if TYPE_CHECKING:
    from rag.filters import SearchFilter
    from rag.knowledge import KnowledgeBase

MODES = ("extractive", "generated", "refused")
# A sentence counts as supported when its cosine similarity to the closest sentence of a passage it cites (or to
# the whole passage) reaches this; a quoted sentence scores 1.0. bench/answers.py prints the spread.
SUPPORT_AT = 0.6
# How sources are ordered, in words; every interface that lists sources shows it beside them.
SOURCE_ORDER = (
    "relevance is the score search ranks by: in hybrid search 0.6 x meaning + 0.4 x keywords, each scaled from "
    "0 to 1 among the candidates; cosine is how close in meaning the question and the passage are, 1 the same, "
    "0 unrelated"
)
# Answers written at once, and how many more may wait for their turn before a request is told the model is busy.
WRITING_SLOTS = 1
WAITING_SLOTS = 3

# Wordings by which a model says the sources lack the answer.
_REFUSAL = re.compile(
    r"not in the notes|(?:do|does|did) not (?:contain|cover|mention|say|provide|include|answer)|no information|"
    r"(?:cannot|can't|can not|unable to) (?:answer|find|determine|tell)|not (?:mentioned|provided|covered|stated)",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# The end of a sentence of an answer: its stop and the markers after it, before the next sentence or the end.
_SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s+[\"'(*_A-Z0-9\[]|\s*$)")
# Words by which a question leans on the one before it.
_REFERS_BACK = re.compile(
    r"\b(?:it|its|it's|they|them|their|theirs|this|that|these|those|he|she|him|her|his|the same|former|latter)\b",
    re.IGNORECASE,
)
# A longer question names its subject: only a short one that refers back is read as a follow-up.
FOLLOW_UP_WORDS = 12
_CONTINUES = re.compile(r"^\s*(?:and|or|but|also|so|what about|how about|why not|then|same for)\b", re.IGNORECASE)
_CONTENT_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]{2,}")
_QUESTION_WORDS = frozenset(
    "what how why who whom whose when where which does did can could would should will are was were the and for "
    "with about more tell explain example examples mean means".split()
)


class BusyError(RagError):
    """Too many answers are being written or waiting; the message says to try again."""


@dataclass(frozen=True)
class Sentence:
    """One sentence of an answer, the sources it cites, and whether they support it."""

    text: str
    citations: tuple[int, ...]
    supported: bool
    # Best cosine similarity to a cited passage (None: the sentence cites nothing).
    support: float | None


@dataclass(frozen=True)
class Answer:
    """A written answer with its sources; `text` keeps only valid [n] markers.

    `mode` is "extractive" (quoted sentences), "generated" (a model wrote it) or "refused" (the notes do not
    cover the question: nothing confident was found, or the model said so). `searched` is the question that was
    searched, which differs from `question` for a follow-up. While an answer streams, `final` is False and the
    checks are not yet made.
    """

    question: str
    searched: str
    mode: str
    text: str
    sources: list[Source] = field(default_factory=list)
    result: SearchResult | None = field(default=None, repr=False)
    sentences: list[Sentence] = field(default_factory=list)
    model: str | None = None
    reason: str = ""
    dropped: list[int] = field(default_factory=list)
    final: bool = True
    stopped: bool = False

    @property
    def citations(self) -> list[int]:
        """The source numbers the answer cites, each once, in order of first use."""
        seen: dict[int, None] = {}
        for sentence in self.sentences:
            seen.update(dict.fromkeys(sentence.citations))
        return list(seen)

    @property
    def unsupported(self) -> int:
        return sum(1 for s in self.sentences if not s.supported)

    def to_dict(self) -> dict[str, Any]:
        """`answer` in `python -m rag ask --json`: mode, text, citations, unsupported, model, and the details."""
        return {
            "mode": self.mode,
            "text": self.text,
            "citations": self.citations,
            "unsupported": self.unsupported,
            "model": self.model,
            "searched": self.searched,
            "reason": self.reason,
            "sentences": [
                {"text": s.text, "citations": list(s.citations), "supported": s.supported, "support": s.support}
                for s in self.sentences
            ],
            "dropped_citations": self.dropped,
            "stopped": self.stopped,
        }

    def result_dict(self) -> dict[str, Any]:
        """The whole JSON of `ask --json`: the search result's fields, `sources` and `answer`."""
        data: dict[str, Any] = {"question": self.question, "hits": []}
        if self.result is not None:
            data = self.result.to_dict()
        data["sources"] = [s.to_dict() for s in self.sources]
        data["answer"] = self.to_dict()
        return data


def standalone_question(question: str, history: Sequence[Message], writer: AnswerWriter | None = None) -> str:
    """What to search for a follow-up: the writer's rewrite when it has a model, else the rule below.

    The rule: a question that leans on an earlier one (a short one, of at most `FOLLOW_UP_WORDS` words, that names
    "it", "they", "this", "that" and the like; one that starts with "and", "what about" or "how about"; or one
    that holds nothing but question words, as "Why?" or "Tell me more") is searched together with the last
    question asked before it; any other question is searched as asked.
    """
    earlier = [m["content"] for m in history if m.get("role") == "user" and m.get("content", "").strip()]
    if not earlier:
        return question
    if writer is not None:
        rewritten = writer.condense(question, history)
        if rewritten:
            return rewritten
    if not leans_back(question):
        return question
    return f"{earlier[-1].strip()} {question.strip()}"


def leans_back(question: str) -> bool:
    """Whether a question reads as a follow-up of the one before (see `standalone_question`)."""
    words = [w for w in _CONTENT_WORD.findall(question) if w.lower() not in _QUESTION_WORDS]
    short = len(question.split()) <= FOLLOW_UP_WORDS
    return bool((short and _REFERS_BACK.search(question)) or _CONTINUES.match(question) or not words)


def check_citations(text: str, sources: Sequence[Source], embedder: Embedder) -> tuple[str, list[Sentence], list[int]]:
    """Split `text` into sentences, keep the [n] that name a source, and check each sentence against its
    sources.

    Returns:
        The text with invalid markers removed, its sentences, and the invalid numbers that were dropped.
    """
    numbers = {s.number for s in sources}
    dropped: list[int] = []
    pieces: list[tuple[str, tuple[int, ...]]] = []
    for raw in _split_answer(text):
        cited: list[int] = []
        for group in _CITATION.findall(raw):
            for n in (int(x) for x in group.split(",")):
                (cited if n in numbers else dropped).append(n)
        bare = " ".join(_CITATION.sub(" ", raw).split())
        if bare:
            pieces.append((bare, tuple(dict.fromkeys(cited))))
    by_number = {s.number: s for s in sources}
    support = _support(embedder, pieces, by_number)
    sentences = [
        Sentence(bare, cited, bool(cited) and score is not None and score >= SUPPORT_AT, score)
        for (bare, cited), score in zip(pieces, support, strict=True)
    ]
    cleaned = " ".join(s.text + "".join(f" [{n}]" for n in s.citations) for s in sentences)
    return cleaned, sentences, dropped


def _split_answer(text: str) -> list[str]:
    """Sentences of an answer, each with the markers that follow it."""
    out = []
    for paragraph in re.split(r"\n\s*\n|\n(?=\s*(?:[-*+]|\d+[.)])\s)", text):
        line = " ".join(paragraph.split())
        line = re.sub(r"^(?:[-*+]|\d+[.)])\s+", "", line)
        start = 0
        for end in _SENTENCE_END.finditer(line):
            out.append(line[start : end.end()].strip())
            start = end.end()
        out.append(line[start:].strip())
    return [piece for piece in out if piece]


def _support(
    embedder: Embedder, pieces: Sequence[tuple[str, tuple[int, ...]]], sources: dict[int, Source]
) -> list[float | None]:
    """Each sentence's best cosine similarity to a cited passage or one of its sentences (None: cites none).

    A sentence that a cited passage holds word for word (a quote, as the extractive writer writes) scores 1.0
    without a model call; the others are embedded with the passages they cite.
    """
    out: list[float | None] = [None] * len(pieces)
    pending = []
    for row, (text, numbers) in enumerate(pieces):
        if not numbers:
            continue
        if any(_squeeze(text) in _squeeze(sources[n].text) for n in numbers):
            out[row] = 1.0
        else:
            pending.append(row)
    if not pending:
        return out
    cited = sorted({n for row in pending for n in pieces[row][1]})
    targets: list[tuple[int, str]] = []
    for n in cited:
        passage = sources[n].text
        targets.append((n, passage))
        targets.extend((n, s) for s in split_sentences(passage))
    texts = [pieces[row][0] for row in pending] + [t[1] for t in targets]
    vectors = np.asarray(_embed_short(embedder, texts), dtype=np.float32)
    asked, against = vectors[: len(pending)], vectors[len(pending) :]
    similarity = asked @ against.T
    for i, row in enumerate(pending):
        columns = [c for c, (n, _) in enumerate(targets) if n in pieces[row][1]]
        out[row] = round(float(similarity[i, columns].max()), 4) if columns else None
    return out


def _embed_short(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Vectors of sentences and passages through the embedder's question encoder when it has one (the fast ONNX
    export of the same model), else its batch method."""
    embed = getattr(embedder, "embed_queries", None) or embedder.embed_batch
    return embed(list(texts))


def _squeeze(text: str) -> str:
    """Text with runs of white space made one space, for a word-for-word comparison across line breaks."""
    return " ".join(text.split())


def says_not_in_notes(text: str) -> bool:
    """Whether a model's answer says the sources do not hold the answer."""
    stripped = text.strip()
    return not stripped or NOT_IN_NOTES in stripped.upper() or bool(_REFUSAL.search(stripped[:300]))


class Answerer:
    """Answers questions from a knowledge base with one writer (default: `config`'s, see `make_writer`)."""

    def __init__(self, kb: KnowledgeBase, writer: AnswerWriter | None = None) -> None:
        self.kb = kb
        self.writer = writer or make_writer(kb.config, self._sentence_similarity)
        self._slots = threading.Semaphore(WRITING_SLOTS)
        self._admitted = threading.BoundedSemaphore(WRITING_SLOTS + WAITING_SLOTS)

    @property
    def generates(self) -> bool:
        """Whether a model writes the answers (else they are extractive)."""
        return not isinstance(self.writer, ExtractiveWriter)

    def answer(
        self,
        question: str,
        *,
        history: Sequence[Message] = (),
        k: int = 5,
        min_score: float | None = None,
        only: SearchFilter | None = None,
    ) -> Answer:
        """The final answer (see `stream`)."""
        drafts = self.stream(question, history=history, k=k, min_score=min_score, only=only)
        return collections.deque(drafts, maxlen=1)[0]

    def stream(
        self,
        question: str,
        *,
        history: Sequence[Message] = (),
        k: int = 5,
        min_score: float | None = None,
        stop: threading.Event | None = None,
        only: SearchFilter | None = None,
    ) -> Iterator[Answer]:
        """Drafts of the answer as it is written (`final` False), then the checked answer; `only` keeps the search
        to notes with given tags or paths.

        Raises:
            EmptyQuestionError: the question is blank.
            BusyError: the writing queue is full.
            ModelError: the model failed.
        """
        searched = standalone_question(question, history, self.writer if self.generates else None)
        result = self.kb.search(searched, k=k, min_score=min_score, only=only)
        sources = gather_sources(result, file_reader(self.kb.config.knowledge_dir))
        base = Answer(question, searched, "refused", "", sources, result, model=self.writer.model)
        if not result.hits:
            text = "Nothing in your notes matches this question."
            if only:
                text = f"No note matches {only.describe()}; widen the filter or remove it."
            yield replace(base, text=text, reason=result.reason or "no hits", model=None)
            return
        if not result.confident:
            reason = f"not in your notes: {result.reason}" if result.reason else "not in your notes"
            text = "Your notes do not seem to cover this. The nearest passages are below, marked weak."
            yield replace(base, text=text, reason=reason, model=None)
            return
        mode = "generated" if self.generates else "extractive"
        if not self._admitted.acquire(blocking=False):
            raise BusyError(
                f"the model is busy writing {WRITING_SLOTS} answer and {WAITING_SLOTS} more are waiting; "
                "try again in a moment"
            )
        try:
            with self._slots:
                text = ""
                for piece in self.writer.write(searched, sources, stop=stop):
                    text += piece
                    if mode == "generated":
                        yield replace(base, mode=mode, text=text, final=False)
                stopped = bool(stop is not None and stop.is_set())
        finally:
            self._admitted.release()
        if mode == "generated" and not stopped and says_not_in_notes(text):
            yield replace(
                base,
                text="Your notes do not answer this (the model found no answer in the sources).",
                reason="the model said the sources do not answer it",
                model=self.writer.model,
            )
            return
        if mode == "extractive" and not text.strip():
            text = "The closest passages have no sentences to quote; open the sources below to read them."
            yield replace(base, mode=mode, text=text, model=None)
            return
        cleaned, sentences, dropped = check_citations(text, sources, self.kb.embedder)
        yield replace(base, mode=mode, text=cleaned, sentences=sentences, dropped=dropped, stopped=stopped)

    def _sentence_similarity(self, question: str, sentences: Sequence[str]) -> list[float]:
        # The model's vectors are unit length, so a dot product is their cosine similarity.
        vectors = np.asarray(_embed_short(self.kb.embedder, [question, *sentences]))
        return [float(x) for x in vectors[1:] @ vectors[0]]
