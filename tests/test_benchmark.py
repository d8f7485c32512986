"""The benchmark tool runs end to end (tiny sizes) and writes its figures as JSON."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'tools.benchmark',
            '--blocks',
            'debug',
            '--repeats',
            '1',
            '--warmup',
            '0',
            '--acting-steps',
            '20',
            '--json',
            str(out),
            '--only',
            'matmul_peak',
            'update_dreamer_features',
            'update_lsp_pixels',
            'cem',
            'acting',
            'small_update_lsp_subset',
            'small_cem',
            'small_end_to_end',
            'memory',
            '--memory-updates',
            '3',
            '--cem-subset',
            '4',
            '--end-to-end-steps',
            '600',
            '--threads',
            '1',
            '--cem-precision',
            '16',
            '--profile',
            str(tmp_path / 'profile'),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures['matmul_peak']['gflops'] > 0
    assert figures['threads']['intra'] == 1
    assert figures['cem_precision'] == 16
    for case in ('update_dreamer_features', 'update_lsp_pixels'):
        assert figures[case]['seconds']['median'] > 0 and figures[case]['flops'] > 0
    assert figures['cem']['acting']['starts'] == 1
    # The small regime: the learning check's batch (shrunk by debug to 4 x 8), a subset of 4.
    assert figures['small_update_lsp_subset']['seconds']['median'] > 0
    assert [figures['small_cem'][k]['starts'] for k in ('train', 'train_subset', 'acting')] == [
        32,
        4,
        1,
    ]
    for run in ('dreamer', 'lsp_subset'):
        end_to_end = figures['small_end_to_end'][run]
        assert end_to_end['intervals'] >= 2  # the interval ending at 600 (prefill + 200) is not
        assert end_to_end['env_steps_per_second'] > 0 and end_to_end['updates_per_second'] > 0
        assert end_to_end['acting_ms']['acting/step_ms'] > 0
        assert end_to_end['evaluation_seconds'] > 0
    assert figures['acting']['lsp']['steps_per_second_agent_only'] > 0
    assert figures['peak_rss_mib'] > 0
    assert [update for update, _ in figures['memory']['peak_rss_mib']] == [1, 2, 3]
    traced, executed = (
        figures['update_dreamer_features']['flops_traced'],
        figures['update_dreamer_features']['flops'],
    )
    assert 0 < executed <= traced
    assert 'per update' in result.stdout and 'GFLOP/s' in result.stdout
    profile = figures['update_dreamer_features']['profile']
    assert any('MatMul' in row['op'] for row in profile) and 0 < profile[0]['share'] <= 1
    assert list((tmp_path / 'profile' / 'update_lsp_pixels').rglob('*.xplane.pb'))
