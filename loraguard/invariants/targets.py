"""Target forms users write: lists, the regexes training frameworks generate (``.*(?:q_proj|v_proj).*``, which
also match the internals of an adapter already there) and ``all-linear``, on fresh and already adapted models;
and a list entry that matches nothing is reported, never ignored (peft's "Target module Dropout is not supported"
came from such a regex on a second adapter)."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from loraguard.backends.base import Backend, Unsupported, optional_methods
from loraguard.core.config import LoraConfig
from loraguard.core.keys import split
from loraguard.core.matching import ALL_LINEAR, entry_matches, is_lora_internal, unmatched_entries
from loraguard.harness.scenarios import Scenario, expected_targets
from loraguard.invariants.checks import expect
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import scratch_dir, wrap

if TYPE_CHECKING:
    from torch import nn

#: An error that names a LoRA internal as an unsupported target: the search walked into the wrapper.
INTERNAL_ERROR = re.compile(r"(?is)target module.*(dropout|identity|moduledict).*not supported|lora_(a|b|dropout)\b")


def target_forms(leaves: list[str], all_linear: bool) -> dict[str, str | list[str]]:
    """The forms of one selection users write: bare names, a framework regex over them, and all-linear."""
    names = sorted({split(p)[-1] for p in leaves})
    forms: dict[str, str | list[str]] = {"list": names, "regex": f".*(?:{'|'.join(map(re.escape, names))}).*"}
    if all_linear:
        forms["all-linear"] = ALL_LINEAR
    return forms


@invariant(
    "target-forms",
    "A second adapter whose target_modules is a list, a framework regex such as .*(?:q_proj|v_proj).* or "
    "all-linear wraps exactly the base modules the reference selects, added or loaded (load_adapter), and never "
    "LoRA internals.",
    needs=("multi_adapter",),
)
def second_adapter_target_forms(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    forms = target_forms(sorted(wrapped.targets), "all_linear" in backend.capabilities)
    plain = {n for n, _ in scenario.base().named_modules()}  # a user's module named like an internal is no internal
    for label, form in forms.items():
        name = f"second_{label.replace('-', '_')}"
        config = LoraConfig(r=2, lora_alpha=4, target_modules=form, lora_dropout=0.1, init_lora_weights=False)
        try:
            want = set(
                expected_targets(scenario, adapters=[("default", scenario.config), (name, config)], adapter=name)
            )
        except ValueError:
            continue  # the form selects something the reference cannot adapt here (a container): not a scenario
        what = f"add_adapter({name!r}, target_modules={form!r}) on a model that already carries adapter 'default'"
        try:
            _added(backend, wrapped.model, name, config, want, what, plain)
        except Unsupported:
            continue  # this release lacks the form (all-linear on plain torch models before peft 0.15)
        if {"save_load", "load_adapter"} <= backend.capabilities and label == "regex":
            with scratch_dir() as d:
                backend.save(wrapped.model, d, [name])
                fresh = wrap(backend, scenario).model
                where = d / name if (d / name).is_dir() else d
                _added(backend, fresh, name, config, want, f"load_adapter of {what}", plain, load_from=where)


def _added(
    backend: Backend,
    model: nn.Module,
    name: str,
    config: LoraConfig,
    want: set[str],
    what: str,
    plain: set[str],
    load_from: Path | None = None,
) -> None:
    """Add (or load) adapter `name` and check it wraps exactly `want`; a crash on a LoRA internal is a violation."""
    try:
        if load_from is None:
            backend.add_adapter(model, name, config)
        else:
            optional_methods(backend).load_adapter(model, load_from, name)
    except Unsupported:
        raise
    except Exception as err:  # noqa: BLE001 - the reference accepts this config: any failure is the library's
        walked = INTERNAL_ERROR.search(str(err))
        expect(
            False,
            f"{what} failed{' on a LoRA internal' if walked else ''}: {type(err).__name__}: {str(err)[:200]}",
        )
    got = set(backend.lora_factors(model, name))
    inside = sorted(p for p in got if is_lora_internal(p) and p not in plain)
    expect(not inside, f"{what} put LoRA on LoRA internals: {inside[:5]}")
    expect(got == want, f"{what} wrapped {sorted(got)}, expected {sorted(want)}")


def _entries_for(names: list[str], targets: set[str]) -> list[str]:
    """List entries for `targets`: their last names, as users write them, unless one also names a container (a
    module 'xfc' holding the targeted 'xfc.xfc'), which no library can adapt, so its error would be about that
    module and not the typo; then their full names."""
    containers = {n for n in names if any(m.startswith(n + ".") for m in names)} - targets
    for entries in (sorted({split(t)[-1] for t in targets}), sorted(targets)):
        if not any(entry_matches(c, e) for c in containers for e in entries):
            return entries
    raise Skipped(f"every list of entries for the targets {sorted(targets)} also names a container module")


@invariant(
    "unmatched-target",
    "A target_modules list with an entry that matches no module (a typo such as 'v_prj') is reported, by an error "
    "or a warning naming the entry, never silently ignored while the other entries train.",
)
def unmatched_entry_reported(backend: Backend, scenario: Scenario) -> None:
    base = scenario.base()
    names = [n for n, _ in base.named_modules() if n]
    entries = _entries_for(names, set(expected_targets(scenario)))
    typo = entries[0][:-1] or entries[0] + "x"
    while not unmatched_entries(names, [typo]):
        typo += "x"
    config = dataclasses.replace(scenario.config, target_modules=[*entries, typo], modules_to_save=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backend.wrap(base, config)
        except Unsupported:
            raise
        except Exception as err:  # noqa: BLE001 - an error is a report if it names the entry
            expect(typo in str(err), f"target_modules {config.target_modules}: the error does not name {typo!r}: {err}")
            return
    said = [str(w.message) for w in caught if typo in str(w.message)]
    expect(
        bool(said),
        f"target_modules={config.target_modules}: entry {typo!r} matches no module, yet wrapping succeeded without "
        "an error or a warning naming it (a typo silently trains fewer modules than asked)",
    )
