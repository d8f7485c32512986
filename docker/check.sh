#!/usr/bin/env bash
# Verify the Dockerfile end to end on a machine with no Docker daemon and no registry access,
# using podman (daemonless, vfs storage) and a Debian base image built locally by debootstrap.
#
# Usage (as root, from any directory):
#   docker/check.sh                       # build, smoke tests, then the whole test suite
#   docker/check.sh tests/test_config.py  # arguments go to pytest instead of the whole suite
#   CHECK_QUICK=1 docker/check.sh         # a quick subset of the suite (see QUICK_TESTS below)
#
# Steps: install podman, debootstrap and runc if missing (apt-get); docker/build_base.sh; find
# podman run options that work on this machine; build the Dockerfile with
# BASE_IMAGE=localhost/dreamer-lsp-base:bookworm and TF_VARIANT=cpu; then, in the image and as
# its non-root user: the entrypoint's --help, a MuJoCo render with EGL and with OSMesa, a short
# training run through the entrypoint into the /logs volume, and pytest. Exit code 0 only if
# every step passed. The image is kept (named $IMAGE), so a rerun uses the layer cache.
#
# Environment (all optional):
#   IMAGE            tag to build                       (default: dreamer-lsp:cpu-check)
#   BASE_SUITE       Debian suite of the local base     (default: bookworm)
#   PODMAN           podman command line                (default: "podman --storage-driver vfs")
#   BUILD_ISOLATION  podman build --isolation           (default: chroot; needs no OCI runtime)
#   NO_CACHE=1       build without the layer cache
#   CHECK_QUICK=1    run QUICK_TESTS instead of the whole suite
#   CHECK_LOGDIR     where the build and test logs go   (default: a new temporary folder)
#   CA_BUNDLE        CA bundle pip uses in the build    (default: $PIP_CERT, $REQUESTS_CA_BUNDLE,
#                    $SSL_CERT_FILE, or Debian's /etc/ssl/certs/ca-certificates.crt)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
SUITE="${BASE_SUITE:-bookworm}"
BASE="localhost/dreamer-lsp-base:${SUITE}"
IMAGE="${IMAGE:-dreamer-lsp:cpu-check}"
PODMAN_CMD="${PODMAN:-podman --storage-driver vfs}"
read -r -a PODMAN <<< "$PODMAN_CMD"
BUILD_ISOLATION="${BUILD_ISOLATION:-chroot}"
QUICK_TESTS=(tests/test_config.py tests/test_numerics.py tests/test_envs.py
             tests/test_end_to_end.py -k 'not end_to_end or artifact')
LOGDIR="${CHECK_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/dreamer-lsp-check.XXXXXX")}"
mkdir -p "$LOGDIR"
VOLUME="dreamer-lsp-check-logs-$$"
STEP=0
RESULTS=()

step() { STEP=$((STEP + 1)); printf '\n==== [%d] %s ====\n' "$STEP" "$*"; }
ok() { printf '  OK: %s\n' "$*"; RESULTS+=("ok    $*"); }
fail() { printf '  FAILED: %s\n' "$*" >&2; RESULTS+=("FAIL  $*"); summary; exit 1; }
summary() {
  printf '\n==== summary ====\n'
  printf '  %s\n' "${RESULTS[@]}"
  printf '  logs: %s\n' "$LOGDIR"
}
cleanup() { "${PODMAN[@]}" volume rm -f "$VOLUME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step "tools: podman, debootstrap, runc"
[[ $EUID -eq 0 ]] || { echo "check.sh: run as root (debootstrap and rootful podman)" >&2; exit 1; }
missing=()
for pkg in podman debootstrap runc; do command -v "$pkg" >/dev/null || missing+=("$pkg"); done
if ((${#missing[@]})); then
  echo "  installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > "$LOGDIR/apt.log" 2>&1 \
    || { tail -n 20 "$LOGDIR/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
fi
ok "$(podman --version), $(debootstrap --version), $(runc --version | head -n 1)"

# ---------------------------------------------------------------------------------------------
step "base image $BASE (docker/build_base.sh)"
t0=$SECONDS
BASE_SUITE="$SUITE" BASE_IMAGE="${BASE#localhost/}" PODMAN="$PODMAN_CMD" docker/build_base.sh \
  || fail "docker/build_base.sh"
ok "base image $BASE ($((SECONDS - t0)) s)"

# ---------------------------------------------------------------------------------------------
step "podman run options that work here"
# Some sandboxes refuse what podman does by default: raising rlimits (no CAP_SYS_RESOURCE), or
# crun on hybrid cgroups v1/v2. Try the plain command first, then rlimits no higher than this
# shell's own, then the runc runtime with them.
hard_nofile="$(ulimit -Hn)"; [[ "$hard_nofile" == unlimited ]] && hard_nofile=1048576
hard_nproc="$(ulimit -Hu)"; [[ "$hard_nproc" == unlimited ]] && hard_nproc=32768
((hard_nproc > 32768)) && hard_nproc=32768
ULIMITS=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit "nproc=$hard_nproc:$hard_nproc")
RUN=()
for candidate in plain ulimits runc; do
  case "$candidate" in
    plain) try=("${PODMAN[@]}" run --rm) ;;
    ulimits) try=("${PODMAN[@]}" run --rm "${ULIMITS[@]}") ;;
    runc) try=("${PODMAN[@]}" --runtime runc run --rm "${ULIMITS[@]}") ;;
  esac
  if "${try[@]}" "$BASE" true > "$LOGDIR/probe-$candidate.log" 2>&1; then
    RUN=("${try[@]}"); break
  fi
  echo "  $candidate: $(tail -n 1 "$LOGDIR/probe-$candidate.log")"
done
((${#RUN[@]})) || fail "no way to run a container here (see $LOGDIR/probe-*.log)"
ok "podman run as: ${RUN[*]}"

# ---------------------------------------------------------------------------------------------
step "build $IMAGE (TF_VARIANT=cpu, BASE_IMAGE=$BASE)"
build=("${PODMAN[@]}" build --isolation "$BUILD_ISOLATION" --build-arg "BASE_IMAGE=$BASE"
       --build-arg TF_VARIANT=cpu -t "$IMAGE" -f Dockerfile)
[[ "$BUILD_ISOLATION" == chroot ]] || build+=("${ULIMITS[@]}")
# pip inside the build trusts only Debian's CA list; hand it this machine's bundle as a build
# secret so that a TLS-intercepting proxy trusted here is trusted there too (nothing is stored).
CA_BUNDLE="${CA_BUNDLE:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}}"
if [[ -f "$CA_BUNDLE" ]]; then
  build+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
  echo "  CA bundle for pip: $CA_BUNDLE (build secret ca_bundle)"
fi
[[ "${NO_CACHE:-0}" == 1 ]] && build+=(--no-cache)
echo "  ${build[*]} ."
echo "  (full output: $LOGDIR/build.log)"
t0=$SECONDS
set +e
"${build[@]}" . 2>&1 | tee "$LOGDIR/build.log" | grep --line-buffered -E '^(STEP|COMMIT|--> Using cache)' \
  | sed 's/^/  /'
status=${PIPESTATUS[0]}
set -e
BUILD_SECONDS=$((SECONDS - t0))
if ((status != 0)); then
  tail -n 40 "$LOGDIR/build.log" >&2
  fail "build (exit $status after ${BUILD_SECONDS} s)"
fi
size_bytes="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
SIZE="$(awk -v b="$size_bytes" 'BEGIN { printf "%.2f GB (%d bytes)", b / 1e9, b }')"
ok "build in ${BUILD_SECONDS} s; image $IMAGE is $SIZE"
"${RUN[@]}" --entrypoint sh "$IMAGE" -c \
  'echo "  user: $(id)"; echo "  workdir: $(pwd)"; echo "  $(python --version), MUJOCO_GL=$MUJOCO_GL";
   pip list 2>/dev/null | grep -iE "^(tensorflow|mujoco|dm.control|numpy|pytest) " | sed "s/^/  /"' \
  || fail "inspect the image"

# ---------------------------------------------------------------------------------------------
step "entrypoint: --help (image user, then an arbitrary uid)"
"${RUN[@]}" "$IMAGE" --help > "$LOGDIR/help.log" 2>&1 || { cat "$LOGDIR/help.log" >&2; fail "--help"; }
grep -q -- '--configs' "$LOGDIR/help.log" || fail "--help does not mention --configs"
sed -n '1,5p' "$LOGDIR/help.log" | sed 's/^/  | /'
"${RUN[@]}" --user 4321:4321 "$IMAGE" --help > "$LOGDIR/help-uid.log" 2>&1 \
  || { cat "$LOGDIR/help-uid.log" >&2; fail "--help as uid 4321"; }
ok "--help through the entrypoint, as the image user and as uid 4321"

# ---------------------------------------------------------------------------------------------
step "headless MuJoCo rendering: EGL (default) and OSMesa (-e MUJOCO_GL=osmesa)"
render='import os
from dm_control import suite
env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
env.reset()
img = env.physics.render(64, 64, camera_id=0)
assert img.shape == (64, 64, 3) and img.std() > 1, (img.shape, img.std())
print("  MUJOCO_GL=%s: rendered %s, mean %.1f" % (os.environ["MUJOCO_GL"], img.shape, img.mean()))'
"${RUN[@]}" --entrypoint python "$IMAGE" -c "$render" || fail "render with EGL"
"${RUN[@]}" -e MUJOCO_GL=osmesa --entrypoint python "$IMAGE" -c "$render" || fail "render with OSMesa"
ok "EGL and OSMesa render"

# ---------------------------------------------------------------------------------------------
step "entrypoint: short LSP training run (debug block) into the /logs volume"
"${PODMAN[@]}" volume create "$VOLUME" >/dev/null
t0=$SECONDS
"${RUN[@]}" -v "$VOLUME:/logs" "$IMAGE" \
  --configs debug dmc_proprio lsp --logdir /logs/smoke \
  > "$LOGDIR/train.log" 2>&1 || { tail -n 30 "$LOGDIR/train.log" >&2; fail "training run"; }
tail -n 3 "$LOGDIR/train.log" | sed 's/^/  | /'
"${RUN[@]}" -v "$VOLUME:/logs" --entrypoint sh "$IMAGE" -c '
  cd /logs/smoke && ls -l | sed "s/^/  /" &&
  test -s config.yaml && test -s metrics.jsonl && test -f checkpoint/latest &&
  ls train_episodes/*.npz >/dev/null && ls videos/eval_*.mp4 >/dev/null && ls tensorboard/events.out.tfevents.* >/dev/null' \
  || fail "logdir artifacts of the training run"
ok "training run through the entrypoint in $((SECONDS - t0)) s: config, metrics, tensorboard, episodes, checkpoint, video"

# ---------------------------------------------------------------------------------------------
if (($#)); then
  PYTEST_ARGS=("$@")
elif [[ "${CHECK_QUICK:-0}" == 1 ]]; then
  PYTEST_ARGS=("${QUICK_TESTS[@]}")
else
  PYTEST_ARGS=()
fi
step "pytest in the image, as its non-root user: pytest -q ${PYTEST_ARGS[*]:-(whole suite)}"
echo "  (full output: $LOGDIR/pytest.log)"
t0=$SECONDS
set +e
"${RUN[@]}" --entrypoint python "$IMAGE" -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}" \
  > "$LOGDIR/pytest.log" 2>&1
status=$?
set -e
TEST_SECONDS=$((SECONDS - t0))
tail -n 15 "$LOGDIR/pytest.log" | sed 's/^/  | /'
line="$(grep -E '(passed|failed|error|no tests ran)' "$LOGDIR/pytest.log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')"
((status == 0)) || fail "pytest (exit $status): $line"
ok "pytest in ${TEST_SECONDS} s: $line"

summary
echo "  build ${BUILD_SECONDS} s; image $SIZE"
