"""Episode storage on disk and deterministic replay sampling for training.

Episodes are dicts of numpy arrays sharing a leading time dimension of T + 1 entries (T agent
steps). Each one is written to ``<index:06d>-<T>.npz``. TensorFlow is imported only inside
``Replay.dataset`` so that processes without TensorFlow can use ``save_episode``.
"""

import dataclasses
import os
import pathlib
import re
import shutil
import sys
import threading
import uuid

import numpy as np

REQUIRED_KEYS = ('action', 'reward')
ORPHAN_DIRNAME = 'orphaned_episodes'
_NAME_RE = re.compile(r'^(\d+)-(\d+)$')


def save_episode(directory, episode, index: int) -> pathlib.Path:
    """Atomically write ``episode`` to ``<directory>/<index:06d>-<num_steps>.npz``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    episode = {key: np.asarray(value) for key, value in episode.items()}
    steps = check_episode(episode) - 1
    path = directory / f'{index:06d}-{steps}.npz'
    # The temporary name does not end in .npz, so loaders never see a partial file.
    temporary = directory / f'.tmp-{uuid.uuid4().hex}'
    try:
        with open(temporary, 'wb') as file:
            np.savez_compressed(file, **episode)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def check_episode(episode) -> int:
    """Return the number of entries (T + 1) of ``episode``; raise ValueError if it is malformed."""
    missing = [key for key in REQUIRED_KEYS if key not in episode]
    if missing:
        raise ValueError(f'missing key(s) {", ".join(missing)}')
    lengths = {}
    for key, value in episode.items():
        if np.ndim(value) == 0:
            raise ValueError(f'{key!r} has no time dimension')
        lengths[key] = len(value)
    if len(set(lengths.values())) != 1:
        raise ValueError(f'inconsistent lengths {lengths}')
    length = lengths['reward']
    if length < 1:
        raise ValueError('episode is empty')
    return length


def load_episode(path) -> dict:
    """Read one episode file; raise an exception saying why if it is unreadable or malformed."""
    with np.load(path, allow_pickle=False) as data:
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError('not an .npz archive')
        episode = {key: data[key] for key in data.files}
    check_episode(episode)
    return episode


def episode_files(directory) -> list[pathlib.Path]:
    """Episode files in ``directory`` sorted by name; temporary and hidden files are ignored."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob('*.npz') if not p.name.startswith('.') and p.is_file())


def load_episodes(directory) -> dict[str, dict]:
    """Load every readable episode in ``directory``, keyed by file stem, ordered by file name.

    Unreadable files are skipped with one warning line on stderr.
    """
    episodes = {}
    for path in episode_files(directory):
        try:
            episodes[path.stem] = load_episode(path)
        except Exception as exc:
            warn_skip(path, exc)
    return episodes


def count_steps(directory) -> int:
    """Agent steps of the episodes in ``directory``, read from their file names."""
    parsed = (parse_episode_name(p.stem) for p in episode_files(directory))
    return sum(steps for _, steps in filter(None, parsed))


def parse_episode_name(stem):
    """(index, steps) of an episode file stem ``<index>-<steps>``; None for any other name."""
    match = _NAME_RE.match(stem)
    return (int(match[1]), int(match[2])) if match else None


def warn_skip(path, reason):
    """One warning line on stderr: the episode file at ``path`` is skipped, and why."""
    if isinstance(reason, BaseException):
        reason = f'{type(reason).__name__}: {reason}'
    reason = ' '.join(str(reason).split())
    print(f'Warning: skipping episode file {path}: {reason}', file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Entry:
    name: str
    index: int
    steps: int
    tag: int

    @property
    def length(self):
        return self.steps + 1


class Replay:
    """Episodes saved to ``directory`` plus an in-memory pool sampled by ``dataset()``.

    Deterministic sampling. Batch k (counted over the whole run) is drawn with
    ``np.random.default_rng([seed, k])``, so no random state is shared between batches. The trainer
    calls ``tick()`` right before taking each batch, so ``clock`` is the number of batches requested
    so far and batch k is taken when ``clock == k + 1``. ``add()`` tags each episode with the clock
    at that moment. With prefetch p, batch k may be produced as soon as ``clock >= c`` with
    ``c = max(k + 1 - p, 1)`` (it blocks on a condition variable until then) and it samples only
    episodes tagged ``< c``. Episodes added later carry tags ``>= clock >= c``, so the episode set
    of batch k is fixed before the batch is drawn, whatever the prefetch thread's timing. Saving
    ``state()`` in a checkpoint and calling ``restore()`` on resume reproduces tags and clock, so a
    resumed run draws the same batches as an uninterrupted one.

    Capacity. Batch k samples from the newest episodes tagged ``< c`` whose steps fit in
    ``capacity`` (the newest always counts). This set depends only on the tags, so capacity does
    not break determinism. Memory keeps the episodes that upcoming batches can still use (about
    ``capacity`` steps plus those added in the last ticks); files are never deleted, and an episode
    dropped from memory that a batch needs after all (e.g. a large prefetch on resume) is reloaded
    from disk.
    """

    def __init__(self, directory, capacity: int | None = None, seed: int = 0):
        self.directory = pathlib.Path(directory)
        self.capacity = capacity
        self.seed = seed
        self._cond = threading.Condition()
        self._entries: list[_Entry] = []  # every episode this replay knows on disk, by index
        self._cache: dict[str, dict] = {}  # episodes held in memory
        self._pending: dict[object, int] = {}  # running generator -> cutoff of its next batch
        self._clock = 0
        self._closed = False
        self._next_index = self._scan_next_index()

    @property
    def clock(self) -> int:
        """Number of ``tick()`` calls so far (``restore()`` sets it on resume)."""
        with self._cond:
            return self._clock

    @clock.setter
    def clock(self, value: int):
        with self._cond:
            self._clock = int(value)
            self._cond.notify_all()

    def tick(self) -> None:
        """Advance the clock; call right before taking each batch from the dataset."""
        with self._cond:
            self._clock += 1
            self._cond.notify_all()

    def close(self) -> None:
        """End all dataset generators (waiting ones wake up and return)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def num_episodes(self) -> int:
        """Number of episodes on disk known to this replay."""
        with self._cond:
            return len(self._entries)

    @property
    def num_steps(self) -> int:
        """Agent steps of all episodes on disk known to this replay."""
        with self._cond:
            return sum(entry.steps for entry in self._entries)

    @property
    def episode_names(self) -> list[str]:
        """Names (file stems) of all episodes on disk known to this replay, oldest first."""
        with self._cond:
            return [entry.name for entry in self._entries]

    @property
    def memory_names(self) -> list[str]:
        """Names of the episodes currently held in memory, oldest first."""
        with self._cond:
            return [entry.name for entry in self._entries if entry.name in self._cache]

    def add(self, episode) -> pathlib.Path:
        """Save ``episode`` under the next index, add it to memory and return its path."""
        episode = {key: np.asarray(value) for key, value in episode.items()}
        length = check_episode(episode)
        with self._cond:
            index = self._next_index
            self._next_index += 1
        path = save_episode(self.directory, episode, index)
        with self._cond:
            self._entries.append(_Entry(path.stem, index, length - 1, self._clock))
            self._entries.sort(key=lambda entry: entry.index)
            self._cache[path.stem] = episode
            self._purge()
        return path

    def load(self) -> None:
        """Register the episode files in ``directory`` (tag 0) and load those memory should hold.

        Meant for resuming without a saved ``state()``. Steps of episodes that do not fit in memory
        are read from their file names; unreadable files that are loaded are skipped with a warning.
        """
        with self._cond:
            known = {entry.name for entry in self._entries}
            for path in episode_files(self.directory):
                if path.stem in known:
                    continue
                parsed = parse_episode_name(path.stem)
                if parsed is None:
                    warn_skip(path, 'file name is not <index>-<steps>.npz')
                    continue
                self._entries.append(_Entry(path.stem, parsed[0], parsed[1], 0))
            self._entries.sort(key=lambda entry: entry.index)
            self._load_needed()
            self._next_index = max(self._next_index, self._scan_next_index())

    def state(self) -> dict:
        """JSON-serialisable state for checkpoints: the clock and [name, tag] of every episode."""
        with self._cond:
            return {
                'clock': self._clock,
                'episodes': [[entry.name, entry.tag] for entry in self._entries],
            }

    def restore(self, state: dict) -> None:
        """Reset to a ``state()``: its episodes with their tags, and its clock.

        Episode files in ``directory`` that the state does not list (written after the checkpoint)
        are moved to ``<directory>/../orphaned_episodes/`` so the resumed run neither duplicates nor
        loses steps relative to its checkpoint.
        """
        tags = {name: int(tag) for name, tag in state['episodes']}
        orphans = [p for p in episode_files(self.directory) if p.stem not in tags]
        if orphans:
            orphan_dir = self.directory.parent / ORPHAN_DIRNAME
            orphan_dir.mkdir(parents=True, exist_ok=True)
            for path in orphans:
                shutil.move(path, _free_path(orphan_dir / path.name))
            count = len(orphans)
            print(f'Replay: moved {count} episode file(s) not in the checkpoint to {orphan_dir}')
        entries = []
        for name, tag in tags.items():
            path = self.directory / f'{name}.npz'
            parsed = parse_episode_name(name)
            if parsed is None or not path.is_file():
                warn_skip(path, 'listed in the checkpoint but missing or misnamed')
                continue
            entries.append(_Entry(name, parsed[0], parsed[1], tag))
        with self._cond:
            self._entries = sorted(entries, key=lambda entry: entry.index)
            self._cache = {}
            self._clock = int(state['clock'])
            self._load_needed()
            self._next_index = self._scan_next_index()
            self._cond.notify_all()

    def dataset(
        self,
        batch_size: int,
        batch_length: int,
        start_update: int = 0,
        prefetch: int = 2,
        keys=None,
    ):
        """A ``tf.data.Dataset`` of dicts of [batch_size, batch_length, ...] windows.

        Each batch holds ``keys`` (default: every key of the newest episode) with the stored
        dtypes. The first element is batch ``start_update``; see the class docstring for the
        sampling rules.
        """
        import tensorflow as tf

        if prefetch < 0:
            raise ValueError(f'prefetch must be >= 0 (not AUTOTUNE), got {prefetch}')
        with self._cond:
            if not self._entries:
                raise ValueError('Replay.dataset() needs at least one episode to infer the keys')
            longest = max(entry.length for entry in self._entries)
            newest = self._entries[-1]
            example = self._cache.get(newest.name)
        if longest < batch_length:
            raise ValueError(_too_short_message(batch_length, longest))
        if example is None:
            example = self._read(newest)
        missing = sorted(set(keys or ()) - set(example))
        if missing:
            raise ValueError(f'episode {newest.name} has no key(s) {", ".join(missing)}')
        signature = {
            key: tf.TensorSpec(
                (batch_size, batch_length) + example[key].shape[1:], tf.as_dtype(example[key].dtype)
            )
            for key in sorted(keys or example)
        }
        dtypes = {key: spec.dtype.as_numpy_dtype for key, spec in signature.items()}

        def generator():
            yield from self._batches(batch_size, batch_length, start_update, prefetch, dtypes)

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        return dataset.prefetch(prefetch) if prefetch else dataset

    def _batches(self, batch_size, batch_length, start_update, prefetch, dtypes):
        token = object()
        k = start_update
        try:
            while True:
                cutoff = max(k + 1 - prefetch, 1)
                with self._cond:
                    self._pending[token] = cutoff
                    while self._clock < cutoff and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    candidates = self._visible(cutoff)
                    episodes = [self._cache.get(entry.name) for entry in candidates]
                batch = self._sample(k, batch_size, batch_length, candidates, episodes, dtypes)
                with self._cond:
                    # Registered before yielding so that memory keeps what the next batch needs.
                    self._pending[token] = max(k + 2 - prefetch, 1)
                yield batch
                k += 1
        finally:
            with self._cond:
                self._pending.pop(token, None)

    def _sample(self, k, batch_size, batch_length, candidates, episodes, dtypes):
        usable = [i for i, entry in enumerate(candidates) if entry.length >= batch_length]
        if not usable:
            longest = max((entry.length for entry in candidates), default=0)
            raise ValueError(_too_short_message(batch_length, longest))
        rng = np.random.default_rng([self.seed, k])
        choice = rng.integers(len(usable), size=batch_size)
        lengths = np.array([candidates[usable[i]].length for i in choice])
        starts = rng.integers(0, lengths - batch_length + 1)
        rows = []
        for i, start in zip(choice, starts):
            j = usable[i]
            if episodes[j] is None:
                episodes[j] = self._read(candidates[j])
            rows.append((candidates[j].name, episodes[j], start))
        batch = {}
        for key, dtype in dtypes.items():
            windows = []
            for name, episode, start in rows:
                if key not in episode:
                    raise ValueError(f'episode {name} has no key {key!r}')
                windows.append(episode[key][start : start + batch_length])
            batch[key] = np.stack(windows).astype(dtype, copy=False)  # [B, T, ...]
        return batch

    def _read(self, entry):
        episode = load_episode(self.directory / f'{entry.name}.npz')
        if len(episode['reward']) != entry.length:
            raise ValueError(f'{entry.name}.npz holds {len(episode["reward"]) - 1} steps')
        return episode

    def _visible(self, cutoff):
        """Episodes batches with this cutoff sample from: the newest tagged < cutoff that fit."""
        visible, total = [], 0
        for entry in reversed(self._entries):
            if entry.tag >= cutoff:
                continue
            if self.capacity is not None and visible and total + entry.steps > self.capacity:
                break
            visible.append(entry)
            total += entry.steps
        return visible[::-1]

    def _needed(self):
        """Entries that memory should hold: those any upcoming batch can still sample."""
        # The next batch taken (after the next tick) is batch `clock`, whose cutoff with the
        # default prefetch of 2 is clock - 1. Running generators may need older cutoffs.
        floor = max(min([self._clock - 1, *self._pending.values()]), 1)
        visible = {entry.name for entry in self._visible(floor)}
        return [entry for entry in self._entries if entry.tag >= floor or entry.name in visible]

    def _purge(self):
        keep = {entry.name for entry in self._needed()}
        for name in [name for name in self._cache if name not in keep]:
            del self._cache[name]

    def _load_needed(self):
        """Load what memory should hold; unreadable files are skipped with a warning."""
        while missing := [entry for entry in self._needed() if entry.name not in self._cache]:
            for entry in missing:
                try:
                    self._cache[entry.name] = self._read(entry)
                except Exception as exc:
                    warn_skip(self.directory / f'{entry.name}.npz', exc)
                    self._entries.remove(entry)
        self._purge()

    def _scan_next_index(self):
        parsed = (parse_episode_name(p.stem) for p in episode_files(self.directory))
        return max((index + 1 for index, _ in filter(None, parsed)), default=0)


def _too_short_message(batch_length, longest):
    return (
        f'No episode in memory has at least batch_length={batch_length} entries '
        f'(longest has {longest})'
    )


def _free_path(path):
    """``path`` or, if it exists, ``<stem>~<n><suffix>`` with the smallest free n."""
    n = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f'{path.stem}~{n}{path.suffix}')
        n += 1
    return candidate
