"""The three report formats every gating command offers, dispatched once."""

from __future__ import annotations

import json
from types import ModuleType

FORMATS = ("text", "markdown", "json")


def render(fmt: str, renderer: ModuleType, subject: object, **text_options: object) -> str:
    """`renderer` provides render_text, render_markdown and to_json for `subject`; options go to render_text."""
    if fmt == "json":
        return json.dumps(renderer.to_json(subject), indent=2)
    if fmt == "markdown":
        return renderer.render_markdown(subject)
    return renderer.render_text(subject, **text_options)
