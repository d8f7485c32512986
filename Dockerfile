# dreamer_lsp: Latent Skill Planning on Dreamer (TensorFlow 2.21), MuJoCo rendered headless.
#
# Base: debian:bookworm-slim (Docker Hub "debian" official image), whose python3 is 3.11, the
# version the project pins. No CUDA base image is needed: with TF_VARIANT=gpu the CUDA and cuDNN
# libraries come from PyPI as wheels (tensorflow[and-cuda], requirements-gpu.txt). The host needs
# only the NVIDIA driver and the NVIDIA Container Toolkit (for `--gpus`).
#
# Build:
#   docker build -t dreamer-lsp .                                  # GPU build (default)
#   docker build --build-arg TF_VARIANT=cpu -t dreamer-lsp:cpu .   # CPU only, no CUDA wheels
#
# Run (the entrypoint is `python -m dreamer_lsp`; arguments are the usual flags; logdirs go
# under the /logs volume; --user makes the files in ./runs yours):
#   mkdir -p runs
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD/runs:/logs" dreamer-lsp \
#     --configs dmc_proprio lsp --task dmc_walker_walk --logdir /logs/walker
#   docker run --rm dreamer-lsp --help                             # every key and block
#   docker run --rm -e MUJOCO_GL=osmesa ...                        # OSMesa instead of EGL
#   docker run --rm --entrypoint python dreamer-lsp -m pytest -q -p no:cacheprovider   # tests
#   docker run ... --entrypoint python dreamer-lsp scripts/relabel_rewards.py ...      # scripts
# Stopping: `docker stop -t 120 NAME` gives the run time to write its final checkpoint (tini
# forwards SIGTERM; a killed run resumes from its last periodic checkpoint anyway).
#
# Behind a TLS-intercepting proxy, hand pip the CA bundle that trusts it as a build secret
# (BuildKit, Docker's default builder since 23.0; used by the pip steps, never stored in the image):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t dreamer-lsp .
#
# Without a registry (this is what docker/check.sh does, with podman):
#   docker/build_base.sh        # debootstrap a local Debian bookworm base image
#   podman build --build-arg BASE_IMAGE=localhost/dreamer-lsp-base:bookworm \
#     --build-arg TF_VARIANT=cpu -t dreamer-lsp:cpu .
#
# Build arguments:
#   BASE_IMAGE   a Debian bookworm (or other Debian/Ubuntu with python3 = 3.11) image
#   TF_VARIANT   gpu (default): requirements.txt + requirements-gpu.txt; cpu: requirements.txt
#   INSTALL_DEV  1 (default): also requirements-dev.txt (pytest, ruff) so the tests run in the
#                image; 0 leaves them out
#   USER_UID     uid of the non-root user `dreamer` (default 1000)

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG TF_VARIANT=gpu
ARG INSTALL_DEV=1
ARG USER_UID=1000
ARG DEBIAN_FRONTEND=noninteractive

# Metadata first: none of it depends on the layers below, and on some builders (buildah with
# vfs storage) every instruction after the large dependency layer costs a full copy of it.
# Caches (matplotlib, Mesa's shader cache) go to /tmp so that any `--user UID` can write them.
# NVIDIA_DRIVER_CAPABILITIES: CUDA only; MuJoCo renders with Mesa (EGL or OSMesa) on the CPU.
LABEL org.opencontainers.image.title="dreamer_lsp" \
      org.opencontainers.image.description="Latent Skill Planning (ICLR 2021) on a TF2 Dreamer" \
      dreamer_lsp.tf_variant="${TF_VARIANT}"
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUJOCO_GL=egl \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENTRYPOINT ["tini", "--", "python", "-m", "dreamer_lsp"]
CMD ["--help"]
WORKDIR /app

# System packages: Python 3.11 and venv; Mesa for headless MuJoCo (EGL: libegl1 with Mesa's
# vendor library and the software rasteriser in libgl1-mesa-dri; OSMesa: libosmesa6); tini as
# PID 1 so signals reach the trainer and exited environment workers are reaped. Videos use the
# ffmpeg binary shipped in the imageio-ffmpeg wheel. Then the venv, the user and /logs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates tini \
      libegl1 libegl-mesa0 libgl1 libgles2 libgl1-mesa-dri libosmesa6 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
 && python3 -m venv /opt/venv \
 && useradd --create-home --uid "${USER_UID}" --shell /bin/bash dreamer \
 && mkdir -p /logs \
 && chown dreamer:dreamer /logs
VOLUME ["/logs"]

# Pinned dependencies before the code: this layer is rebuilt only when a lock file changes.
# The optional build secret ca_bundle is a CA bundle for pip (see the header).
COPY requirements.txt requirements-dev.txt requirements-gpu.txt ./
RUN --mount=type=secret,id=ca_bundle,required=false \
    set -eu; \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    case "${TF_VARIANT}" in \
      gpu) extra="-r requirements-gpu.txt" ;; \
      cpu) extra="" ;; \
      *) echo "TF_VARIANT must be gpu or cpu, not '${TF_VARIANT}'" >&2; exit 1 ;; \
    esac; \
    if [ "${INSTALL_DEV}" = 1 ]; then lock=requirements-dev.txt; else lock=requirements.txt; fi; \
    pip install -r "${lock}" ${extra}; \
    pip check

# The code, root-owned and read-only for the user. configs.yaml sits at the repository root and
# dreamer_lsp/config.py reads it as <package>/../configs.yaml, so the package is installed
# editable from this source tree (the build backend, setuptools, comes from PyPI).
COPY . .
RUN --mount=type=secret,id=ca_bundle,required=false \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-deps -e . \
 && python -m compileall -q dreamer_lsp scripts tools tests \
 && python -m dreamer_lsp --help > /dev/null

USER dreamer
