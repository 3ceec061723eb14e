"""The store's test suite (a package, so that `tests.support` is importable from every test)."""
