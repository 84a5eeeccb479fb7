from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kgclue_root() -> Path:
    """The read-only KgCLUE QA splits (/work/shared/kgclue); tests needing them skip without it."""
    root = Path(__file__).parents[2] / "shared" / "kgclue"
    if not (root / "train.json").is_file():
        pytest.skip(f"KgCLUE data not found at {root} (expected train/dev/test_public.json there)")
    return root
