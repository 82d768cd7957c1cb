"""Docker tests need a real Docker Engine and the model images (fixtures in tests/conftest.py). In CI
(CI=true) a missing daemon fails these tests; elsewhere they are skipped with the reason."""

from tests.conftest import containers_of

__all__ = ["containers_of"]
