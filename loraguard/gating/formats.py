"""The report formats every gating command offers (text, markdown, json: core.vocabulary's names), dispatched once."""

from __future__ import annotations

import json
from types import ModuleType

from loraguard.core.vocabulary import canonical_format

FORMATS = ("text", "markdown", "json")


def render(fmt: str, renderer: ModuleType, subject: object, **text_options: object) -> str:
    """`renderer` provides render_text, render_markdown and to_json for `subject`; options go to render_text."""
    fmt = canonical_format(fmt)
    if fmt == "json":
        return json.dumps(renderer.to_json(subject), indent=2)
    if fmt == "markdown":
        return renderer.render_markdown(subject)
    return renderer.render_text(subject, **text_options)
