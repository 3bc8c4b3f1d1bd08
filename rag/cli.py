"""Command line: `python -m rag index | ask | add-note | status | map | eval`.

A thin shell over `KnowledgeBase`: it parses flags, prints text or JSON, and turns library errors into
messages with exit code 1 (argparse uses 2 for usage errors). No retrieval logic lives here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence, TextIO

from rag.answer import SOURCE_ORDER, Answer, Answerer
from rag.chunk import context_line
from rag.config import Config
from rag.errors import ConfigError, IndexLockedError, RagError, StoreInUseError
from rag.filters import SearchFilter
from rag.knowledge import KnowledgeBase
from rag.load import parse_tags
from rag.render import percentile_label
from rag.retrieve import SEARCH_MODES, SearchResult, clean_question
from rag.sync import SyncReport


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--knowledge", metavar="DIR", help="knowledge folder (RAG_KNOWLEDGE_DIR; default knowledge)")
    common.add_argument("--db", metavar="DIR", help="embedded Chroma folder (RAG_DB_DIR; default .chroma)")
    common.add_argument("--model", help="sentence-transformers model name or path (RAG_MODEL)")
    common.add_argument(
        "--chroma-url", metavar="URL", help="use a Chroma server, e.g. http://127.0.0.1:8000 (RAG_CHROMA_URL)"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")

    parser = argparse.ArgumentParser(prog="python -m rag", description="Index Markdown notes and ask them questions.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("index", parents=[common], help="sync the index with the knowledge folder")

    ask = commands.add_parser("ask", parents=[common], help="sync, then print the chunks that best answer a question")
    ask.add_argument("question", nargs="?", help="the question; omit it for an interactive prompt")
    ask.add_argument("-k", type=int, default=5, metavar="N", help="how many hits (default 5)")
    ask.add_argument("--min-score", type=float, metavar="X", help="drop hits with a cosine similarity below X")
    ask.add_argument("--batch", metavar="FILE", help="one question per line ('-' for stdin); prints JSON lines")
    ask.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="only notes with this tag (repeatable: all of them)"
    )
    ask.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only notes whose path matches, e.g. 'recipes/*' (repeatable: any of them)",
    )
    ask.add_argument("--no-answer", action="store_true", help="print the sources only; write no answer")
    add_llm_arguments(ask)

    add = commands.add_parser(
        "add-note", parents=[common], help="write a new note into the knowledge folder and index it"
    )
    add.add_argument("--title", required=True)
    add.add_argument("--tags", default="", help="comma-separated tags")
    add.add_argument("--text", help="the Markdown body (read from stdin when absent)")
    add.add_argument("--name", help="file name inside the knowledge folder (default: from the title)")

    status = commands.add_parser("status", parents=[common], help="per-file index state, totals, model and database")
    status.add_argument(
        "--verify", action="store_true", help="ask vector search for each stored chunk by its own vector"
    )
    status.add_argument(
        "--repair", action="store_true", help="with --verify: rebuild the search graph when chunks are unreachable"
    )
    status.add_argument(
        "--sample", type=int, default=5000, metavar="N", help="verify a random N chunks of a larger index (5000)"
    )
    evaluation = commands.add_parser(
        "eval", parents=[common], help="score each search mode on your own questions (Recall@k, MRR, nDCG)"
    )
    evaluation.add_argument("questions", help="a .jsonl or .csv file of rows with 'question' and 'source'")
    evaluation.add_argument("-k", type=int, default=5, metavar="N", help="Recall@N and answer@N (default 5)")
    evaluation.add_argument(
        "--mode", action="append", choices=SEARCH_MODES, help="only this search mode (repeatable; default all)"
    )
    drawn = commands.add_parser(
        "map", parents=[common], help="sync, then draw the map of the notes (and a question on it) to a file"
    )
    drawn.add_argument("question", nargs="?", help="place this question on the map and ring its sources")
    drawn.add_argument("--out", default="map.html", metavar="FILE", help="the picture: .html or .svg (map.html)")
    drawn.add_argument("-k", type=int, default=5, metavar="N", help="how many sources to ring (default 5)")
    drawn.add_argument("--limit", type=int, default=2500, metavar="N", help="draw at most N chunks (2500)")
    return parser


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """The answer writer's flags (`--llm`, `--llm-url`, ...), shared by `ask` and `python -m demo`."""
    parser.add_argument("--llm", metavar="GGUF", help="answer with this GGUF model file, or 'smollm2' (RAG_LLM)")
    parser.add_argument("--llm-url", metavar="URL", help="answer with an OpenAI-compatible server (RAG_LLM_URL)")
    parser.add_argument("--llm-model", metavar="NAME", help="the model to ask that server for (RAG_LLM_MODEL)")
    parser.add_argument(
        "--llm-api-key", metavar="KEY", help="that server's API key (RAG_LLM_API_KEY; the variable keeps it out of ps)"
    )
    parser.add_argument("--llm-threads", type=int, metavar="N", help="llama.cpp threads (RAG_LLM_THREADS; 0: cores-1)")


def llm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `Config` fields those flags set (None: not given)."""
    names = ("llm", "llm_url", "llm_model", "llm_api_key", "llm_threads")
    return {name: getattr(args, name) for name in names}


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    try:
        config = Config.from_env().replace(
            knowledge_dir=args.knowledge, db_dir=args.db, model=args.model, chroma_url=args.chroma_url
        )
        if args.command == "ask":
            config = config.replace(**llm_settings(args))
        kb = KnowledgeBase(config)
        if args.command == "index":
            return _index(kb, args, out)
        if args.command == "ask":
            return _ask(kb, args, stdin, out)
        if args.command == "add-note":
            return _add_note(kb, args, stdin, out)
        if args.command == "map":
            return _map(kb, args, out)
        if args.command == "eval":
            return _eval(kb, args, out)
        return _status(kb, args, out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _eval(kb: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    from rag.evaluate import evaluate, format_evaluation, load_questions

    if args.k < 1:
        print("error: -k must be at least 1", file=sys.stderr)
        return 2
    questions = load_questions(Path(args.questions))  # a bad file fails before a sync that could take minutes
    try:
        _sync(kb, args, rebuild=False)
    except (IndexLockedError, StoreInUseError) as exc:
        print(f"warning: {exc}; evaluating the index as it is", file=sys.stderr)
    result = evaluate(kb, questions, k=args.k, modes=args.mode)
    if args.json:
        _print_json(result.to_dict(), out)
    else:
        print(format_evaluation(result), file=out)
    return 0


def _sync(kb: KnowledgeBase, args: argparse.Namespace, *, rebuild: bool = True) -> SyncReport:
    report = kb.sync(progress=not args.json and sys.stderr.isatty(), rebuild=rebuild)
    if report.rebuilt:
        print(f"rebuilt the index because {report.rebuilt}", file=sys.stderr)
    if report.rebuild_needed:
        print(f"warning: {report.rebuild_needed}", file=sys.stderr)
    if not args.json:
        for item in report.skipped:
            print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
        for item in report.warnings:
            print(f"warning {item.path}: {item.reason}", file=sys.stderr)
    return report


def _index(kb: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    report = _sync(kb, args)
    if args.json:
        _print_json(asdict(report), out)
    else:
        print(
            f"{report.notes} notes, {report.chunks} chunks in {kb.store.location}: {report.added} added, "
            f"{report.updated} updated, {report.removed} removed, {report.unchanged} unchanged, "
            f"{len(report.skipped)} skipped ({report.seconds:.2f} s)",
            file=out,
        )
    return 0


def _ask(kb: KnowledgeBase, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    if args.k < 1:
        print("error: -k must be at least 1", file=sys.stderr)
        return 2
    args.only = SearchFilter.of(args.tag, args.path) or None
    if args.question is not None and not args.batch:
        clean_question(args.question)  # an empty question fails before a sync that could take minutes
    try:
        _sync(kb, args, rebuild=False)
    except (IndexLockedError, StoreInUseError) as exc:
        print(f"warning: {exc}; answering from the index as it is", file=sys.stderr)
    answerer = None if args.no_answer else kb.answerer
    if args.batch:
        source = stdin if args.batch == "-" else Path(args.batch).open(encoding="utf-8")
        with source:
            for line in source:
                if line.strip():
                    _print_json(_ask_json(kb, answerer, line, args), out, compact=True)
        return 0
    if args.question is not None:
        if args.json:
            _print_json(_ask_json(kb, answerer, args.question, args), out)
        elif answerer is None:
            print(format_result(kb.search(args.question, k=args.k, min_score=args.min_score, only=args.only)), file=out)
        else:
            _print_answer(answerer, args.question, (), args, out)
        return 0
    # The interactive prompt keeps the conversation, so a follow-up ("and GloVe?") is read with the turns before it.
    history: list[dict[str, str]] = []
    while True:
        try:
            question = input("ask> ")
        except EOFError:
            print(file=out)
            return 0
        if not question.strip():
            continue
        if answerer is None:
            print(format_result(kb.search(question, k=args.k, min_score=args.min_score, only=args.only)), file=out)
            continue
        answer = _print_answer(answerer, question, history, args, out)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]


def _ask_json(kb: KnowledgeBase, answerer: Answerer | None, question: str, args: argparse.Namespace) -> dict:
    if answerer is None:
        return kb.search(question, k=args.k, min_score=args.min_score, only=args.only).to_dict()
    return answerer.answer(question, k=args.k, min_score=args.min_score, only=args.only).result_dict()


def _print_answer(
    answerer: Answerer, question: str, history: Sequence[dict[str, str]], args: argparse.Namespace, out: TextIO
) -> Answer:
    """Stream a model's answer as it is written, then print the checked answer and its sources."""
    shown = 0
    final = None
    for final in answerer.stream(question, history=history, k=args.k, min_score=args.min_score, only=args.only):
        if not final.final and out.isatty():
            out.write(final.text[shown:])
            out.flush()
            shown = len(final.text)
    assert final is not None
    if shown:
        out.write("\r\x1b[J" if out.isatty() else "\n")
    print(format_answer(final), file=out)
    return final


def _add_note(kb: KnowledgeBase, args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    body = args.text if args.text is not None else stdin.read()
    note = kb.add_note(args.title, body, tags=parse_tags(args.tags), name=args.name)
    if args.json:
        _print_json(asdict(note), out)
    else:
        print(Path(kb.config.knowledge_dir) / note.path, file=out)
    return 0


def _status(kb: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    if args.repair and not args.verify:
        print("error: --repair goes with --verify", file=sys.stderr)
        return 2
    if args.sample < 1:
        print("error: --sample must be at least 1", file=sys.stderr)
        return 2
    status = kb.status()
    check = None
    if args.verify:
        check = kb.repair(sample=args.sample) if args.repair else kb.verify(sample=args.sample)
    if args.json:
        _print_json({**asdict(status), **({"verify": asdict(check)} if check is not None else {})}, out)
        return 0 if check is None or not (check.after or check).unreachable else 1
    for f in status.files:
        detail = f" ({f.reason})" if f.reason else ""
        print(f"{f.state:<8} {f.path}  {f.chunks} chunks{detail}", file=out)
    counts = {
        s: sum(1 for f in status.files if f.state == s) for s in ("indexed", "stale", "new", "deleted", "skipped")
    }
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    print(f"\n{status.notes} notes, {status.chunks} chunks ({summary or 'no files'})", file=out)
    print(f"model: {status.model}\ndatabase: {status.db}\nknowledge: {status.knowledge}", file=out)
    if status.rebuild is not None:
        print(str(status.rebuild), file=out)
    if status.mismatch:
        print(f"warning: {status.mismatch}", file=out)
    if check is not None:
        print(str(check), file=out)
        for chunk_id in check.unreachable[:20]:
            print(f"  unreachable: {chunk_id}", file=out)
        if check.unreachable and check.after is None:
            print("run `python -m rag status --verify --repair` to rebuild the search graph", file=out)
        return 1 if (check.after or check).unreachable else 0
    return 0


def _map(kb: KnowledgeBase, args: argparse.Namespace, out: TextIO) -> int:
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".html", ".htm", ".svg"):
        raise ConfigError(f"--out {args.out}: the map is written as .html or .svg")
    question = clean_question(args.question) if args.question is not None else None
    _sync(kb, args, rebuild=False)
    path = kb.map(question, k=args.k, limit=args.limit).save(args.out)
    if args.json:
        _print_json({"out": str(path), "question": question}, out)
    else:
        print(f"wrote {path}", file=out)
    return 0


def format_result(result: SearchResult) -> str:
    """Hits as text for a terminal: score, percentile, title, heading path, `path:lines`, then the indented text."""
    if not result.hits:
        return "No matching chunks. Add notes to the knowledge folder or lower --min-score."
    lines = []
    if not result.confident:
        lines.append(f"No confident match: {result.reason}. Nearest chunks:\n")
    for rank, hit in enumerate(result.hits, 1):
        chunk = hit.chunk
        label = percentile_label(hit.percentile)
        percentile = f" ({label})" if label else ""
        weak = "  [weak]" if result.weak(hit) else ""
        lines.append(f"[{rank}] {hit.score:.2f}{percentile}  {context_line(chunk.title, chunk.heading)}{weak}")
        lines.append(f"    {chunk.location}")
        lines.extend("    " + line for line in chunk.text.splitlines())
        lines.append("")
    return "\n".join(lines).rstrip()


def format_answer(answer: Answer) -> str:
    """An answer for a terminal: what was searched (for a follow-up), the answer with unsupported sentences
    marked, then the numbered sources, each with the relevance that ordered it and its cosine similarity."""
    lines = []
    if answer.searched != answer.question:
        lines.append(f"(searched: {answer.searched})")
    if answer.sentences:
        parts = []
        for sentence in answer.sentences:
            marks = "".join(f" [{n}]" for n in sentence.citations)
            parts.append(sentence.text + marks + ("" if sentence.supported else " (unsupported)"))
        lines.append(" ".join(parts))
    else:
        lines.append(answer.text)
    if answer.model:
        lines.append(f"({answer.mode} by {answer.model}; {answer.unsupported} unsupported sentences)")
    if not answer.sources:
        return "\n".join(lines)
    lines += ["", f"Sources, in order of relevance ({SOURCE_ORDER}):", ""]
    for source in answer.sources:
        label = percentile_label(source.percentile)
        cosine = f"cosine {source.score:.2f}" + (f" ({label})" if label else "")
        weak = "  [weak]" if source.weak else ""
        title = context_line(source.title or source.source, source.heading)
        lines.append(f"[{source.number}] relevance {source.rank_score:.2f}, {cosine}  {title}{weak}")
        lines.append(f"    {source.location}")
        lines.extend("    " + line for line in source.text.splitlines())
        lines.append("")
    return "\n".join(lines).rstrip()


def _print_json(value: Any, out: TextIO, *, compact: bool = False) -> None:
    out.write(json.dumps(value, ensure_ascii=False, indent=None if compact else 2) + "\n")
    out.flush()
