"""TensorFlow utilities of the agent: λ-returns, the optimizer [ref tools.py] and timings."""

from dreamer_lsp._tf import tf


def lambda_return(reward, next_value, discount, lambda_):
    """λ-returns over time (axis 0) [D eq. 6], computed backwards from the last next value.

    reward, next_value, discount: [H, ...]; next_value[t] = v_{t+1}, the value of the state
    reward t leads to. G_t = r_t + γ_t ((1 - λ) v_{t+1} + λ G_{t+1}), with G_H = v_H (the
    bootstrap).
    """
    inputs = reward + discount * next_value * (1 - lambda_)
    returns = []
    last = next_value[-1]
    for t in reversed(range(reward.shape[0])):
        last = inputs[t] + discount[t] * lambda_ * last
        returns.append(last)
    return tf.stack(returns[::-1], 0)


class _Untracked:
    """Holds variables without making them checkpoint dependencies of the holder, so each
    network's weights are saved under the network's own path."""

    def __init__(self, items):
        self.items = items


class Adam(tf.Module):
    """Adam with global-norm gradient clipping over a fixed set of modules [ref tools.Adam].

    Updates follow Keras' Adam (bias-corrected step size, epsilon outside the square root).
    With float16 compute it scales the loss dynamically: halves the scale on non-finite
    gradients (skipping that update) and doubles it after 2000 finite steps.
    """

    def __init__(self, name, modules, lr, clip=None, eps=1e-7, loss_scaling=False):
        super().__init__(name=name)
        self._trained = _Untracked([v for m in modules for v in m.trainable_variables])
        self.lr, self.clip, self.eps = lr, clip, eps
        self.beta1, self.beta2 = 0.9, 0.999
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.first = [
            tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables_to_train
        ]
        self.second = [
            tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables_to_train
        ]
        self.loss_scaling = loss_scaling
        self.loss_scale = tf.Variable(2.0**15, trainable=False)
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False)

    def add(self, module):
        """Also train `module`'s variables, clipped together with the others."""
        variables = module.trainable_variables
        self._trained.items.extend(variables)
        self.first.extend(tf.Variable(tf.zeros_like(v), trainable=False) for v in variables)
        self.second.extend(tf.Variable(tf.zeros_like(v), trainable=False) for v in variables)

    @property
    def variables_to_train(self):
        """The variables this optimizer updates."""
        return self._trained.items

    def minimize(self, tape, loss):
        """Compute gradients of `loss` recorded on `tape`, clip and apply; returns the grad norm."""
        if self.loss_scaling:
            with tape:
                scaled = loss * self.loss_scale
            grads = tape.gradient(scaled, self.variables_to_train)
            grads = [g / self.loss_scale for g in grads]
        else:
            grads = tape.gradient(loss, self.variables_to_train)
        norm = tf.linalg.global_norm(grads)
        if self.clip:
            grads, _ = tf.clip_by_global_norm(grads, self.clip, norm)
        if self.loss_scaling:
            finite = tf.math.is_finite(norm)
            self._update_scale(finite)
            tf.cond(finite, lambda: self._apply(grads), tf.no_op)
        else:
            self._apply(grads)
        return norm

    def _update_scale(self, finite):
        grow = tf.logical_and(finite, self.good_steps >= 2000)
        self.loss_scale.assign(
            tf.where(
                finite, tf.where(grow, self.loss_scale * 2, self.loss_scale), self.loss_scale / 2
            )
        )
        self.good_steps.assign(
            tf.where(finite & ~grow, self.good_steps + 1, tf.zeros_like(self.good_steps))
        )

    def _apply(self, grads):
        self.iterations.assign_add(1)
        step = tf.cast(self.iterations, tf.float32)
        lr = self.lr * tf.sqrt(1 - self.beta2**step) / (1 - self.beta1**step)
        for var, grad, first, second in zip(
            self.variables_to_train, grads, self.first, self.second
        ):
            first.assign(self.beta1 * first + (1 - self.beta1) * grad)
            second.assign(self.beta2 * second + (1 - self.beta2) * tf.square(grad))
            var.assign_sub(lr * first / (tf.sqrt(second) + self.eps))
        return tf.no_op()


class Timings:
    """Running means of named durations in milliseconds, emptied by `pop`."""

    def __init__(self):
        self._totals = {}

    def add(self, key, milliseconds):
        """Record one duration under `key`."""
        total, count = self._totals.get(key, (0.0, 0))
        self._totals[key] = (total + milliseconds, count + 1)

    def pop(self):
        """The mean of each key since the last call."""
        means = {key: total / count for key, (total, count) in self._totals.items()}
        self._totals = {}
        return means
