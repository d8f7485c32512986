"""Refactoring invariant: every preset computes what it computed when the golden file was written.

For each method preset with features, and for Dreamer and LSP with pixels (the observation type
changes only the world model's encoder and decoder, the same for every preset), at the `debug`
sizes, the metrics of two
updates on a fixed batch, the actions and agent extras of a short acting episode on fixed
observations, and the variable names of the checkpoint the trainer writes must equal
`data/invariance.json` (so that the checkpoints of existing runs still load). The
file was written by the code before the redesign (issue 14); regenerate it only for a change
that is meant to alter behaviour:

    python tests/test_invariance.py --write
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dreamer_lsp import config as config_lib
from dreamer_lsp._tf import tf
from dreamer_lsp.agents import make_agent

GOLDEN = Path(__file__).resolve().parent / 'data' / 'invariance.json'
METHODS = (
    'dreamer',
    'lsp',
    'random_skills',
    'randskills_inp',
    'no_mi',
    'hiro',
    'lsp_fixed_policy',
)
PIXEL_METHODS = ('dreamer', 'lsp')
OBSERVATIONS = {
    'features': ('dmc_proprio', {'features': ((5,), np.float32)}),
    'pixels': ('dmc_vision', {'image': ((64, 64, 3), np.uint8)}),
}
ACTION_SIZE = 2
ACTING_STEPS = 5  # with skill length 2: three plans in exploration
# Two updates through oneDNN's float32 kernels: equal to the last bits on one machine, close to
# it on another CPU.
RTOL, ATOL = 1e-4, 1e-5


def observation(kind, shape, rng):
    """A fixed observation (or batch of them) of `shape`."""
    if kind == 'pixels':
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.normal(size=shape).astype(np.float32)


def behaviour(obs_kind, method):
    """Metrics of two updates, an acting episode and the checkpoint's variable names."""
    block, space = OBSERVATIONS[obs_kind]
    config = config_lib.build(['debug', block, method])
    agent = make_agent(config, space, ACTION_SIZE)
    key = 'image' if obs_kind == 'pixels' else 'features'
    shape = space[key][0]
    rng = np.random.default_rng(0)
    b, t = config.batch_size, config.batch_length
    data = {
        key: tf.constant(observation(obs_kind, (b, t, *shape), rng)),
        'action': tf.constant(rng.uniform(-1, 1, (b, t, ACTION_SIZE)), tf.float32),
        'reward': tf.constant(rng.normal(size=(b, t)), tf.float32),
    }
    updates = [
        {name: float(value) for name, value in sorted(agent.train(data).items())} for _ in range(2)
    ]
    acting = []
    for explore in (True, False):
        state = agent.initial_state()
        for _ in range(ACTING_STEPS):
            obs = {key: tf.constant(observation(obs_kind, (1, *shape), rng))}
            action, state, extras = agent.act(obs, state, explore)
            acting.append(
                dict(action=action.tolist(), **{k: v.tolist() for k, v in sorted(extras.items())})
            )
    with tempfile.TemporaryDirectory() as directory:
        prefix = agent.checkpoint().write(str(Path(directory) / 'variables'))
        names = sorted(name for name, _ in tf.train.list_variables(prefix))
    return dict(updates=updates, acting=acting, checkpoint=names)


def load_golden():
    return json.loads(GOLDEN.read_text())


CASES = [('features', method) for method in METHODS] + [('pixels', m) for m in PIXEL_METHODS]


@pytest.mark.parametrize('obs_kind, method', CASES)
def test_behaviour_equals_the_golden_file(obs_kind, method):
    expected = load_golden()[f'{obs_kind}/{method}']
    actual = behaviour(obs_kind, method)
    assert actual['checkpoint'] == expected['checkpoint']
    for got, want in zip(actual['updates'], expected['updates'], strict=True):
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], RTOL, ATOL, err_msg=name)
    for got, want in zip(actual['acting'], expected['acting'], strict=True):
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], RTOL, ATOL, err_msg=name)


def write_golden():
    """Record the current code's behaviour of every preset in `GOLDEN`."""
    golden = {f'{obs_kind}/{method}': behaviour(obs_kind, method) for obs_kind, method in CASES}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1) + '\n')
    print(f'wrote {GOLDEN}')


if __name__ == '__main__':
    if sys.argv[1:] != ['--write']:
        sys.exit('usage: python tests/test_invariance.py --write')
    write_golden()
