"""One logger fanning out to the terminal, `metrics.jsonl` and TensorBoard."""

import json
import time

from dreamer_lsp._tf import tf
from dreamer_lsp.durations import format_duration
from dreamer_lsp.rundir import atomic_write_text


class Logger:
    """Collects scalars and writes them per `step` (environment steps) to a `RunDir`.

    `scalars` lines (episode returns, evaluation) are written at once; `average` values (train
    metrics) are averaged until the next `write`. Each `write` appends one JSON line, with the
    rates since the last one and `wall_seconds`, the time the run has spent over all its starts.
    """

    def __init__(self, run_dir, total_steps):
        self.jsonl = run_dir.metrics
        self.writer = tf.summary.create_file_writer(str(run_dir.tensorboard))
        self.total_steps = total_steps
        self._sums, self._counts = {}, {}
        self._last_time = time.time()
        self._started = time.monotonic()
        self._seconds_before = 0.0
        self._last_step = None
        self._last_updates = None
        self.recent = {}

    def truncate_after(self, step):
        """Drop lines written after `step` (by a run killed after its last checkpoint)."""
        if not self.jsonl.exists():
            return
        kept = []
        for line in self.jsonl.read_text().splitlines():
            try:
                if json.loads(line)['step'] <= step:
                    kept.append(line)
            except (ValueError, KeyError):
                continue
        atomic_write_text(self.jsonl, ''.join(f'{line}\n' for line in kept))

    def average(self, metrics):
        """Accumulate a dict of scalars to be averaged at the next `write`."""
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1

    def pending(self):
        """The sums and counts `average` collected since the last `write` (for a checkpoint)."""
        return {key: [self._sums[key], self._counts[key]] for key in self._sums}

    def restore_pending(self, pending):
        """Continue the averages of a checkpoint's `pending()`, so a resumed run logs the same
        values as one that did not stop."""
        self._sums = {key: sum_ for key, (sum_, _) in pending.items()}
        self._counts = {key: count for key, (_, count) in pending.items()}

    def wall_seconds(self):
        """Seconds since this logger started, plus those of the run's earlier starts."""
        return self._seconds_before + time.monotonic() - self._started

    def restore_wall_seconds(self, seconds):
        """Count on from a checkpoint's `wall_seconds()`."""
        self._seconds_before = seconds

    def scalars(self, step, values):
        """Write one JSON line and TensorBoard scalars now."""
        values = {k: float(v) for k, v in values.items()}
        self.recent.update(values)
        with self.jsonl.open('a') as file:
            file.write(json.dumps({'step': int(step), **values}) + '\n')
        with self.writer.as_default(step=int(step)):
            for key, value in values.items():
                tf.summary.scalar(key, value)
        self.writer.flush()

    def write(self, step, updates):
        """Write the averaged train metrics with fps and print the progress line."""
        now = time.time()
        values = {f'train/{k}': self._sums[k] / self._counts[k] for k in self._sums}
        self._sums, self._counts = {}, {}
        if self._last_step is not None and now > self._last_time:
            values['fps'] = (step - self._last_step) / (now - self._last_time)
            values['updates_per_second'] = (updates - self._last_updates) / (now - self._last_time)
        self._last_time, self._last_step, self._last_updates = now, step, updates
        values['updates'] = updates
        values['wall_seconds'] = self.wall_seconds()
        self.scalars(step, values)
        self.print_line(step)

    def print_line(self, step):
        """The terminal progress line: step, then what is known of returns and rates, and the
        ETA once there is a rate."""
        recent = self.recent
        parts = [f'[{int(step):>8d}/{self.total_steps}]']
        for key, label in (('train/return', 'train return'), ('test/return', 'test return')):
            if key in recent:
                parts.append(f'{label} {recent[key]:7.1f}')
        if 'updates_per_second' in recent:
            parts.append(f'{recent["updates_per_second"]:5.2f} updates/s')
        fps = recent.get('fps')
        if fps is not None:
            parts.append(f'{fps:6.1f} env steps/s')
            if fps > 0:
                parts.append(f'ETA {format_duration((self.total_steps - step) / fps)}')
        print(' | '.join(parts), flush=True)

    def close(self):
        """Flush and close TensorBoard."""
        self.writer.close()
