"""The SLURM backend on a real single-node cluster (scripts/slurm_cluster.sh): a Fig. 5 debug
chain (source -> relabeling -> transfer target) submitted through submitit runs in dependency
order, a job requeued mid-run resumes from its checkpoint, and a second submission skips it all.

Needs root and Debian's slurmctld, slurmd and munge (`.ci/run` installs them); skipped elsewhere
unless DREAMER_LSP_REQUIRE_SLURM=1, which turns a missing prerequisite into a failure.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / 'scripts' / 'slurm_cluster.sh'
FIG5 = ROOT / 'scripts' / 'experiments' / 'fig5_transfer.py'
ENDED = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY'}


def missing_prerequisite():
    if os.geteuid() != 0:
        return 'needs root'
    for program in ('slurmctld', 'slurmd', 'munged', 'sbatch'):
        if shutil.which(program) is None:
            return f'{program} is not installed (apt-get install -y slurmctld slurmd munge)'
    if importlib.util.find_spec('submitit') is None:
        return 'submitit is not installed (requirements-dev.txt)'
    return None


REASON = missing_prerequisite()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        REASON is not None and os.environ.get('DREAMER_LSP_REQUIRE_SLURM') != '1',
        reason=REASON or '',
    ),
]


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    """A running cluster; yields the environment its client commands need."""
    assert REASON is None, REASON
    env = dict(os.environ, SLURM_CLUSTER_DIR=str(tmp_path_factory.mktemp('slurm')))
    started = subprocess.run(
        [str(CLUSTER), 'start'], capture_output=True, text=True, env=env, timeout=180
    )
    assert started.returncode == 0, started.stderr
    env['SLURM_CONF'] = started.stdout.strip()
    yield env
    subprocess.run([str(CLUSTER), 'stop'], capture_output=True, env=env, timeout=120)


def job(env, job_id):
    """`scontrol show job` as a dict of its fields."""
    text = subprocess.run(
        ['scontrol', '-o', 'show', 'job', job_id],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout
    return dict(re.findall(r'(\w+)=(\S*)', text))


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f'{what} within {timeout} s')


def submit(env, root):
    command = [
        sys.executable,
        str(FIG5),
        '--debug',
        '--tasks',
        'dmc_quadruped_reach',
        '--methods',
        'dreamer',
        '--seeds',
        '0',
        '--root',
        str(root),
        '--backend',
        'slurm',
        '--slurm-gpus',
        '0',
        '--slurm-cpus',
        '1',
        '--slurm-mem',
        '1',
        '--slurm-time',
        '30',
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_fig5_chain_runs_in_order_survives_a_requeue_and_is_skipped_once_done(cluster, tmp_path):
    root = tmp_path / 'fig5'
    out = submit(cluster, root)
    print(out)
    submitted = re.findall(r'^submitted\s+(\S+)\s+job (\d+)$', out, re.MULTILINE)
    labels = [label for label, _ in submitted]
    assert labels == [
        'dmc_quadruped_walk/dreamer/0',
        'relabeled/dmc_quadruped_reach/dreamer/0',
        'dmc_quadruped_reach/dreamer/0',
    ]
    source_id, relabel_id, target_id = (job_id for _, job_id in submitted)
    source = root / 'dmc_quadruped_walk' / 'dreamer' / '0'
    assert job(cluster, relabel_id)['Dependency'].startswith(f'afterok:{source_id}')
    assert job(cluster, target_id)['Dependency'].startswith(f'afterok:{source_id}')

    # Requeue the source once it trains (its prefill episode is on disk), then let SLURM start
    # it again at once instead of after its requeue delay.
    log = source / 'stdout.log'
    wait_for(
        lambda: log.exists() and 'Prefilled' in log.read_text(), 600, 'the source did not train'
    )
    subprocess.run(['scontrol', 'requeue', source_id], env=cluster, check=True, timeout=60)
    print(f'requeued job {source_id}: {job(cluster, source_id)["JobState"]}')
    wait_for(
        lambda: job(cluster, source_id)['JobState'] == 'PENDING', 120, 'the job was not requeued'
    )
    subprocess.run(
        ['scontrol', 'update', f'JobId={source_id}', 'StartTime=now'],
        env=cluster,
        check=True,
        timeout=60,
    )

    ids = (source_id, relabel_id, target_id)
    wait_for(
        lambda: all(job(cluster, job_id)['JobState'] in ENDED for job_id in ids),
        1200,
        'the jobs did not end',
    )
    jobs = [job(cluster, job_id) for job_id in ids]
    for job_id, fields in zip(ids, jobs, strict=True):
        print(
            f'job {job_id} {fields["JobName"]}: {fields["JobState"]}, restarts '
            f'{fields["Restarts"]}, {fields["StartTime"]} -> {fields["EndTime"]}'
        )
    assert [fields['JobState'] for fields in jobs] == ['COMPLETED'] * 3
    assert jobs[0]['Restarts'] == '1'
    # Each job started after the one it depends on had ended.
    assert jobs[0]['EndTime'] <= jobs[1]['StartTime'] and jobs[1]['EndTime'] <= jobs[2]['StartTime']

    # The requeued source checkpointed on SLURM's SIGTERM and resumed from that checkpoint,
    # with every episode stored exactly once.
    text = log.read_text()
    assert 'Interrupted: writing a checkpoint' in text
    resumed = re.search(r'Resumed \S+ at step (\d+) \((\d+) updates, (\d+) episodes\)', text)
    assert resumed, text[-3000:]
    assert 'Traceback' not in text and 'error:' not in text
    files = sorted(path.name for path in (source / 'train_episodes').glob('*.npz'))
    assert files == [f'{index:06d}-100.npz' for index in range(len(files))] and len(files) >= 2
    lines = [json.loads(line) for line in (source / 'metrics.jsonl').read_text().splitlines()]
    episodes = [line['episodes'] for line in lines if 'train/return' in line]
    assert episodes == list(range(1, len(files) + 1))
    steps = [line['step'] for line in lines]
    assert steps == sorted(steps)
    target = root / 'dmc_quadruped_reach' / 'dreamer' / '0'
    assert 'Seeded the replay' in (target / 'stdout.log').read_text()

    again = submit(cluster, root)
    print(again)
    assert again.count('skip (finished)') == 4  # three runs and the summary line
    assert 'submitted' not in again.replace('0 submitted', '')
