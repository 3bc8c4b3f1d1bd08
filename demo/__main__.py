"""`python -m demo`: sync the knowledge folder, watch it, and serve the chat at http://127.0.0.1:7860.

Flags bind to `rag.config.Config` fields (the notes, the store, the model) or to `demo.settings.ServerSettings`
fields (address, login, host names), so each also reads from its `RAG_*` variable (flags win).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Sequence

from demo.settings import ServerSettings
from rag.cli import add_llm_arguments, llm_settings
from rag.config import Config
from rag.errors import ConfigError, RagError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Serve the knowledge chat: answers from your notes with checked citations and a score per source.",
    )
    parser.add_argument("--host", help="address to listen on (RAG_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (RAG_PORT; default 7860)")
    parser.add_argument("--knowledge", metavar="DIR", help="knowledge folder (RAG_KNOWLEDGE_DIR; default knowledge)")
    parser.add_argument("--db", metavar="DIR", help="embedded Chroma folder (RAG_DB_DIR; default .chroma)")
    parser.add_argument("--model", help="sentence-transformers model name or path (RAG_MODEL)")
    parser.add_argument(
        "--chroma-url", metavar="URL", help="Chroma server, e.g. http://127.0.0.1:8000 (RAG_CHROMA_URL)"
    )
    add_llm_arguments(parser)
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="login for the chat and the API (RAG_AUTH)")
    parser.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma-separated host names the chat answers to besides its address and localhost, e.g. "
        "mybox.local,chat.example.org:8443 (RAG_ALLOWED_HOSTS)",
    )
    parser.add_argument(
        "--read-only", action="store_true", default=None, help="hide and refuse note writing (RAG_READ_ONLY)"
    )
    parser.add_argument(
        "--allow-remote-without-auth",
        action="store_true",
        help="allow a non-loopback --host without --auth (only on a network you trust)",
    )
    return parser


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_env().replace(
            knowledge_dir=args.knowledge,
            db_dir=args.db,
            model=args.model,
            chroma_url=args.chroma_url,
            read_only=args.read_only,
            **llm_settings(args),
        )
        settings = ServerSettings.from_env().replace(
            host=args.host, port=args.port, auth=args.auth, allowed_hosts=args.allowed_hosts
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.auth and not args.allow_remote_without_auth:
        print(
            f"error: refusing to listen on {settings.host} without --auth: anyone who can reach this machine could "
            "read every note and add new ones. Pass --auth user:password (or RAG_AUTH), or "
            "--allow-remote-without-auth on a network you trust.",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # transformers draws a bar for the tenth of a second it takes to load the weights: quiet on a terminal.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # bm25s sets its own logger to DEBUG when it is imported (later than this), and would print "Building index
    # from tokens" at every sync: the handler drops its records below warnings instead.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: record.levelno >= logging.WARNING or not record.name.startswith("bm25s"))

    import uvicorn

    from demo.server import create_server
    from demo.watch import FolderWatcher
    from rag.knowledge import KnowledgeBase

    kb = KnowledgeBase(config)
    watcher = FolderWatcher(kb)
    try:
        kb.claim()
        mismatch = kb.mismatch()
        if mismatch:
            # An index built for other settings keeps answering while the watcher builds the new one beside it.
            print(f"{mismatch}: serving it while the new one is built in the background", file=sys.stderr)
        else:
            print(f"indexing {config.knowledge_dir} ...", file=sys.stderr)
            report = watcher.sync(progress=sys.stderr.isatty())
            for item in report.skipped:
                print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
            print(
                f"{report.notes} notes, {report.chunks} chunks ({report.added} added, {report.updated} updated, "
                f"{report.removed} removed, {report.embedded} chunks embedded) in {report.seconds:.1f} s",
                file=sys.stderr,
            )
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = create_server(
        kb,
        read_only=config.read_only,
        auth=settings.auth,
        allowed_hosts=settings.allowed_hosts,
        watcher=watcher,
    )
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    mode = " (read-only)" if config.read_only else ""
    print(
        f"chat at http://{shown}:{settings.port}{mode}; watching {config.knowledge_dir}; Ctrl+C stops", file=sys.stderr
    )
    if not is_loopback(settings.host):
        names = ", ".join(settings.allowed_hosts) or "none yet"
        print(
            "it answers to this machine's addresses and localhost; names of this machine it should answer to "
            f"(for example mybox.local) go in --allowed-hosts (now: {names})",
            file=sys.stderr,
        )
    with watcher:
        if mismatch:
            watcher.notify()
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
