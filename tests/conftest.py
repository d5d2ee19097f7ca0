
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # the browser test runs notebook 00 on the test profile: after the notebooks' own runs
    # (nbval included), it finds their data and base model in the shared cache
    items.sort(key=lambda item: "browser" in item.keywords)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """A fresh, empty outputs folder (runs, caches) for this test alone."""
    folder = tmp_path / "outputs"
    monkeypatch.setenv("FSSTOOLS_OUTPUTS", str(folder))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: a second OpenMP thread only adds waiting on a shared, loaded machine.
    Modules that want it say ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
