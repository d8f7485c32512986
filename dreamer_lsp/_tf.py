"""TensorFlow and TensorFlow Probability, imported with this project's process settings.

Every module that needs TensorFlow imports it from here, so the settings below are in place
before TensorFlow loads. A user's own value of each variable always wins.
"""

import os

# oneDNN makes the pixel decoder's transposed convolutions ~60x faster on CPUs where TensorFlow
# leaves it off by default (whole pixel update: 63 s -> 10 s on a 2-core machine).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

tfd = tfp.distributions

__all__ = ['tf', 'tfd', 'tfp']
