"""`%ask` and `%%ask`: ask the knowledge base from any notebook cell and see the answer above its sources.

    %load_ext demo
    %ask what is cosine similarity?
    %ask -k 3 --min-score 0.3 how do I pick a chunk size?
    %ask --no-answer -k 3 embeddings
    %ask --tag nlp --path 'glove*' what does it learn from?

    %%ask -k 3
    A longer question that spans
    several lines.

The magic returns an `AskResult` (`demo.widget`): the `SearchResult` with the answer written from it (by the
knowledge base's writer, `RAG_LLM` or extractive). It displays the answer, its [n] naming the numbered sources
listed below it with their relevance and cosine score bars; assign it (`result = %ask ...`) to use the hits
(`result.hits`) or the answer (`result.answer`) in code. `--no-answer` searches only and returns the plain
`SearchResult`, a table of scored hits (`rag.render`). By default it asks the shared knowledge base of the
`RAG_*` settings; `--kb NAME` picks a `KnowledgeBase` variable of the notebook instead.

The magic keeps the conversation of the notebook, one per knowledge base, so a follow-up (`%ask how is it
different from GloVe?`) is read with the questions before it, as in the chat; `--new` starts a new conversation
with this question.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from demo.widget import AskResult
from rag.errors import RagError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase, shared_knowledge_base
from rag.retrieve import SearchResult

USAGE = (
    "usage: %ask [-k N] [--min-score X] [--tag T]... [--path GLOB]... [--kb NAME] [--no-sync] [--no-answer] [--new] "
    "[--] QUESTION"
)
# Turns of the conversation the magic keeps (question and answer each count as one).
KEEP_TURNS = 12


# `%ask ...` alone or assigned (`result = %ask ...`), at the start of a line.
_ASK_LINE = re.compile(r"^(\s*)((?:[A-Za-z_]\w*\s*=\s*)?)%ask(?:\s+(.*?))?\s*$")


def keep_question_marks(lines: list[str]) -> list[str]:
    """Turn `%ask` lines into explicit magic calls before IPython reads a trailing `?` as a help request.

    Without this, `%ask what is a vector?` would show help for `vector` instead of asking. Cells that start
    with `%%` are left alone: their body is the cell magic's text.
    """
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        match = _ASK_LINE.match(line.rstrip("\n"))
        if match is None:
            out.append(line)
            continue
        indent, target, rest = match.group(1), match.group(2), match.group(3) or ""
        out.append(f"{indent}{target}get_ipython().run_line_magic('ask', {rest!r})\n")
    return out


def parse_options(line: str) -> tuple[dict[str, Any], str]:
    """Split the leading options of a magic line from the question, which is kept exactly as typed.

    Questions often contain quotes ("what's ...") that a shell-style parser would choke on, so only the
    options are tokenised. `--` ends the options, for a question that starts with a dash.

    Raises:
        UsageError: an unknown option, or an option without a valid value.
    """
    options: dict[str, Any] = {
        "k": 5,
        "min_score": None,
        "kb": None,
        "sync": True,
        "answer": True,
        "new": False,
        "tags": [],
        "paths": [],
    }
    rest = line.strip()
    while rest.startswith("-"):
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        if word == "--":
            break
        if word in ("--no-sync", "--no-answer"):
            options[word[5:]] = False
            continue
        if word == "--new":
            options["new"] = True
            continue
        if word in ("--tag", "--path"):
            value, _, rest = rest.partition(" ")
            rest = rest.lstrip()
            if not value:
                raise UsageError(f"{word} needs a value; {USAGE}")
            options["tags" if word == "--tag" else "paths"].append(value.strip("'\""))
            continue
        names = {"-k": ("k", int), "--min-score": ("min_score", float), "--kb": ("kb", str)}
        if word not in names:
            raise UsageError(f"unknown option {word!r}; {USAGE}")
        key, kind = names[word]
        value, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        try:
            options[key] = kind(value) if value else None
        except ValueError:
            options[key] = None
        if options[key] is None:
            raise UsageError(f"{word} needs a {kind.__name__} value, got {value!r}; {USAGE}")
    if options["k"] < 1:
        raise UsageError(f"-k must be at least 1, got {options['k']}")
    return options, rest


@magics_class
class AskMagics(Magics):
    """`%ask` as a line and a cell magic, with the notebook's conversation per knowledge base."""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self.conversations: dict[int, list[dict[str, str]]] = {}

    @line_cell_magic
    def ask(self, line: str, cell: str | None = None) -> SearchResult | None:
        """Ask the knowledge base a question; shows the answer and its numbered sources. Options: -k N,
        --min-score X, --tag T, --path GLOB, --kb NAME, --no-sync, --no-answer, --new (a new conversation)."""
        options, question = parse_options(line)
        if cell is not None:
            question = (question + "\n" + cell).strip()
        kb = self._knowledge_base(options["kb"])
        try:
            if options["sync"]:
                kb.sync(rebuild=False)
            only = SearchFilter.of(options["tags"], options["paths"]) or None
            if not options["answer"]:
                return kb.search(question, k=options["k"], min_score=options["min_score"], only=only)
            history = self.conversations.setdefault(id(kb), [])
            if options["new"]:
                history.clear()
            answer = kb.answerer.answer(
                question, history=history, k=options["k"], min_score=options["min_score"], only=only
            )
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]
            del history[:-KEEP_TURNS]
            return AskResult.of(answer)
        except RagError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None

    def _knowledge_base(self, name: str | None) -> KnowledgeBase:
        if name is None:
            return shared_knowledge_base()
        value = self.shell.user_ns.get(name) if self.shell is not None else None
        if not isinstance(value, KnowledgeBase):
            raise UsageError(f"--kb {name}: no KnowledgeBase variable of that name in this notebook")
        return value


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext demo.magic`: register `%ask` and `%%ask`."""
    ipython.register_magics(AskMagics)
    cleanup = ipython.input_transformers_cleanup
    if keep_question_marks not in cleanup:
        cleanup.append(keep_question_marks)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext`: stop rewriting `%ask` lines (IPython keeps the magic itself registered)."""
    if keep_question_marks in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(keep_question_marks)
