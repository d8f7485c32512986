"""TensorFlow and TensorFlow Probability, imported with this project's process settings.

Every module that needs TensorFlow imports it from here, so the settings below are in place
before TensorFlow loads. A user's own value of each variable always wins.

TensorFlow 2.21 writes some of its C++ log lines before its log level applies: on a machine
without a GPU, an INFO line that no CUDA driver was found and an ERROR line `failed call to
cuInit`, although nothing failed. While TensorFlow loads and finds its devices, those lines are
dropped unless `TF_CPP_MIN_LOG_LEVEL` asks for INFO or WARNING lines (0 or 1); every other line
passes, and the cuInit line is kept when an NVIDIA driver is installed (then it is a real error).
The level is 2 unless the user set it, and then it is never changed.
"""

import contextlib
import ctypes.util
import os
import re
import sys
import threading

# oneDNN makes the pixel decoder's transposed convolutions ~60x faster on CPUs where TensorFlow
# leaves it off by default (whole pixel update: 63 s -> 10 s on a 2-core machine).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
_LOG_LEVEL = os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# absl's INFO lines ("I0000 00:00:..."), and the notice absl prints before its first lines.
_INFO_LINES = re.compile(rb'^(I\d{4} |WARNING: All log messages before absl::InitializeLog)')
_NO_DRIVER_LINES = re.compile(rb'^E\d{4} .*failed call to cuInit')


def nvidia_driver_present():
    """Whether this machine has an NVIDIA driver (its kernel module or libcuda)."""
    return os.path.exists('/proc/driver/nvidia/version') or bool(ctypes.util.find_library('cuda'))


@contextlib.contextmanager
def _stderr_without(*patterns):
    """Within the block, drop lines matching any of `patterns` from file descriptor 2, which
    C++ code writes to as well."""
    read_end, write_end = os.pipe()
    saved = os.dup(2)

    def forward():
        with os.fdopen(read_end, 'rb') as lines:
            for line in lines:
                if not any(pattern.search(line) for pattern in patterns):
                    os.write(saved, line)

    forwarder = threading.Thread(target=forward, daemon=True)
    forwarder.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end, so the forwarder finishes
        forwarder.join()
        os.close(saved)


def _quiet_start():
    if _LOG_LEVEL.strip() in ('0', '1'):
        return contextlib.nullcontext()
    if nvidia_driver_present():
        return _stderr_without(_INFO_LINES)
    return _stderr_without(_INFO_LINES, _NO_DRIVER_LINES)


with _quiet_start():
    import tensorflow as tf
    import tensorflow_probability as tfp

    # Device discovery (where cuInit is called) happens here, inside the filter.
    GPUS = tf.config.list_physical_devices('GPU')

tfd = tfp.distributions

__all__ = ['GPUS', 'nvidia_driver_present', 'tf', 'tfd', 'tfp']
