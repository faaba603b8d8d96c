from tests.conftest import TOKEN

__all__ = ["TOKEN"]
