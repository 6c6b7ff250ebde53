"""What the backend tests share."""

from pathlib import Path

import loraguard

#: The shipped known-failures files, one per library.
KNOWN_FAILURES = Path(loraguard.__file__).parent / "known_failures"
