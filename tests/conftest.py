"""Test-session settings shared by every test module."""


def pytest_collection_modifyitems(items):
    """Run the tests marked slow first, so that with several workers (`make test`, which hands
    out one test at a time) the long smoke runs start early instead of finishing last."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
