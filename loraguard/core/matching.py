"""Module-name matching for `target_modules`, `modules_to_save` and the rank/alpha patterns, in one place.

A list entry matches a module whose full name equals it or ends with ``"." + entry`` (a dot boundary,
never a bare ``endswith``); a single string is a regex matched with ``re.fullmatch``'s semantics. peft's
`modules_to_save` once used bare ``endswith`` and caught ``img_model.layers.0.fc`` for ``model.layers.0.fc``.
Config regexes come from files that may be hostile, so they are matched with the `regex` package (re-compatible
syntax) under a time bound: a catastrophic pattern such as ``(a+)+c`` raises PatternError instead of hanging.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

import regex

from loraguard.core.keys import LORA_INTERNAL_SEGMENTS, split

ALL_LINEAR = "all-linear"

Spec = str | Sequence[str] | None

#: Seconds one config regex may take to match one module name.
MATCH_SECONDS = 0.25


class PatternError(ValueError):
    """A config regex that does not compile, or that did not finish matching a name within MATCH_SECONDS."""

    def __init__(self, pattern: str, problem: str, timeout: bool = False):
        super().__init__(f"regex {_short(pattern)}: {problem}")
        self.pattern, self.problem, self.timeout = pattern, problem, timeout


def _short(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def check_pattern(pattern: str) -> None:
    """Raise PatternError if `pattern` is not a valid regex (the `re` syntax peft uses)."""
    try:
        _compile(pattern)
    except (regex.error, OverflowError, RecursionError, ValueError) as err:
        raise PatternError(pattern, f"is not a valid regex ({str(err)[:120]})") from None


def _compile(pattern: str) -> regex.Pattern:
    return regex.compile(pattern, regex.VERSION0)


def fullmatch(pattern: str, name: str) -> bool:
    """`re.fullmatch(pattern, name)`, bounded by MATCH_SECONDS; PatternError if invalid or too slow."""
    check_pattern(pattern)
    try:
        return _compile(pattern).fullmatch(name, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise PatternError(
            pattern, f"took more than {MATCH_SECONDS} s to match {_short(name)} (catastrophic backtracking)", True
        ) from None


def entry_matches(name: str, entry: str) -> bool:
    """True if `entry` names module `name`: equal, or a suffix that starts at a dot boundary."""
    name_segs, entry_segs = split(name), split(entry)
    return 0 < len(entry_segs) <= len(name_segs) and name_segs[-len(entry_segs) :] == entry_segs


def parameter_selected(key: str, entries: Sequence[str]) -> bool:
    """True if a `target_parameters` entry selects the parameter ``<module>.<parameter>`` `key`: as module entries
    do, equal or a suffix at a dot boundary (``experts.gate_up_proj`` selects ``model.experts.gate_up_proj``)."""
    return any(entry_matches(key, entry) for entry in entries)


def is_within(name: str, ancestor: str) -> bool:
    """True if module `name` lies strictly inside module `ancestor`."""
    name_segs, anc_segs = split(name), split(ancestor)
    return len(anc_segs) < len(name_segs) and name_segs[: len(anc_segs)] == anc_segs


def bare_suffix_match(name: str, entry: str) -> bool:
    """peft's old rule (`name.endswith(entry)`): kept only to detect where it disagrees with ours."""
    return name.endswith(entry)


def spec_matches(name: str, spec: Spec) -> bool:
    """Does a `target_modules`/`modules_to_save`-style spec select module `name`?"""
    if spec is None:
        return False
    if isinstance(spec, str):
        return fullmatch(spec, name)
    return any(entry_matches(name, entry) for entry in spec)


def pattern_key(name: str, patterns: Mapping[str, object]) -> str | None:
    """The first `rank_pattern`/`alpha_pattern` key that selects `name`, peft's rule: a regex on a dotted suffix."""
    for key in patterns:
        check_pattern(key)
        if fullmatch(rf"(?:.*\.)?(?:{key})", name):
            return key
    return None


def layer_index(name: str, layers_pattern: str | Sequence[str] | None = None) -> int | None:
    """The layer index `layers_to_transform` reads from a module name, peft's rule: the first all-digit segment that
    is followed by another segment and preceded by a `layers_pattern` match (or, without a pattern, by two segments
    at least: peft's default regex ``.*?\\.[^.]*\\.(\\d+)\\.`` misses a top-level ``layers.0.fc``). None if none."""
    segs = split(name)
    patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    for j in range(1, len(segs) - 1):
        if not segs[j].isdigit():
            continue
        if not patterns:
            if j >= 2:
                return int(segs[j])
        elif any(_pattern_selects(p, segs[:j]) for p in patterns):
            return int(segs[j])
    return None


def _pattern_selects(pattern: str, before: list[str]) -> bool:
    """Does a `layers_pattern` entry match the segments just before the index? A plain name is compared as text
    (no time-bounded regex call, whose timeout a loaded machine could trip)."""
    if regex.escape(pattern) == pattern:
        return before[-1] == pattern
    return any(fullmatch(pattern, ".".join(before[k:])) for k in range(len(before)))


def is_lora_internal(name: str) -> bool:
    """True for modules that exist only inside a LoRA wrapper (factors, dropout, base_layer, saved copies)."""
    return any(seg in LORA_INTERNAL_SEGMENTS for seg in split(name))


def false_suffix_matches(names: Iterable[str], entries: Sequence[str]) -> dict[str, list[str]]:
    """For each entry, the module names a bare ``endswith`` would catch but the dot-boundary rule does not."""
    names = list(names)
    out: dict[str, list[str]] = {}
    for entry in entries:
        wrong = [n for n in names if bare_suffix_match(n, entry) and not entry_matches(n, entry)]
        if wrong:
            out[entry] = wrong
    return out


def family(name: str) -> str:
    """A module's family: its path with numeric segments generalised (``layers.3.fc`` -> ``layers.*.fc``)."""
    return ".".join("*" if s.isdigit() else s for s in split(name))


def ambiguous_entries(names: Iterable[str], entries: Sequence[str]) -> dict[str, list[str]]:
    """Entries that select modules of more than one family (``layers.0.fc`` in ``model`` and ``img_model``)."""
    names = list(names)
    out: dict[str, list[str]] = {}
    for entry in entries:
        hits = [n for n in names if entry_matches(n, entry)]
        if len({family(n) for n in hits}) > 1:
            out[entry] = hits
    return out


def unmatched_entries(names: Iterable[str], entries: Sequence[str]) -> list[str]:
    """Entries that select no module at all."""
    names = list(names)
    return [e for e in entries if not any(entry_matches(n, e) for n in names)]


def closest_names(entry: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Module names that look like `entry`, to suggest in an error message."""
    names = list(names)
    by_last = {split(x)[-1]: x for x in names if x}
    close = difflib.get_close_matches(entry, names, n=n, cutoff=0.5)
    close += [by_last[k] for k in difflib.get_close_matches(split(entry)[-1], list(by_last), n=n, cutoff=0.6)]
    return list(dict.fromkeys(close))[:n]


def no_match_message(what: str, spec: Spec, names: Iterable[str]) -> str:
    """An error message for a spec that selected nothing, with the closest real module names."""
    names = [n for n in names if n and not is_lora_internal(n)]
    entries = [spec] if isinstance(spec, str) else list(spec or [])
    hints = sorted({h for e in entries for h in closest_names(e, names)})
    hint = f" Closest module names: {', '.join(hints)}." if hints else ""
    return f"{what}={spec!r} matches no module of the model.{hint}"
