#!/usr/bin/env bash
# Build drug_nbdev's images: docker where a daemon answers, else daemonless with buildah (Debian's podman/buildah).
#   deploy/image.sh [api|form|all]          (default all)   tags drug-nbdev-api:latest and drug-nbdev-form:latest
# Without a daemon nothing is pulled: the base is a Debian bookworm minbase made by debootstrap and imported once
# as localhost/drug-nbdev-base:bookworm (kept in podman's storage and reused by later builds).
# Environment: IMAGE_PREFIX (default drug-nbdev), BASE_IMAGE (skip debootstrap; use this base instead).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${1:-all}; [ "$targets" = all ] && targets="api form"
prefix=${IMAGE_PREFIX:-drug-nbdev}
ca=/etc/ssl/certs/ca-certificates.crt

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  for t in $targets; do docker build --target "$t" -t "$prefix-$t:latest" .; done
  exit 0
fi

for exe in buildah podman; do
  command -v $exe >/dev/null || { echo "image: $exe is missing: apt-get install podman buildah runc debootstrap (make test-deps)" >&2; exit 2; }
done
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
base=${BASE_IMAGE:-localhost/drug-nbdev-base:bookworm}
if [ -z "${BASE_IMAGE:-}" ] && ! podman image exists "$base"; then
  command -v debootstrap >/dev/null || { echo "image: debootstrap is missing (make test-deps)" >&2; exit 2; }
  dir=$(mktemp -d /var/tmp/drug-nbdev-base.XXXXXX)
  trap 'rm -rf "$dir"' EXIT
  echo "image: making the base $base with debootstrap (once; a few minutes)" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" http://deb.debian.org/debian >/dev/null
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi
# pip inside the build reaches the package index only with this machine's CA bundle: mounted read-only in place
mount=(); [ -f "$ca" ] && mount=(-v "$ca:$ca:ro")
for t in $targets; do
  # docker format: the OCI image format has no HEALTHCHECK
  buildah bud --isolation chroot --network host --layers --format docker "${mount[@]}" \
    --build-arg BASE_IMAGE="$base" --target "$t" -t "$prefix-$t:latest" .
done
