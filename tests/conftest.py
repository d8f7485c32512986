"""Test-session settings and fixtures shared by every test module."""

import concurrent.futures
import fcntl
import json
import multiprocessing
import os
import shutil

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


@pytest.fixture(scope='session')
def built_once(tmp_path_factory):
    """`built_once(name, build)`: a private copy of the directory `build(path)` fills, and the
    JSON value `build` returned; `build` runs once per test session, whichever worker asks first.

    pytest-xdist gives every worker its own module-scoped fixtures, so a fixture that trains a
    run would train it once on every worker. The first worker to ask builds it, under a lock, in
    the directory the workers share; the others wait for it. Each caller gets its own copy, so
    a test may change its run as it could before.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        shared = shared.parent  # pytest-N, above every worker's popen-gwN
    shared = shared / 'built'
    shared.mkdir(exist_ok=True)

    def build_or_copy(name, build):
        origin, record = shared / name, shared / f'{name}.json'
        with open(shared / f'{name}.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not record.exists():
                shutil.rmtree(origin, ignore_errors=True)  # a build that failed part-way
                origin.mkdir()
                record.write_text(json.dumps(build(origin)))
        copy = tmp_path_factory.mktemp(name)
        shutil.copytree(origin, copy, dirs_exist_ok=True)
        return copy, json.loads(record.read_text())

    return build_or_copy


def pytest_collection_modifyitems(items):
    """Run the tests marked slow first, so that with several workers (`make test`, which hands
    out one test at a time) the long smoke runs start early instead of finishing last."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)
