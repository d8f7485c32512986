import json
import threading
import time

import numpy as np
import pytest

from dreamer_lsp import replay as replay_lib
from dreamer_lsp.replay import Replay, load_episode, load_episodes, save_episode

OFFSET = 1000  # reward[t] of episode i is i * OFFSET + t, so each window identifies its episode


def make_episode(i, length, image=True):
    reward = (i * OFFSET + np.arange(length)).astype(np.float32)
    episode = {
        'action': np.stack([reward, -reward], -1),
        'reward': reward,
        'discount': np.ones(length, np.float32),
        'qpos': np.zeros((length, 3), np.float64),
        'qvel': np.zeros((length, 2), np.float64),
        'video': np.zeros((length, 2, 2, 3), np.uint8),
        'arena': np.zeros((length, 4), np.float32),
    }
    if image:
        episode['image'] = (np.arange(length)[:, None, None, None] + np.zeros((4, 4, 3))).astype(
            np.uint8
        )
    return episode


@pytest.fixture
def replays():
    created = []

    def make(*args, **kwargs):
        created.append(Replay(*args, **kwargs))
        return created[-1]

    yield make
    for replay in created:
        replay.close()


def take(replay, iterator, n):
    batches = []
    for _ in range(n):
        replay.tick()
        batches.append({key: value.numpy() for key, value in next(iterator).items()})
    return batches


def window_source(reward_row):
    """Episode index and start of a reward window, asserting it is one contiguous slice."""
    episode, start = divmod(int(reward_row[0]), OFFSET)
    np.testing.assert_array_equal(reward_row, episode * OFFSET + start + np.arange(len(reward_row)))
    return episode, start


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_save_is_atomic_and_round_trips(tmp_path):
    episode = make_episode(0, 10)
    path = save_episode(tmp_path / 'eps', episode, 3)
    assert path == tmp_path / 'eps' / '000003-9.npz'
    assert [p.name for p in (tmp_path / 'eps').iterdir()] == ['000003-9.npz']
    loaded = load_episode(path)
    assert loaded.keys() == episode.keys()
    for key in episode:
        assert loaded[key].dtype == episode[key].dtype
        np.testing.assert_array_equal(loaded[key], episode[key])
    assert loaded['image'].dtype == np.uint8


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken(file, **arrays):
        file.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(np, 'savez_compressed', broken)
    with pytest.raises(OSError, match='disk full'):
        save_episode(tmp_path, make_episode(0, 5), 0)
    assert list(tmp_path.iterdir()) == []


def test_index_continues_after_existing_files(tmp_path, replays):
    save_episode(tmp_path, make_episode(0, 5), 0)
    save_episode(tmp_path, make_episode(1, 7), 1)
    replay = replays(tmp_path)
    assert replay.add(make_episode(2, 4)).name == '000002-3.npz'
    replay.load()
    assert replay.episode_names == ['000000-4', '000001-6', '000002-3']
    assert replay.num_steps == 4 + 6 + 3
    assert replay.add(make_episode(3, 4)).name == '000003-3.npz'
    assert replay_lib.count_steps(tmp_path) == replay.num_steps == 16


def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path, capsys):
    good = save_episode(tmp_path, make_episode(0, 5), 0)
    truncated = save_episode(tmp_path, make_episode(1, 50), 1)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    garbage = tmp_path / '000002-4.npz'
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    no_reward = make_episode(3, 5)
    del no_reward['reward']
    missing = tmp_path / '000003-4.npz'
    np.savez_compressed(missing, **no_reward)
    ragged = make_episode(4, 5)
    ragged['discount'] = ragged['discount'][:3]
    inconsistent = tmp_path / '000004-4.npz'
    np.savez_compressed(inconsistent, **ragged)
    (tmp_path / '.tmp-partial').write_bytes(b'ignored')

    episodes = load_episodes(tmp_path)
    assert list(episodes) == [good.stem]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    for line, path in zip(lines, [truncated, garbage, missing, inconsistent]):
        assert str(path) in line
    assert 'reward' in lines[2]
    assert 'inconsistent lengths' in lines[3]


def test_replay_load_skips_corrupt_files(tmp_path, replays, capsys):
    save_episode(tmp_path, make_episode(0, 5), 0)
    (tmp_path / '000001-4.npz').write_bytes(b'not a zip file')
    replay = replays(tmp_path)
    replay.load()
    assert replay.episode_names == ['000000-4']
    assert replay.num_steps == 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and '000001-4.npz' in lines[0]
    assert replay.add(make_episode(2, 5)).name == '000002-4.npz'


def test_windows_are_slices_of_one_long_enough_episode(tmp_path, replays):
    lengths = [5, 12, 20, 30]
    replay = replays(tmp_path, seed=1)
    for i, length in enumerate(lengths):
        replay.add(make_episode(i, length))
    with pytest.raises(ValueError, match='has no key.s. skill'):
        replay.dataset(batch_size=8, batch_length=10, keys=('image', 'skill'))
    dataset = replay.dataset(batch_size=8, batch_length=10, keys=('image', 'action', 'reward'))
    assert set(dataset.element_spec) == {'action', 'reward', 'image'}
    assert dataset.element_spec['image'].dtype.name == 'uint8'
    used = set()
    for batch in take(replay, iter(dataset), 25):
        assert batch['reward'].shape == (8, 10)
        assert batch['action'].shape == (8, 10, 2)
        assert batch['image'].shape == (8, 10, 4, 4, 3)
        for b in range(8):
            episode, start = window_source(batch['reward'][b])
            assert start + 10 <= lengths[episode]
            np.testing.assert_array_equal(batch['action'][b, :, 1], -batch['reward'][b])
            np.testing.assert_array_equal(batch['image'][b, :, 0, 0, 0], start + np.arange(10))
            used.add(episode)
    assert used == {1, 2, 3}


def test_batch_length_longer_than_every_episode_is_a_clear_error(tmp_path, replays):
    replay = replays(tmp_path)
    replay.add(make_episode(0, 5))
    with pytest.raises(ValueError, match='batch_length=10 .*longest has 5'):
        replay.dataset(batch_size=2, batch_length=10)


def fill(replay, lengths=(15, 20, 25)):
    for i, length in enumerate(lengths):
        replay.add(make_episode(i, length))


def test_sampling_is_seeded_and_resumable(tmp_path, replays):
    batches = {}
    for name, seed in [('first', 3), ('second', 3), ('other', 4)]:
        replay = replays(tmp_path / name, seed=seed)
        fill(replay)
        batches[name] = take(replay, iter(replay.dataset(4, 6)), 6)
    assert_batches_equal(batches['first'], batches['second'])
    assert not np.array_equal(batches['first'][0]['reward'], batches['other'][0]['reward'])
    assert not np.array_equal(batches['first'][0]['reward'], batches['first'][1]['reward'])

    resumed = replays(tmp_path / 'resumed', seed=3)
    fill(resumed)
    resumed.clock = 4
    iterator = iter(resumed.dataset(4, 6, start_update=4))
    assert_batches_equal(take(resumed, iterator, 2), batches['first'][4:6])


def run_with_interleaved_adds(replay, delay):
    """Twelve updates with adds before and after ticks; returns batches, sources and tags."""
    replay.add(make_episode(0, 12))
    iterator = iter(replay.dataset(batch_size=6, batch_length=5, prefetch=2))
    batches, sources, tags = [], [], {0: 0}
    for update in range(12):
        if update % 4 == 1:
            time.sleep(delay)
            tags[len(tags)] = replay.clock
            replay.add(make_episode(len(tags) - 1, 12))
        replay.tick()
        if update % 4 == 3:
            # The tick wakes the prefetch thread; with a delay it samples before this add.
            time.sleep(delay)
            tags[len(tags)] = replay.clock
            replay.add(make_episode(len(tags) - 1, 12))
        batch = {key: value.numpy() for key, value in next(iterator).items()}
        batches.append(batch)
        sources.append({window_source(row)[0] for row in batch['reward']})
    return batches, sources, tags


def test_prefetch_does_not_change_which_episodes_batches_use(tmp_path, replays):
    fast = run_with_interleaved_adds(replays(tmp_path / 'fast'), delay=0)
    slow = run_with_interleaved_adds(replays(tmp_path / 'slow'), delay=0.05)
    assert_batches_equal(fast[0], slow[0])
    batches, sources, tags = fast
    for k, used in enumerate(sources):
        cutoff = max(k + 1 - 2, 1)
        assert all(tags[i] < cutoff for i in used)
    assert {i for i, tag in tags.items() if tag <= 5} <= set().union(*sources)


def test_capacity_drops_oldest_from_memory_not_disk(tmp_path, replays):
    replay = replays(tmp_path, capacity=25)
    for i in range(5):
        replay.add(make_episode(i, 11))
    assert replay.num_episodes == 5
    assert replay.num_steps == 50
    assert len(list(tmp_path.glob('*.npz'))) == 5
    assert replay.memory_names == ['000003-10', '000004-10']
    batches = take(replay, iter(replay.dataset(8, 5)), 5)
    assert {window_source(row)[0] for b in batches for row in b['reward']} == {3, 4}

    resumed = replays(tmp_path, capacity=25)
    resumed.load()
    assert resumed.num_steps == 50
    assert resumed.memory_names == ['000003-10', '000004-10']


def test_restore_moves_files_after_the_checkpoint_aside(tmp_path, replays, capsys):
    directory = tmp_path / 'train_episodes'
    replay = replays(directory)
    fill(replay)
    replay.tick()
    state = json.loads(json.dumps(replay.state()))
    replay.add(make_episode(3, 30))
    replay.add(make_episode(4, 30))
    capsys.readouterr()

    resumed = replays(directory)
    resumed.restore(state)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and 'moved 2 ' in out[0]
    orphaned = sorted(p.name for p in (tmp_path / 'orphaned_episodes').iterdir())
    assert orphaned == ['000003-29.npz', '000004-29.npz']
    assert resumed.episode_names == ['000000-14', '000001-19', '000002-24']
    assert resumed.num_steps == 14 + 19 + 24
    assert resumed.clock == 1
    batches = take(resumed, iter(resumed.dataset(8, 5, start_update=1)), 3)
    assert {window_source(row)[0] for b in batches for row in b['reward']} <= {0, 1, 2}
    assert resumed.add(make_episode(5, 8)).name == '000003-7.npz'


def test_restore_reproduces_an_uninterrupted_run(tmp_path, replays):
    def updates(replay, iterator, start, stop):
        batches = []
        for update in range(start, stop):
            if update % 2 == 0:
                replay.add(make_episode(update, 8 + update))
            batches += take(replay, iterator, 1)
        return batches

    # Capacity and a long prefetch make early resumed batches need an episode dropped from memory.
    original = replays(tmp_path / 'run', capacity=20, seed=6)
    original.add(make_episode(99, 9))
    iterator = iter(original.dataset(8, 6, prefetch=4))
    before = updates(original, iterator, 0, 5)
    state = json.loads(json.dumps(original.state()))
    after = updates(original, iterator, 5, 12)
    original.close()

    resumed = replays(tmp_path / 'run', capacity=20, seed=6)
    resumed.restore(state)
    assert resumed.clock == len(before)
    assert '000000-8' not in resumed.memory_names
    iterator = iter(resumed.dataset(8, 6, start_update=resumed.clock, prefetch=4))
    assert_batches_equal(updates(resumed, iterator, 5, 12), after)
    assert 99 in {window_source(row)[0] for row in after[0]['reward']}


def test_close_unblocks_a_waiting_generator(tmp_path, replays):
    replay = replays(tmp_path)
    fill(replay)
    iterator = iter(replay.dataset(2, 5))
    result = []
    thread = threading.Thread(target=lambda: result.append(next(iterator, 'ended')))
    thread.start()
    time.sleep(0.2)
    assert thread.is_alive()  # batch 0 waits for the first tick
    replay.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result == ['ended']
