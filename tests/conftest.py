import inspect
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


E2E_FIXTURES = {"toy_training", "toy_run", "trained_toy", "one_epoch", "toy_ckpt"}  # fixtures that train through the CLI


def pytest_collection_modifyitems(items):
    """A test that trains or runs an entry point in another process is `e2e` (found by the fixtures it
    uses or the calls it makes; a test that does it through a helper is marked by hand): `-m "not slow
    and not e2e"` is the fast unit suite; the README's command runs both."""
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function else ""
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())) or "run_cli(" in source or "subprocess" in source:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def slurm_partition():
    """A real one-node Slurm with accounting (experiments/slurm/local_cluster.sh): its partition."""
    from slurm_cluster import local_slurm

    with local_slurm() as partition:
        yield partition
