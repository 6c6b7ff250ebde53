"""Known failures: files of glob patterns over test names, shipped per library and release range or the user's own.

Format (one entry a line; ``#`` starts a comment; blank lines are ignored)::

    [peft >=0.21,<0.22]                     # a section: the entries below apply when backend `peft`'s release
    naming[peft-nested-*]  # reason, upstream thread   # is in the range (PEP 440 specifiers; `[peft]`: any release)

An entry is a glob over ``invariant[backend-scenario]`` (``*`` and ``?`` are wildcards, brackets literal),
optionally followed by ``~ REGEX``: then only a failure whose message REGEX finds (``re.search``; a library's crash
reads ``TypeName raised by the library: ...``) is that known bug, and any other failure of the same test is
reported. Entries before the first section apply to every release. The files in ``loraguard/known_failures/`` are named
after the backend whose bugs they list and are applied automatically (``--loraguard-builtin-known-failures off``
turns that off).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

#: Where the files shipped with loraguard live, one per backend name (``peft.txt``).
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "known_failures"


@dataclass(frozen=True)
class KnownFailure:
    """One entry: a glob over ``invariant[backend-scenario]``, why it fails, and where it was written."""

    pattern: str
    reason: str
    source: str = ""  # file:line
    message: str = ""  # a regex the failure's message must contain; "" matches any failure of the test

    def matches(self, name: str) -> bool:
        """`*` and `?` are wildcards; brackets are literal, since every name has them."""
        return self._glob.match(name) is not None

    @functools.cached_property
    def _glob(self) -> re.Pattern[str]:
        """The pattern compiled once (every test of a run is matched against every entry)."""
        literal = "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in self.pattern)
        return re.compile(fnmatch.translate(literal))

    def explains(self, failure: str) -> bool:
        """Is `failure` (a failing test's message) this known bug?"""
        return not self.message or re.search(self.message, failure) is not None


def _in_range(version: str, spec: SpecifierSet) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def read_known_failures(path: Path, versions: dict[str, str], option: str = "--loraguard-known-failures") -> list:
    """The entries of `path` that apply to the releases in `versions` (backend name -> release).

    A section for a backend that is not in this run applies to nothing; a malformed line is an error naming
    the file and line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{option}: {path} does not exist")
    out, active = [], True
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        where = f"{path}:{number}"
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(f"{where}: a section reads [library specifiers], e.g. [peft >=0.21,<0.22]: {line!r}")
            library, _, spec = text[1:-1].strip().partition(" ")
            try:
                specifiers = SpecifierSet(spec.replace(" ", ""))
            except InvalidSpecifier:
                raise ValueError(f"{where}: {spec!r} is not a version range (PEP 440, e.g. >=0.21,<0.22)") from None
            active = library in versions and _in_range(versions[library], specifiers)
            continue
        if not text:
            continue
        text, tilde, message = (part.strip() for part in text.partition("~"))
        if " " in text:
            raise ValueError(f"{where}: a pattern has no spaces; put the reason after '#': {line!r}")
        if tilde and not message:
            raise ValueError(f"{where}: '~' is followed by the regex a failure's message must contain: {line!r}")
        try:
            re.compile(message)
        except re.error as err:
            raise ValueError(f"{where}: the regex after '~' does not compile ({err}): {line!r}") from None
        if active:
            reason = line.partition("#")[2].strip()
            out.append(KnownFailure(text, reason or f"listed in {path.name}", where, message))
    return out


def builtin_files(backends: list[str]) -> list[Path]:
    """The shipped files for these backends (those loraguard has one for)."""
    return [BUILTIN_DIR / f"{name}.txt" for name in backends if (BUILTIN_DIR / f"{name}.txt").is_file()]
