"""Immutable, typed run configuration built from `configs.yaml` and the command line.

`configs.yaml` holds a `defaults` block and named blocks. The command line picks blocks with
`--configs a b c` (merged left to right on top of the defaults) and then overrides single keys,
nested ones with dots: `--task dmc_walker_walk --model.deter 200`. Every value is cast to the
type of its default; an unknown key or block, or a value of the wrong type, raises `ConfigError`
with one line that names the offender and the closest valid names.
"""

import difflib
import io
import pathlib
import sys

from ruamel.yaml import YAML

from dreamer_lsp.envs import OBS_TYPES, TASKS
from dreamer_lsp.replay import episode_files
from dreamer_lsp.rundir import RunDir, atomic_write_text

CONFIGS_PATH = pathlib.Path(__file__).resolve().parent.parent / 'configs.yaml'
# `skills.high_level`: none is Dreamer; the others are LSP's high levels (dreamer_lsp.lsp).
HIGH_LEVELS = ('none', 'cem', 'random', 'policy')
MEAN_NOISE_PER = ('skill', 'update')
PREFILL_POLICIES = ('random', 'agent')


class ConfigError(ValueError):
    """A bad config key, block or value; the message is one line meant for the user."""


def closest_names(name, valid):
    """'closest valid: a, b' for the names of `valid` close to `name`, else 'valid: ...'."""
    matches = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    listed = ', '.join(matches) if matches else ', '.join(sorted(valid)[:12])
    return f'closest valid: {listed}' if matches else f'valid: {listed}'


def _cast(key, value, default):
    """Cast `value` (a YAML value or a command-line string) to the type of `default`."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        value = _parse_scalar(key, value, kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind in (list, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(value)
    raise ConfigError(
        f'config key {key!r} expects {kind.__name__} (default {default!r}), got {value!r}'
    )


def _parse_scalar(key, text, kind):
    if kind is bool:
        lowered = text.lower()
        if lowered in ('true', 'yes', '1', 'on'):
            return True
        if lowered in ('false', 'no', '0', 'off'):
            return False
        raise ConfigError(f'config key {key!r} expects a bool (true/false), got {text!r}')
    if kind in (int, float):
        try:
            return float(text) if kind is float or not text.lstrip('-').isdigit() else int(text)
        except ValueError:
            raise ConfigError(f'config key {key!r} expects {kind.__name__}, got {text!r}') from None
    if kind in (list, tuple):
        parsed = YAML(typ='safe').load(text)
        if isinstance(parsed, list):
            return parsed
        return [parsed] if parsed is not None else []
    return text


class Config:
    """A read-only nested mapping with attribute access: `config.model.deter`."""

    def __init__(self, values, prefix=''):
        object.__setattr__(self, '_values', {})
        object.__setattr__(self, '_prefix', prefix)
        for key, value in values.items():
            if isinstance(value, dict):
                value = Config(value, f'{prefix}{key}.')
            elif isinstance(value, list):
                value = tuple(value)
            self._values[key] = value

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f'no config key {self._prefix + name!r}; {closest_names(name, self._values)}'
            ) from None

    def __getitem__(self, name):
        return self._values[name]

    def __setattr__(self, name, value):
        raise AttributeError('Config is immutable; use config.update({...}) for a changed copy')

    def __contains__(self, name):
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def __eq__(self, other):
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f'Config({self.to_dict()!r})'

    def keys(self):
        """The top-level keys."""
        return self._values.keys()

    def items(self):
        """The top-level (key, value) pairs."""
        return self._values.items()

    def to_dict(self):
        """A plain nested dict copy (tuples become lists)."""
        result = {}
        for key, value in self._values.items():
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            result[key] = value
        return result

    def flat(self):
        """A dict of dotted keys to leaf values."""
        result = {}
        for key, value in self._values.items():
            if isinstance(value, Config):
                result.update({f'{key}.{k}': v for k, v in value.flat().items()})
            else:
                result[key] = value
        return result

    def update(self, overrides):
        """A copy with `overrides` (dotted or nested keys) applied, each cast and checked."""
        values = self.to_dict()
        for dotted, value in _flatten(overrides).items():
            _assign(values, dotted, value, self.flat())
        return Config(values)

    def save(self, path):
        """Write the config as YAML atomically."""
        stream = io.StringIO()
        yaml = YAML(typ='safe')
        yaml.default_flow_style = False
        yaml.dump(self.to_dict(), stream)
        atomic_write_text(path, stream.getvalue())

    def diff(self, other, ignore=()):
        """Dotted keys whose values differ between two configs, as `key: a -> b` strings."""
        mine, theirs = self.flat(), other.flat()
        lines = []
        for key in sorted(set(mine) | set(theirs)):
            if key in ignore:
                continue
            a, b = mine.get(key, '<missing>'), theirs.get(key, '<missing>')
            if a != b:
                lines.append(f'{key}: {a!r} -> {b!r}')
        return lines


def _flatten(values, prefix=''):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def _assign(values, dotted, value, defaults_flat):
    if dotted not in defaults_flat:
        raise ConfigError(f'unknown config key {dotted!r}; {closest_names(dotted, defaults_flat)}')
    *parents, leaf = dotted.split('.')
    node = values
    for part in parents:
        node = node[part]
    node[leaf] = _cast(dotted, value, defaults_flat[dotted])


def load_blocks(path=CONFIGS_PATH):
    """All blocks of `configs.yaml` as plain dicts, `defaults` included."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as error:
        raise ConfigError(f'cannot read config file {path}: {error.strerror}') from None
    return YAML(typ='safe').load(text)


def build(block_names=(), overrides=None, path=CONFIGS_PATH):
    """The defaults with the named blocks merged in order and then `overrides` applied."""
    blocks = load_blocks(path)
    config = Config(blocks['defaults'])
    for name in block_names:
        if name not in blocks or name == 'defaults':
            valid = [b for b in blocks if b != 'defaults']
            raise ConfigError(f'unknown config block {name!r}; {closest_names(name, valid)}')
        config = config.update(blocks[name] or {})
    return config.update(overrides or {})


def load_saved(path):
    """A run's saved `config.yaml`, checked against this version's defaults."""
    try:
        return build(overrides=load_blocks(path))
    except ConfigError as error:
        raise ConfigError(f'{path} is not a valid config of this version: {error}') from None


def parse_args(argv, path=CONFIGS_PATH):
    """Parse `--configs a b --key value ...` into a Config; `--help` prints every key."""
    blocks, overrides, index = [], {}, 0
    while index < len(argv):
        arg = argv[index]
        if arg in ('-h', '--help'):
            print(help_text(path))
            sys.exit(0)
        if not arg.startswith('--'):
            raise ConfigError(f'unexpected argument {arg!r}; flags look like --key value')
        key, _, inline = arg[2:].partition('=')
        values = [inline] if inline else []
        index += 1
        while not inline and index < len(argv) and not argv[index].startswith('--'):
            values.append(argv[index])
            index += 1
        if key == 'configs':
            blocks.extend(values)
            continue
        if len(values) != 1:
            raise ConfigError(f'flag --{key} needs exactly one value, got {len(values)}')
        overrides[key] = values[0]
    return build(blocks, overrides, path)


def help_text(path=CONFIGS_PATH):
    """Usage, the blocks and every key with its default."""
    blocks = load_blocks(path)
    lines = [
        'usage: python -m dreamer_lsp --configs BLOCK [BLOCK ...] [--KEY VALUE ...]',
        '',
        'blocks: ' + ', '.join(b for b in blocks if b != 'defaults'),
        '',
        'keys (default):',
    ]
    for key, value in Config(blocks['defaults']).flat().items():
        lines.append(f'  --{key} {value!r}')
    return '\n'.join(lines)


def check_task(task):
    """Raise ConfigError naming the closest valid tasks unless `task` is a known dmc_ task."""
    if task.removeprefix('dmc_') not in TASKS or not task.startswith('dmc_'):
        valid = [f'dmc_{name}' for name in TASKS]
        raise ConfigError(f'unknown task {task!r}; {closest_names(task, valid)}')


def check(config):
    """Validate what the type check cannot; raises ConfigError with one line.

    Runs before TensorFlow or a logdir is touched, so a refused run costs nothing.
    """
    if not config.logdir:
        raise ConfigError('--logdir is required: the directory the run writes everything to')
    check_task(config.task)
    if config.precision not in (16, 32):
        raise ConfigError(f'precision must be 16 or 32, got {config.precision}')
    if config.cem.precision not in (16, 32):
        raise ConfigError(f'cem.precision must be 16 or 32, got {config.cem.precision}')
    if config.obs_type not in OBS_TYPES:
        raise ConfigError(
            f'obs_type {config.obs_type!r} is invalid; {closest_names(config.obs_type, OBS_TYPES)}'
        )
    for key in (
        'action_repeat',
        'batch_size',
        'batch_length',
        'train_every',
        'checkpoint_keep',
    ):
        if config[key] < 1:
            raise ConfigError(f'{key} must be at least 1, got {config[key]}')
    if config.prefill_policy not in PREFILL_POLICIES:
        raise ConfigError(
            f'prefill_policy {config.prefill_policy!r} is invalid; '
            f'{closest_names(config.prefill_policy, PREFILL_POLICIES)}'
        )
    for key, valid in (('high_level', HIGH_LEVELS), ('mean_noise_per', MEAN_NOISE_PER)):
        value = config.skills[key]
        if value not in valid:
            raise ConfigError(f'skills.{key} {value!r} is invalid; {closest_names(value, valid)}')
    if config.skills.high_level != 'none':
        skills, cem = config.skills, config.cem
        if skills.length < 1 or skills.horizon < 2 or skills.horizon % skills.length:
            raise ConfigError(
                f'skills.horizon ({skills.horizon}) must be at least 2 and a multiple of '
                f'skills.length ({skills.length})'
            )
        if not 1 <= cem.elites <= cem.proposals:
            raise ConfigError(
                f'cem.elites ({cem.elites}) must be between 1 and cem.proposals ({cem.proposals})'
            )
    for key in ('checkpoint', 'replay'):
        source = config.transfer[key]
        if source and not pathlib.Path(source).expanduser().is_dir():
            raise ConfigError(f'transfer.{key} {source!r} is not a directory')
    source = config.transfer.checkpoint
    if source and RunDir(source).latest_name() is None:
        raise ConfigError(f"transfer.checkpoint {source!r} holds no checkpoint (a run's logdir)")
    if config.transfer.replay and not episode_files(
        pathlib.Path(config.transfer.replay).expanduser()
    ):
        raise ConfigError(f'transfer.replay {config.transfer.replay!r} holds no episodes (*.npz)')
    if config.skills.freeze_actor and config.skills.high_level not in ('cem', 'random'):
        # Dreamer never reads the key, and hiro's high-level policy shares the actor's optimizer.
        raise ConfigError(
            "skills.freeze_actor freezes LSP's low-level actor alone and needs skills.high_level "
            f'cem or random, got {config.skills.high_level!r}'
        )
    if config.skills.freeze_actor and not source:
        # Fig. 5's fixed-policy variant freezes a *transferred* low-level actor.
        raise ConfigError(
            'skills.freeze_actor (lsp_fixed_policy) needs --transfer.checkpoint, the logdir of '
            'a source run: an actor that was never trained would stay frozen at random weights'
        )
    if config.horizon < 2:
        raise ConfigError(
            f'horizon must be at least 2 (λ-returns need a bootstrap), got {config.horizon}'
        )
