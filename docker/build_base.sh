#!/usr/bin/env bash
# Build a minimal Debian base image locally with debootstrap and import it into podman.
#
# Usage (as root): docker/build_base.sh [--force]
#
# For machines that cannot pull images from a registry but can reach a Debian mirror. The
# result, localhost/dreamer-lsp-base:bookworm, stands in for the public `debian:bookworm-slim`
# that the Dockerfile uses by default:
#
#   podman --storage-driver vfs build --build-arg BASE_IMAGE=localhost/dreamer-lsp-base:bookworm ...
#
# The mirror is read from this machine's apt configuration (/etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list|*.sources): the first enabled `deb` entry for the suite. The
# image's own apt sources are the machine's entries for <suite>, <suite>-updates and
# <suite>-security, so `apt-get install` in the Dockerfile uses the same mirrors.
# Idempotent: does nothing when the image already exists (--force rebuilds it).
#
# Environment (all optional):
#   BASE_SUITE    Debian suite                      (default: bookworm)
#   BASE_IMAGE    image name to create              (default: dreamer-lsp-base:<suite>)
#   DEBIAN_MIRROR override the mirror read from apt's configuration
#   PODMAN        podman command line               (default: "podman --storage-driver vfs")
set -euo pipefail

SUITE="${BASE_SUITE:-bookworm}"
IMAGE="${BASE_IMAGE:-dreamer-lsp-base:${SUITE}}"
read -r -a PODMAN <<< "${PODMAN:-podman --storage-driver vfs}"
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_base.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[build_base] %s\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
  echo "build_base.sh: debootstrap needs root" >&2
  exit 1
fi
for tool in debootstrap podman tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "build_base.sh: '$tool' not found (apt-get install $tool)" >&2
    exit 1
  fi
done

if "${PODMAN[@]}" image exists "$IMAGE" && [[ $FORCE -eq 0 ]]; then
  log "image $IMAGE already exists; nothing to do (--force rebuilds it)"
  exit 0
fi

# Print "URI SUITE COMPONENTS..." for every enabled deb entry of apt's configuration, in the
# order apt reads it (one-line .list format and deb822 .sources format).
apt_entries() {
  local files=()
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  local f
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && files+=("$f")
  done
  for f in "${files[@]}"; do
    case "$f" in
      *.sources)
        awk '
          function flush(   i, j, nu, ns, u, s) {
            if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false)$/) {
              nu = split(uris, u, " "); ns = split(suites, s, " ")
              for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j], comps
            }
            types = uris = suites = comps = enabled = ""
          }
          /^[ \t]*#/ { next }
          /^[ \t]*$/ { flush(); next }
          {
            key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
            if (key == "types") types = $0
            else if (key == "uris") uris = $0
            else if (key == "suites") suites = $0
            else if (key == "components") comps = $0
            else if (key == "enabled") enabled = tolower($0)
          }
          END { flush() }
        ' "$f" ;;
      *)
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
          | awk '$1 == "deb" && NF >= 3 { $1 = ""; sub(/^ +/, ""); print }' ;;
    esac
  done
}

ENTRIES="$(apt_entries)"
MIRROR="${DEBIAN_MIRROR:-$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<< "$ENTRIES")}"
if [[ -z "$MIRROR" ]]; then
  echo "build_base.sh: no enabled 'deb' entry for suite '$SUITE' in /etc/apt/sources.list(.d);" \
       "set DEBIAN_MIRROR" >&2
  exit 1
fi
# The image's apt sources: the machine's entries for the suite, its updates and its security suite.
SOURCES="$(awk -v s="$SUITE" '$2 == s || $2 == s "-updates" || $2 == s "-security" {
  comps = $0; sub(/^[^ ]+ +[^ ]+ */, "", comps); if (comps == "") comps = "main"
  print "deb " $1 " " $2 " " comps }' <<< "$ENTRIES" | awk '!seen[$0]++')"
[[ -n "$SOURCES" ]] || SOURCES="deb $MIRROR $SUITE main"

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/dreamer-lsp-rootfs.XXXXXX")"
chmod 0755 "$ROOTFS"  # becomes the image's "/": mktemp's 0700 would lock out non-root users
cleanup() {
  # debootstrap may leave /proc or /sys mounted inside the tree when it fails.
  local m
  awk -v d="$ROOTFS" 'index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR into $ROOTFS"
start=$SECONDS
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" > "$ROOTFS.log" 2>&1 || {
  tail -n 30 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"
  echo "build_base.sh: debootstrap failed" >&2; exit 1
}
rm -f "$ROOTFS.log"
log "debootstrap finished in $((SECONDS - start)) s"

# apt sources of the image; no caches, package lists, or host identity in the image.
printf '%s\n' "$SOURCES" > "$ROOTFS/etc/apt/sources.list"
log "apt sources of the image:"; sed 's/^/    /' "$ROOTFS/etc/apt/sources.list"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* \
       "$ROOTFS"/root/.bash_history
# Keep lists/partial (owned by _apt) and the log folders; drop their contents.
find "$ROOTFS/var/lib/apt/lists" -maxdepth 1 -type f -delete
find "$ROOTFS/var/log" -type f -delete
: > "$ROOTFS/etc/resolv.conf"
: > "$ROOTFS/etc/hostname"

log "importing into podman as $IMAGE"
"${PODMAN[@]}" image rm -f "$IMAGE" >/dev/null 2>&1 || true
tar --numeric-owner -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE $MIRROR" \
  - "$IMAGE" >/dev/null
log "done: $("${PODMAN[@]}" image ls --filter reference="$IMAGE" \
  --format '{{.Repository}}:{{.Tag}} {{.Size}}')"
