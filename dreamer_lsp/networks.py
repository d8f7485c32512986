"""The networks of Dreamer [D §3, ref models.py]: RSSM, encoders, decoders and heads.

Layers are small `tf.Module`s built eagerly with known input sizes, initialised like Keras'
defaults (glorot-uniform kernels, zero biases, orthogonal GRU recurrent kernel). Variables are
float32; a layer computes in the dtype of its input, so float16 inputs give mixed precision.
With bfloat16 inputs (CEM's scoring on a CPU) only the products run in bfloat16: TensorFlow's
CPU kernels for element-wise bfloat16 are about twice as slow as a cast to float32 and back
around them (docs/performance.md). Distribution parameters are returned in float32.
"""

import math

import numpy as np

from dreamer_lsp._tf import tf, tfd

ACTIVATIONS = {'elu': tf.nn.elu, 'relu': tf.nn.relu, 'swish': tf.nn.swish, 'none': None}


def activation(name):
    """The activation function called `name` (elu, relu, swish or none)."""
    if name not in ACTIVATIONS:
        raise ValueError(f'unknown activation {name!r}; valid: {", ".join(ACTIVATIONS)}')
    return ACTIVATIONS[name]


def glorot_uniform(rng, shape, fan_in, fan_out):
    """Glorot/Xavier uniform initial values, as Keras' default kernel initializer."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(shape, -limit, limit, tf.float32)


def orthogonal(rng, shape):
    """An orthogonal matrix of `shape`, as Keras' Orthogonal initializer (gain 1)."""
    rows, cols = shape
    normal = rng.normal((max(rows, cols), min(rows, cols)), dtype=tf.float32)
    q, r = tf.linalg.qr(normal)
    q *= tf.sign(tf.linalg.diag_part(r))
    return q if rows >= cols else tf.transpose(q)


def elementwise_dtype(dtype):
    """The dtype a layer's element-wise work (biases, activations, gates) runs in."""
    return tf.float32 if dtype == tf.bfloat16 else dtype


class Dense(tf.Module):
    """A fully connected layer."""

    def __init__(self, rng, in_size, units, act=None, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(glorot_uniform(rng, (in_size, units), in_size, units))
        self.bias = tf.Variable(tf.zeros(units))
        self._act = act

    def __call__(self, x):
        """Apply to [..., in_size] inputs."""
        kernel = tf.cast(self.kernel, x.dtype)
        if x.shape.rank == 2:
            x = tf.matmul(x, kernel)
        else:
            # One 2-D product: a broadcast product runs as BatchMatMul, which is slower on CPU
            # (the paper-size pixel update went from 4.07 s to 3.85 s).
            batch_shape = tf.shape(x)[:-1]
            x = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), kernel)
            x = tf.reshape(x, tf.concat([batch_shape, [kernel.shape[-1]]], 0))
        dtype = x.dtype
        x = tf.cast(x, elementwise_dtype(dtype))
        x = x + tf.cast(self.bias, x.dtype)
        x = self._act(x) if self._act else x
        return tf.cast(x, dtype)


class MLP(tf.Module):
    """`layers` Dense layers of `units` with an activation, then a linear output layer."""

    def __init__(self, rng, in_size, out_size, layers, units, act, name=None):
        super().__init__(name=name)
        sizes = [in_size] + [units] * layers
        self.hidden = [Dense(rng, a, b, act) for a, b in zip(sizes[:-1], sizes[1:])]
        self.out = Dense(rng, sizes[-1], out_size)

    def __call__(self, x):
        """Apply to [..., in_size] inputs."""
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)


class Conv2D(tf.Module):
    """A strided 'valid' convolution."""

    def __init__(self, rng, in_channels, filters, kernel, stride=2, act=None):
        super().__init__()
        fan_in, fan_out = kernel * kernel * in_channels, kernel * kernel * filters
        shape = (kernel, kernel, in_channels, filters)
        self.kernel = tf.Variable(glorot_uniform(rng, shape, fan_in, fan_out))
        self.bias = tf.Variable(tf.zeros(filters))
        self._stride, self._act = stride, act

    def __call__(self, x):
        """Apply to [N, H, W, C] images."""
        x = tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), self._stride, 'VALID')
        x = x + tf.cast(self.bias, x.dtype)
        return self._act(x) if self._act else x


class Conv2DTranspose(tf.Module):
    """A strided 'valid' transposed convolution: size -> (size - 1) * stride + kernel."""

    def __init__(self, rng, in_channels, filters, kernel, stride=2, act=None):
        super().__init__()
        fan_in, fan_out = kernel * kernel * filters, kernel * kernel * in_channels
        shape = (kernel, kernel, filters, in_channels)
        self.kernel = tf.Variable(glorot_uniform(rng, shape, fan_in, fan_out))
        self.bias = tf.Variable(tf.zeros(filters))
        self._kernel_size, self._stride, self._act = kernel, stride, act

    def __call__(self, x):
        """Apply to [N, H, W, C] maps."""
        kernel = tf.cast(self.kernel, x.dtype)  # [k, k, filters, C]
        size = (x.shape[1] - 1) * self._stride + self._kernel_size
        filters = kernel.shape[2]
        if x.shape[1] == x.shape[2] == 1:
            # On a 1x1 map (the decoder's first layer) this is a matrix product, which oneDNN
            # runs far faster than its transposed convolution: paper-size pixel update
            # 4.42 -> 3.73 s.
            kernel = tf.reshape(tf.transpose(kernel, (3, 0, 1, 2)), (kernel.shape[3], -1))
            x = tf.matmul(tf.reshape(x, (-1, x.shape[3])), kernel)
            x = tf.reshape(x, (-1, size, size, filters))
        else:
            out_shape = tf.stack([tf.shape(x)[0], size, size, filters])
            x = tf.nn.conv2d_transpose(x, kernel, out_shape, self._stride, 'VALID')
        x = x + tf.cast(self.bias, x.dtype)
        return self._act(x) if self._act else x


class GRUCell(tf.Module):
    """Keras' GRUCell with `reset_after=True` (the reference's RSSM cell)."""

    def __init__(self, rng, in_size, units):
        super().__init__()
        self.kernel = tf.Variable(glorot_uniform(rng, (in_size, 3 * units), in_size, 3 * units))
        self.recurrent_kernel = tf.Variable(orthogonal(rng, (units, 3 * units)))
        self.bias = tf.Variable(tf.zeros((2, 3 * units)))  # input, recurrent bias (reset_after)
        self.units = units

    def __call__(self, x, state):
        """One step: the next state [N, units] from input x and state."""
        dtype, wide = x.dtype, elementwise_dtype(x.dtype)
        bias = tf.cast(self.bias, wide)
        inputs = tf.cast(tf.matmul(x, tf.cast(self.kernel, dtype)), wide) + bias[0]
        recurrent = tf.matmul(state, tf.cast(self.recurrent_kernel, dtype))
        recurrent = tf.cast(recurrent, wide) + bias[1]
        x_z, x_r, x_h = tf.split(inputs, 3, -1)
        h_z, h_r, h_h = tf.split(recurrent, 3, -1)
        update = tf.sigmoid(x_z + h_z)
        reset = tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_h + reset * h_h)
        return tf.cast(update * tf.cast(state, wide) + (1 - update) * candidate, dtype)


class RSSM(tf.Module):
    """Recurrent state-space model [D §3]; a state is a dict of mean, std, stoch and deter."""

    def __init__(self, rng, action_size, embed_size, stoch, deter, hidden, act):
        super().__init__()
        act = activation(act)
        self.stoch_size, self.deter_size = stoch, deter
        self.img_in = Dense(rng, stoch + action_size, hidden, act)
        self.cell = GRUCell(rng, hidden, deter)
        self.img_hidden = Dense(rng, deter, hidden, act)
        self.img_out = Dense(rng, hidden, 2 * stoch)
        self.obs_hidden = Dense(rng, deter + embed_size, hidden, act)
        self.obs_out = Dense(rng, hidden, 2 * stoch)
        self._rng = rng

    @property
    def feat_size(self):
        """Size of the features concat(stoch, deter)."""
        return self.stoch_size + self.deter_size

    def initial(self, batch_size, dtype=tf.float32):
        """The all-zero state of the reference."""
        zeros = tf.zeros((batch_size, self.stoch_size), dtype)
        return dict(
            mean=zeros, std=zeros, stoch=zeros, deter=tf.zeros((batch_size, self.deter_size), dtype)
        )

    def _stats(self, x):
        mean, std = tf.split(x, 2, -1)  # [..., 2 stoch] -> [..., stoch] each
        std = tf.nn.softplus(std) + 0.1
        # The noise is drawn in float32 whatever the arithmetic, so a lower-precision rollout
        # (CEM's scoring, `cem.precision`) samples the same states as a float32 one, rounded.
        stoch = mean + std * tf.cast(self._rng.normal(tf.shape(mean)), mean.dtype)
        return mean, std, stoch

    def img_step(self, prev_state, prev_action):
        """Prior p(s_t | s_{t-1}, a_{t-1})."""
        x = tf.concat([prev_state['stoch'], prev_action], -1)
        deter = self.cell(self.img_in(x), prev_state['deter'])
        mean, std, stoch = self._stats(self.img_out(self.img_hidden(deter)))
        return dict(mean=mean, std=std, stoch=stoch, deter=deter)

    def obs_step(self, prev_state, prev_action, embed):
        """Posterior q(s_t | s_{t-1}, a_{t-1}, o_t) and the prior of the same step."""
        prior = self.img_step(prev_state, prev_action)
        x = self.obs_hidden(tf.concat([prior['deter'], embed], -1))
        mean, std, stoch = self._stats(self.obs_out(x))
        return dict(mean=mean, std=std, stoch=stoch, deter=prior['deter']), prior

    def observe(self, embed, action):
        """Filter a [B, T] sequence from the initial state; returns posterior and prior dicts of
        [B, T, ...] tensors."""
        state = self.initial(tf.shape(action)[0], embed.dtype)
        posts, priors = [], []
        # Unstacked once: the gradient of per-step slices would fill a zero [B, T, E] tensor
        # per step and add them all up.
        for action_t, embed_t in zip(tf.unstack(action, axis=1), tf.unstack(embed, axis=1)):
            state, prior = self.obs_step(state, action_t, embed_t)
            posts.append(state)
            priors.append(prior)
        stack = lambda states: {k: tf.stack([s[k] for s in states], 1) for k in states[0]}  # noqa: E731
        return stack(posts), stack(priors)

    def imagine(self, action, state):
        """Open-loop prior rollout of actions [B, T, A] from `state` [B]; dicts of [B, T, ...]."""
        priors = []
        for action_t in tf.unstack(action, axis=1):
            state = self.img_step(state, action_t)
            priors.append(state)
        return {k: tf.stack([s[k] for s in priors], 1) for k in priors[0]}

    @staticmethod
    def feat(state):
        """Features concat(stoch, deter) fed to every head."""
        return tf.concat([state['stoch'], state['deter']], -1)

    @staticmethod
    def dist(state):
        """The diagonal Gaussian of a state, in float32."""
        mean, std = tf.cast(state['mean'], tf.float32), tf.cast(state['std'], tf.float32)
        return tfd.MultivariateNormalDiag(mean, std)


class ConvEncoder(tf.Module):
    """Four k4 s2 convolutions of `depth` x {1, 2, 4, 8} channels on 64x64 images, flattened
    (1024 features at the default depth 32)."""

    def __init__(self, rng, depth, act, channels=3):
        super().__init__()
        act = activation(act)
        sizes = [channels, depth, 2 * depth, 4 * depth, 8 * depth]
        self.convs = [Conv2D(rng, a, b, 4, 2, act) for a, b in zip(sizes[:-1], sizes[1:])]
        self.embed_size = 32 * depth

    def __call__(self, image):
        """Embed [..., 64, 64, 3] images into [..., 32 * depth]."""
        batch_shape = tf.shape(image)[:-3]
        x = tf.reshape(image, (-1, *image.shape[-3:]))
        for conv in self.convs:
            x = conv(x)  # 64 -> 31 -> 14 -> 6 -> 2
        return tf.reshape(x, tf.concat([batch_shape, [self.embed_size]], 0))


class ConvDecoder(tf.Module):
    """Dense(32*depth), then k{5,5,6,6} s2 transposed convolutions to a 64x64x3 unit Normal."""

    def __init__(self, rng, feat_size, depth, act, channels=3):
        super().__init__()
        act = activation(act)
        self.dense = Dense(rng, feat_size, 32 * depth)
        sizes = [32 * depth, 4 * depth, 2 * depth, depth, channels]
        kernels = [5, 5, 6, 6]
        acts = [act, act, act, None]
        self.deconvs = [
            Conv2DTranspose(rng, a, b, k, 2, f)
            for a, b, k, f in zip(sizes[:-1], sizes[1:], kernels, acts)
        ]
        self.shape = (64, 64, channels)

    def __call__(self, feat):
        """The image distribution for [..., feat] features."""
        x = tf.reshape(self.dense(feat), (-1, 1, 1, self.dense.kernel.shape[1]))
        for deconv in self.deconvs:
            x = deconv(x)  # 1 -> 5 -> 13 -> 30 -> 64
        mean = tf.reshape(tf.cast(x, tf.float32), tf.concat([tf.shape(feat)[:-1], self.shape], 0))
        return tfd.Independent(tfd.Normal(mean, 1.0), 3)


class MLPEncoder(tf.Module):
    """Feature encoder: an MLP of `layers` x `units` (2 x 256 ELU in the paper's A.3)."""

    def __init__(self, rng, in_size, layers, units, act):
        super().__init__()
        act = activation(act)
        sizes = [in_size] + [units] * layers
        self.layers = [Dense(rng, a, b, act) for a, b in zip(sizes[:-1], sizes[1:])]
        self.embed_size = units

    def __call__(self, features):
        """Embed [..., D] features."""
        x = features
        for layer in self.layers:
            x = layer(x)
        return x


def soft_clamp_std(log_std, min_std, max_std):
    """Softly clamp a log-std between log(min_std) and log(max_std), as PETS (Chua et al. 2018)."""
    max_log, min_log = math.log(max_std), math.log(min_std)
    log_std = max_log - tf.nn.softplus(max_log - log_std)
    log_std = min_log + tf.nn.softplus(log_std - min_log)
    return tf.exp(log_std)


class GaussianMLP(tf.Module):
    """An MLP outputting mean and log-std of a diagonal Gaussian, std softly clamped [LSP A.3].

    Used as the feature decoder, the backward skill predictor and the high-level policy of
    `hiro`.
    """

    def __init__(self, rng, in_size, out_size, layers, units, act, min_std, max_std):
        super().__init__()
        self.net = MLP(rng, in_size, 2 * out_size, layers, units, activation(act))
        self._min_std, self._max_std = min_std, max_std

    def __call__(self, x):
        """The Gaussian for [..., in_size] inputs."""
        mean, log_std = tf.split(tf.cast(self.net(x), tf.float32), 2, -1)
        std = soft_clamp_std(log_std, self._min_std, self._max_std)
        return tfd.Independent(tfd.Normal(mean, std), 1)


class NormalHead(tf.Module):
    """A scalar unit-variance Normal head (reward, value) [ref DenseDecoder]."""

    def __init__(self, rng, in_size, layers, units, act):
        super().__init__()
        self.net = MLP(rng, in_size, 1, layers, units, activation(act))

    def __call__(self, feat):
        """The Normal over a scalar for [..., feat] features."""
        mean = tf.cast(self.net(feat)[..., 0], tf.float32)
        return tfd.Normal(mean, 1.0)


class TanhNormal:
    """A tanh-squashed diagonal Gaussian over actions [ref ActionDecoder 'tanh_normal'].

    Sampling is reparameterised. As in the reference's SampleDist, the mode is the most likely
    of 100 samples and the entropy is a 100-sample estimate (neither has a closed form).
    """

    SAMPLES = 100

    def __init__(self, mean, std, rng):
        self.mean, self.std, self._rng = mean, std, rng

    def _pre_tanh_sample(self, count=None):
        shape = (
            tf.shape(self.mean) if count is None else tf.concat([[count], tf.shape(self.mean)], 0)
        )
        return self.mean + self.std * self._rng.normal(shape, dtype=self.mean.dtype)

    def _log_prob_pre_tanh(self, x):
        normal = tfd.Normal(self.mean, self.std).log_prob(x)
        # log|d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x)), stable for large |x|.
        log_det = 2.0 * (np.log(2.0) - x - tf.nn.softplus(-2.0 * x))
        return tf.reduce_sum(normal - log_det, -1)

    def sample(self):
        """A reparameterised sample in (-1, 1)."""
        return tf.tanh(self._pre_tanh_sample())

    def mode(self):
        """The most likely of 100 samples, per batch element."""
        x = self._pre_tanh_sample(self.SAMPLES)  # [100, ..., A]
        best = tf.argmax(self._log_prob_pre_tanh(x), 0)  # [...]
        samples_last = tf.experimental.numpy.moveaxis(x, 0, -2)  # [..., 100, A]
        return tf.tanh(tf.gather(samples_last, best, batch_dims=best.shape.rank))

    def entropy(self):
        """A 100-sample Monte Carlo estimate of the entropy."""
        x = self._pre_tanh_sample(self.SAMPLES)
        return -tf.reduce_mean(self._log_prob_pre_tanh(x), 0)


class ActionHead(tf.Module):
    """The actor: an MLP to a tanh-normal whose std starts at `init_std` [ref ActionDecoder]."""

    def __init__(
        self, rng, in_size, action_size, layers, units, act, init_std, min_std, mean_scale
    ):
        super().__init__()
        self.net = MLP(rng, in_size, 2 * action_size, layers, units, activation(act))
        self._raw_init_std = math.log(math.exp(init_std) - 1.0)
        self._min_std, self._mean_scale = min_std, mean_scale
        self._rng = rng

    def __call__(self, feat):
        """The action distribution for [..., feat] features."""
        mean, std = tf.split(tf.cast(self.net(feat), tf.float32), 2, -1)
        mean = self._mean_scale * tf.tanh(mean / self._mean_scale)
        std = tf.nn.softplus(std + self._raw_init_std) + self._min_std
        return TanhNormal(mean, std, self._rng)
