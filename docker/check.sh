#!/usr/bin/env bash
# Verify the Dockerfile end to end on a machine with no Docker daemon and no registry access,
# using podman (daemonless, vfs storage) and a Debian base image built locally by debootstrap.
#
# Usage (as root, from any directory):
#   docker/check.sh                       # build, smoke tests, then the whole test suite
#   docker/check.sh tests/test_config.py  # arguments go to pytest instead of the whole suite
#   CHECK_QUICK=1 docker/check.sh         # a quick subset of the suite (see QUICK_TESTS below)
#   TF_VARIANT=gpu CHECK_QUICK=1 docker/check.sh   # the GPU image (CUDA wheels), on any machine
#
# Steps: install podman, debootstrap and runc if missing (apt-get); docker/build_base.sh; find
# podman run options that work on this machine; build the Dockerfile with
# BASE_IMAGE=localhost/dreamer-lsp-base:bookworm and TF_VARIANT (cpu by default); then, in the
# image: the entrypoint's --help, TensorFlow's devices and, for gpu, its CUDA libraries (with no
# GPU here it must say so without an error line), a MuJoCo render with EGL and with OSMesa
# (-e MUJOCO_GL=osmesa), a short LSP training run in float32 through the entrypoint as an
# arbitrary uid into a bind-mounted /logs (as the README's `docker run --user ... -v
# ...:/logs`), and pytest as the image's non-root user.
# Exit code 0 only if every step passed. The image is kept (named $IMAGE), so a rerun uses the
# layer cache; add NO_CACHE=1 for a clean build. Disk: vfs keeps every layer as a full copy
# (15-20 GB under /var/lib/containers after a CPU build, about twice that for gpu), and every
# `podman run` copies the image once more; `podman --storage-driver vfs image prune -f` frees
# the intermediate layers, and with them the layer cache.
#
# Environment (all optional):
#   TF_VARIANT       cpu or gpu (CUDA wheels)           (default: cpu)
#   IMAGE            tag to build                       (default: dreamer-lsp:<variant>-check)
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
VARIANT="${TF_VARIANT:-cpu}"
if [[ "$VARIANT" != cpu && "$VARIANT" != gpu ]]; then
  echo "check.sh: TF_VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 2
fi
IMAGE="${IMAGE:-dreamer-lsp:${VARIANT}-check}"
PODMAN_CMD="${PODMAN:-podman --storage-driver vfs}"
read -r -a PODMAN <<< "$PODMAN_CMD"
BUILD_ISOLATION="${BUILD_ISOLATION:-chroot}"
QUICK_TESTS=(tests/test_config.py tests/test_numerics.py tests/test_envs.py
             tests/test_end_to_end.py -k 'not end_to_end or artifact')
LOGDIR="${CHECK_LOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/dreamer-lsp-check.XXXXXX")}"
mkdir -p "$LOGDIR"
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
step "build $IMAGE (TF_VARIANT=$VARIANT, BASE_IMAGE=$BASE)"
build=("${PODMAN[@]}" build --isolation "$BUILD_ISOLATION" --build-arg "BASE_IMAGE=$BASE"
       --build-arg "TF_VARIANT=$VARIANT" -t "$IMAGE" -f Dockerfile)
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
"${build[@]}" . 2>&1 | tee "$LOGDIR/build.log" \
  | grep --line-buffered -E '^(STEP|COMMIT|--> Using cache)' | sed -u 's/^\(.\{110\}\).*/\1 .../; s/^/  /'
status=${PIPESTATUS[0]}
set -e
BUILD_SECONDS=$((SECONDS - t0))
if ((status != 0)); then
  tail -n 40 "$LOGDIR/build.log" >&2
  fail "build (exit $status after ${BUILD_SECONDS} s)"
fi
size_bytes="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
SIZE="$(awk -v b="$size_bytes" 'BEGIN { printf "%.2f GB (%.0f bytes)", b / 1e9, b }')"
ok "build in ${BUILD_SECONDS} s; image $IMAGE is $SIZE"

# ---------------------------------------------------------------------------------------------
step "entrypoint: --help"
"${RUN[@]}" "$IMAGE" --help > "$LOGDIR/help.log" 2>&1 || { cat "$LOGDIR/help.log" >&2; fail "--help"; }
grep -q -- '--configs' "$LOGDIR/help.log" || fail "--help does not mention --configs"
sed -n '1,3p' "$LOGDIR/help.log" | cut -c1-110 | sed 's/^/  | /'
ok "--help through the entrypoint (tini -- python -m dreamer_lsp)"

# ---------------------------------------------------------------------------------------------
step "TensorFlow in the image: devices$([[ $VARIANT == gpu ]] && echo ', CUDA libraries')"
# The project's import (dreamer_lsp._tf) as the program does it; stderr must hold no error line:
# without a GPU, TensorFlow's own "failed call to cuInit" is expected noise and must not show.
# shellcheck disable=SC2016  # expanded by Python
probe='import glob, os, sys
from dreamer_lsp._tf import GPUS, tf
info = tf.sysconfig.get_build_info()
print("  TensorFlow %s, built with CUDA %s, cuDNN %s; GPUs: %d"
      % (tf.__version__, info.get("cuda_version"), info.get("cudnn_version"), len(GPUS)))
if sys.argv[1] == "gpu":
    import nvidia
    root = os.path.dirname(list(nvidia.__path__)[0])
    for name in ("libcudart.so.12", "libcublas.so.12", "libcudnn.so.9", "libcufft.so.11",
                 "libcusolver.so.11", "libcusparse.so.12", "libnccl.so.2"):
        found = glob.glob(os.path.join(root, "nvidia", "*", "lib", name))
        assert found, name + " is missing"
        print("  " + os.path.relpath(found[0], root))
    assert info.get("is_cuda_build"), "not a CUDA build of TensorFlow"
if not GPUS:
    print("  no GPU: TensorFlow runs on the CPU")'
"${RUN[@]}" --entrypoint python "$IMAGE" -c "$probe" "$VARIANT" \
  > "$LOGDIR/tensorflow.log" 2> "$LOGDIR/tensorflow.err" \
  || { cat "$LOGDIR/tensorflow.log" "$LOGDIR/tensorflow.err" >&2; fail "TensorFlow in the image"; }
cat "$LOGDIR/tensorflow.log"
if grep -E '^(E[0-9]{4} |F[0-9]{4} |Traceback)' "$LOGDIR/tensorflow.err" >&2; then
  fail "TensorFlow printed error lines while starting (above)"
fi
stderr_lines="$(wc -l < "$LOGDIR/tensorflow.err")"
ok "TensorFlow imports$([[ $VARIANT == gpu ]] && echo ' with its CUDA libraries');" \
   "no error line ($stderr_lines stderr lines)"

# ---------------------------------------------------------------------------------------------
step "the image's user and packages; headless MuJoCo: EGL (default), OSMesa (-e MUJOCO_GL=osmesa)"
# os._exit: with OSMesa, dm_control's own exit hooks print spurious tracebacks about its render
# thread being shut down already (harmless; the render above is what is checked).
render='import os, sys
from dm_control import suite
env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})
env.reset()
img = env.physics.render(64, 64, camera_id=0)
env.close()
assert img.shape == (64, 64, 3) and img.std() > 1, (img.shape, img.std())
print("  MUJOCO_GL=%s: rendered %s, mean %.1f" % (os.environ["MUJOCO_GL"], img.shape, img.mean()))
sys.stdout.flush()
os._exit(0)'
# shellcheck disable=SC2016  # expanded by the container's shell
"${RUN[@]}" --entrypoint sh "$IMAGE" -c '
  echo "  user: $(id)"; echo "  workdir: $(pwd)"; echo "  $(python --version)"
  pip list 2>/dev/null | grep -iE "^(tensorflow|mujoco|dm.control|numpy|pytest) " | sed "s/^/  /"
  python -c "$0"' "$render" || fail "EGL render (or inspecting the image)"
"${RUN[@]}" -e MUJOCO_GL=osmesa --entrypoint python "$IMAGE" -c "$render" || fail "render with OSMesa"
ok "EGL and OSMesa render"

# ---------------------------------------------------------------------------------------------
step "entrypoint: short LSP run (debug block, float32), --user 4321:4321, host folder on /logs"
runs="$LOGDIR/runs"
rm -rf "$runs"; mkdir -p "$runs"; chown 4321:4321 "$runs"
t0=$SECONDS
"${RUN[@]}" --user 4321:4321 -v "$runs:/logs" "$IMAGE" \
  --configs debug dmc_proprio lsp --logdir /logs/smoke \
  > "$LOGDIR/train.log" 2>&1 || { tail -n 30 "$LOGDIR/train.log" >&2; fail "training run"; }
head -n 4 "$LOGDIR/train.log" | cut -c1-110 | sed 's/^/  | /'
echo '  | ...'
tail -n 3 "$LOGDIR/train.log" | cut -c1-110 | sed 's/^/  | /'
if grep -E 'cuInit|^E[0-9]{4} |Traceback' "$LOGDIR/train.log" >&2; then
  fail "error lines in the training run's output (above)"
fi
# shellcheck disable=SC2012  # a listing for the reader
( cd "$runs/smoke" && ls -ln | sed 's/^/  /' &&
  test -s config.yaml && test -s metrics.jsonl && test -f checkpoint/latest &&
  compgen -G 'train_episodes/*.npz' >/dev/null && compgen -G 'videos/eval_*.mp4' >/dev/null &&
  compgen -G 'tensorboard/events.out.tfevents.*' >/dev/null ) \
  || fail "logdir artifacts of the training run (in $runs/smoke)"
ok "training run in $((SECONDS - t0)) s: config, metrics, tensorboard, episodes, checkpoint, video"

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
# The published scores live beside the repository (../shared/data, see tools/scores.py); with
# the code at /app they are looked for at /shared/data, so mount them there when present.
MOUNTS=()
if [[ -d "$ROOT/../shared/data" ]]; then
  MOUNTS=(-v "$(cd "$ROOT/../shared/data" && pwd):/shared/data:ro")
  echo "  mounting ../shared/data read-only at /shared/data"
fi
t0=$SECONDS
set +e
"${RUN[@]}" "${MOUNTS[@]}" --entrypoint python "$IMAGE" -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}" \
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
