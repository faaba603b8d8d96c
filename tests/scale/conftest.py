from tests.e2e.conftest import telegram  # noqa: F401 (the fake Bot API server fixture)
