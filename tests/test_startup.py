"""A quiet start: TensorFlow's no-GPU noise dropped, real errors and a user's log level kept."""

import os
import subprocess
import sys

import pytest

from dreamer_lsp import _tf
from dreamer_lsp.logger import Logger
from dreamer_lsp.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_DRIVER = not _tf.nvidia_driver_present()


def import_tensorflow(**env):
    environment = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    environment.update(env)
    script = (
        'import os; from dreamer_lsp._tf import GPUS; '
        'print(os.environ["TF_CPP_MIN_LOG_LEVEL"], len(GPUS))'
    )
    return subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
        timeout=300,
    )


@pytest.mark.skipif(not NO_DRIVER, reason='the cuInit line is a real error with a driver')
def test_no_cuda_lines_without_a_gpu():
    result = import_tensorflow()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['2', '0']
    assert 'cuInit' not in result.stderr and 'cuda' not in result.stderr.lower(), result.stderr


def test_a_users_log_level_is_kept_and_honoured():
    result = import_tensorflow(TF_CPP_MIN_LOG_LEVEL='0')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == '0'
    # The user asked for everything: TensorFlow's own start lines are not filtered.
    assert 'I0000' in result.stderr
    result = import_tensorflow(TF_CPP_MIN_LOG_LEVEL='3')
    assert result.stdout.split()[0] == '3' and 'I0000' not in result.stderr


def test_filtered_stderr_passes_every_other_line(capfd):
    with _tf._stderr_without(_tf._INFO_LINES, _tf._NO_DRIVER_LINES):
        os.write(2, b'I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers\n')
        os.write(2, b'E0000 00:00:1.0 123 cuda_platform.cc:52] failed call to cuInit: ...\n')
        os.write(2, b'E0000 00:00:1.0 123 something.cc:1] a real error\n')
        # One write: under capfd, sys.stderr bypasses fd 2, and the forwarder thread could
        # land a line between print's text and its newline.
        sys.stderr.write('a Python warning\n')
    lines = capfd.readouterr().err.splitlines()
    assert sorted(lines) == ['E0000 00:00:1.0 123 something.cc:1] a real error', 'a Python warning']


def test_progress_line_shows_what_is_known(tmp_path, capsys):
    logger = Logger(RunDir(tmp_path), 1000)
    logger.write(100, 0)
    first = capsys.readouterr().out
    assert first.strip() == '[     100/1000]'
    logger.scalars(200, {'train/return': 12.5})
    logger.write(300, 4)
    second = capsys.readouterr().out
    logger.close()
    assert 'nan' not in second.lower() and 'train return    12.5' in second
    assert 'updates/s' in second and 'env steps/s' in second and 'ETA 0:' in second
