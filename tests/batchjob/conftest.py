import pytest

from batchjob.sandbox_styles import STYLES
from tests.conftest import TOKEN

__all__ = ["TOKEN"]


@pytest.fixture(params=STYLES)
def sandbox(request, sandbox):
    """The client and CLI tests run against every answer style of the sandbox."""
    sandbox.state.config.style = request.param
    yield sandbox
    sandbox.state.config.style = "ours"
