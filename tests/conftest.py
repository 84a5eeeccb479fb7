from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kgclue_root() -> Path:
    """The read-only KgCLUE QA splits (/work/shared/kgclue); tests needing them skip without it."""
    root = Path(__file__).parents[2] / "shared" / "kgclue"
    if not (root / "train.json").is_file():
        pytest.skip(f"KgCLUE data not found at {root} (expected train/dev/test_public.json there)")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run faster on one thread, and the 2-core machine stays free for subprocess runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
