"""Test-session settings shared by every test module."""


def pytest_collection_modifyitems(items):
    """Run the tests marked slow first, so that with several workers (`make test`) the long
    smoke runs start early instead of finishing last on one worker."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
