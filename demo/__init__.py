"""The chat's front ends: the Gradio web chat (`python -m demo`, `demo.app.build_app`) and its notebook forms
(inline app, in-kernel widget, `%ask`).

Importing this package loads nothing heavy; `%load_ext demo` registers the `%ask` magic.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext demo`: register `%ask` and `%%ask` (see `demo.magic`)."""
    from demo.magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from demo.magic import unload_ipython_extension as unload

    unload(ipython)
