"""The backend example in README.md (torchtune's LoRALinear) is complete: the plugin runs the suite with it, green."""

import re
from pathlib import Path

import pytest

import loraguard.run.in_pytest  # noqa: F401  (pytester's in-process runs must find torch already imported)
from tests.plugin.test_plugin import assert_green

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_backend() -> str:
    text = README.read_text()
    block = re.search(r"<!-- backend-example -->\s*```python\n(.*?)```\s*<!-- /backend-example -->", text, re.S)
    assert block, "README.md lost its backend example (between the backend-example markers)"
    return block.group(1)


def test_readme_backend_runs_the_suite(pytester: pytest.Pytester) -> None:
    pytest.importorskip("torchtune")
    pytester.makepyfile(my_lora_backend=readme_backend())
    pytester.syspathinsert()
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--loraguard",
        "--loraguard-profile",
        "quick",
        "--loraguard-backend",
        "my_lora_backend:TuneBackend",
        "-k",
        "not drawn and not sequence",  # drawn module names meet a torchtune bug (docs/libraries.md)
    )
    assert_green(result)
    result.stdout.fnmatch_lines(
        [
            "*loraguard summary (tune-mini 0.1; profile quick; *",
            "merge-forward*2 passed, * skipped*",  # mlp, nested; gpt2's Conv1D is Unsupported: skipped, with the reason
            "mixed-export*2 passed, * skipped*",
            "roundtrip* skipped*",
        ]
    )
