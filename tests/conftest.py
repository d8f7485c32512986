"""Test-session settings and fixtures shared by every test module."""

import concurrent.futures
import multiprocessing
import os

import pytest

CHILD_TIMEOUT = 120


def _init_child():
    os.environ.setdefault('MUJOCO_GL', 'egl')


@pytest.fixture(scope='module')
def child():
    """Runs `fn(*args)` in a spawned process that never imports TensorFlow and returns its result.

    MuJoCo's EGL renderer and TensorFlow crash when they share a process, and other test modules
    import TensorFlow, so dm_control work goes to this child (one per test module).
    """
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(1, context, initializer=_init_child) as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result(timeout=CHILD_TIMEOUT)


def pytest_collection_modifyitems(items):
    """Run the tests marked slow first, so that with several workers (`make test`, which hands
    out one test at a time) the long smoke runs start early instead of finishing last."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
