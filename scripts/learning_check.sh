#!/usr/bin/env bash
# Learning check: cartpole balance with features, 36k environment steps at the paper's cadence (one
# update per 5 environment steps) with batch 8 instead of 50 (the `learning_check` block).
# A random policy scores about 300; the check passes when an evaluation return exceeds 800.
# Usage: scripts/learning_check.sh [METHOD] [LOGDIR] [FLAG VALUE ...]   (METHOD: dreamer by default)
# LSP: scripts/learning_check.sh lsp runs/lc_lsp --cem.train_starts 64  (CEM on 64 of the batch's
# 400 start states during training: the documented deviation for slow machines).
set -euo pipefail
cd "$(dirname "$0")/.."
method="${1:-dreamer}"
logdir="${2:-runs/learning_check/${method}-$(date +%Y%m%d-%H%M%S)}"
shift $(( $# < 2 ? $# : 2 ))
make install >/dev/null
.venv/bin/python -m dreamer_lsp --configs dmc_proprio "$method" learning_check --logdir "$logdir" "$@"
.venv/bin/python - "$logdir" <<'PY'
import json, pathlib, sys
lines = [json.loads(l) for l in (pathlib.Path(sys.argv[1]) / 'metrics.jsonl').read_text().splitlines()]
tests = [(l['step'], l['test/return']) for l in lines if 'test/return' in l]
print('evaluation returns (step, return):', ', '.join(f'({s}, {r:.0f})' for s, r in tests))
best = max(r for _, r in tests)
print(f'best evaluation return {best:.0f}: ' + ('PASS (> 800)' if best > 800 else 'FAIL (<= 800)'))
sys.exit(0 if best > 800 else 1)
PY
