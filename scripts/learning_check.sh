#!/usr/bin/env bash
# Learning check: Dreamer on cartpole balance with features, reduced batch (16) and cadence (one
# update per 20 environment steps) so that it finishes in under 30 minutes on a 2-core CPU.
# A random policy scores about 300; the check passes when an evaluation return exceeds 800.
# Usage: scripts/learning_check.sh [METHOD] [LOGDIR]   (METHOD: dreamer by default)
set -euo pipefail
cd "$(dirname "$0")/.."
method="${1:-dreamer}"
logdir="${2:-runs/learning_check/${method}-$(date +%Y%m%d-%H%M%S)}"
make install >/dev/null
.venv/bin/python -m dreamer_lsp --configs dmc_proprio "$method" learning_check --logdir "$logdir"
.venv/bin/python - "$logdir" <<'PY'
import json, pathlib, sys
lines = [json.loads(l) for l in (pathlib.Path(sys.argv[1]) / 'metrics.jsonl').read_text().splitlines()]
tests = [(l['step'], l['test/return']) for l in lines if 'test/return' in l]
print('evaluation returns (step, return):', ', '.join(f'({s}, {r:.0f})' for s, r in tests))
best = max(r for _, r in tests)
print(f'best evaluation return {best:.0f}: ' + ('PASS (> 800)' if best > 800 else 'FAIL (<= 800)'))
sys.exit(0 if best > 800 else 1)
PY
