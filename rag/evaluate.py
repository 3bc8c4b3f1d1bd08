"""Evaluation on your own questions: how well each search mode finds the note that answers them.

`load_questions` reads a CSV or JSON Lines file of rows with `question` and `source` (the expected note's path
relative to the knowledge folder, as `ask --json` names it), optionally `answer` (a phrase the right passage
holds) and `follow_up_of` (the question before it, for a follow-up: it is then searched as the chat would search
it). `evaluate` runs every question through each search mode and scores the ranked notes with ranx: Recall@k,
MRR@10 and nDCG@10, plus the misses with what came first instead. It reads the index and never writes it.

    python -m rag eval bench/questions/knowledge.jsonl
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rag.answer import standalone_question
from rag.errors import ConfigError, EvalInputError
from rag.knowledge import KnowledgeBase
from rag.passage import file_reader, gather_sources
from rag.retrieve import SEARCH_MODES

# How deep each ranking goes: MRR@10 and nDCG@10 need ten notes, Recall@k needs k.
DEPTH = 10


@dataclass(frozen=True)
class Question:
    question: str
    source: str
    answer: str | None = None
    follow_up_of: str | None = None
    row: int = 0


@dataclass
class ModeScore:
    """One search mode's figures over the questions."""

    mode: str
    recall: float
    mrr: float
    ndcg: float
    # Share of questions whose `answer` phrase is in the text of the first k sources (None: no row has one).
    answer_found: float | None = None
    misses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Evaluation:
    questions: int
    k: int
    modes: list[ModeScore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "k": self.k,
            "modes": {
                m.mode: {
                    f"recall@{self.k}": m.recall,
                    "mrr@10": m.mrr,
                    "ndcg@10": m.ndcg,
                    f"answer_found@{self.k}": m.answer_found,
                    "misses": m.misses,
                }
                for m in self.modes
            },
        }


def load_questions(path: Path) -> list[Question]:
    """Rows of a `.jsonl` or `.csv` file (any other suffix is read as JSON Lines).

    Raises:
        EvalInputError: the file is missing or unreadable, a line is not JSON, or a row lacks `question` or
            `source`; the message names the file and row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalInputError(f"cannot read the question file {path}: {exc}") from None
    rows: list[tuple[int, Any]] = []
    if path.suffix.lower() == ".csv":
        rows = [(n, row) for n, row in enumerate(csv.DictReader(text.splitlines()), 2)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalInputError(f"{path}, line {n}: not JSON ({exc.msg}); write one object per line") from None
    questions = []
    for n, row in rows:
        where = f"{path}, {'row' if path.suffix.lower() == '.csv' else 'line'} {n}"
        if not isinstance(row, dict):
            raise EvalInputError(f"{where}: expected an object with 'question' and 'source', got {type(row).__name__}")
        values = {key: str(row.get(key) or "").strip() for key in ("question", "source", "answer", "follow_up_of")}
        for key in ("question", "source"):
            if not values[key]:
                raise EvalInputError(f"{where}: the field '{key}' is missing or empty")
        questions.append(
            Question(values["question"], values["source"], values["answer"] or None, values["follow_up_of"] or None, n)
        )
    if not questions:
        raise EvalInputError(f"{path} holds no questions; write rows with 'question' and 'source'")
    return questions


def evaluate(
    kb: KnowledgeBase, questions: Sequence[Question], *, k: int = 5, modes: Sequence[str] | None = None
) -> Evaluation:
    """Each mode's Recall@k, MRR@10 and nDCG@10 over `questions`, by note: a question counts as found when its
    expected note is among the first notes of the ranking (several chunks of one note count once)."""
    try:
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate
    except ImportError as exc:
        raise ConfigError("rag eval needs ranx: .venv/bin/pip install ranx==0.3.21 (make install-dev has it)") from exc
    known = {s for s in _sources(kb)}
    unknown = sorted({q.source for q in questions} - known)
    if unknown:
        shown = ", ".join(unknown[:5])
        raise EvalInputError(f"the index holds no note {shown}; 'source' must be a path as `ask --json` prints it")
    qrels = Qrels({f"q{i}": {q.source: 1} for i, q in enumerate(questions)})
    reader = file_reader(kb.config.knowledge_dir)
    scores = []
    for mode in modes or SEARCH_MODES:
        ranking: dict[str, dict[str, float]] = {}
        misses, found, with_answer = [], 0, 0
        for i, q in enumerate(questions):
            history = [{"role": "user", "content": q.follow_up_of}] if q.follow_up_of else []
            searched = standalone_question(q.question, history)
            result = kb.search(searched, k=max(k, DEPTH) * 3, mode=mode)
            notes: list[str] = []
            for hit in result.hits:
                if hit.chunk.source not in notes:
                    notes.append(hit.chunk.source)
            notes = notes[:DEPTH]
            # ranx reads a ranking from scores: the first note scores highest.
            ranking[f"q{i}"] = {note: float(DEPTH - rank) for rank, note in enumerate(notes)} or {"": 0.0}
            if q.source not in notes[:k]:
                misses.append({"question": q.question, "searched": searched, "expected": q.source, "got": notes[:3]})
            if q.answer:
                with_answer += 1
                passages = gather_sources(result, reader, limit=k)
                found += any(q.answer.lower() in s.text.lower() for s in passages)
        with warnings.catch_warnings():
            # numba, under ranx, warns about its own integer casts on every first call.
            warnings.simplefilter("ignore")
            figures = ranx_evaluate(qrels, Run(ranking), [f"recall@{k}", "mrr@10", "ndcg@10"], make_comparable=True)
        scores.append(
            ModeScore(
                mode,
                round(float(figures[f"recall@{k}"]), 4),
                round(float(figures["mrr@10"]), 4),
                round(float(figures["ndcg@10"]), 4),
                round(found / with_answer, 4) if with_answer else None,
                misses,
            )
        )
    return Evaluation(len(questions), k, scores)


def _sources(kb: KnowledgeBase) -> set[str]:
    return {chunk.source for chunk in kb.store.iter_chunks()}


def format_evaluation(evaluation: Evaluation) -> str:
    """The figures as a table, then each mode's misses with what came first."""
    k = evaluation.k
    header = f"{'mode':<8} {f'Recall@{k}':>9} {'MRR@10':>7} {'nDCG@10':>8} {f'answer@{k}':>9}"
    lines = [f"{evaluation.questions} questions, notes ranked by each search mode", "", header]
    for m in evaluation.modes:
        answer = "-" if m.answer_found is None else f"{m.answer_found:.3f}"
        lines.append(f"{m.mode:<8} {m.recall:>9.3f} {m.mrr:>7.3f} {m.ndcg:>8.3f} {answer:>9}")
    lines.append(f"(answer@{k}: the row's answer phrase is in the text of the first {k} sources)")
    for m in evaluation.modes:
        if not m.misses:
            continue
        lines += ["", f"{m.mode}: {len(m.misses)} expected notes not in the first {k}"]
        for miss in m.misses:
            got = ", ".join(miss["got"]) or "nothing"
            lines.append(f"  {miss['question']!r}: expected {miss['expected']}, got {got}")
    return "\n".join(lines)
