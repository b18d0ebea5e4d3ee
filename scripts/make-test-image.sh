#!/usr/bin/env bash
# make-test-image.sh OUT_DIR [NAME]
#
# Builds, without any network access, a small but real multi-layer container
# image for Berth's end-to-end tests:
#   OUT_DIR/oci                OCI image layout (built with umoci), tag = NAME's tag
#   OUT_DIR/image.docker.tar   docker-archive of the same image, tagged NAME
#                              (for `docker load` / `podman load`)
#
# NAME defaults to berth-test/sample:latest. Output is deterministic: the same
# NAME gives the same layer, config and manifest digests on every run and on
# every machine with the same umoci/skopeo versions (fixed timestamps, fixed
# pseudo-random content), so tests may compare digests across runs.
#
# Last lines of stdout are machine-readable KEY=VALUE pairs:
#   OCI_LAYOUT=... OCI_TAG=... OCI_REF=oci:<layout>:<tag> DOCKER_ARCHIVE=... IMAGE_NAME=...
#   MANIFEST_DIGEST=... CONFIG_DIGEST=... LAYER_DIGESTS=<space-separated>
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [NAME]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
out=$1
name=${2:-berth-test/sample:latest}

# Tag part of NAME (after the last ':' that follows the last '/'), default latest.
last=${name##*/}
if [[ $last == *:* ]]; then tag=${last##*:}; else tag=latest; name="$name:latest"; fi

for tool in umoci skopeo openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (run scripts/install-test-deps.sh)" >&2; exit 1; }
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
layout=$out/oci
bundle=$out/.bundle
archive=$out/image.docker.tar

# Start from scratch so the result only depends on the inputs.
rm -rf "$layout" "$bundle" "$archive"

# Everything gets this timestamp so that layer tars and configs are reproducible.
epoch='2024-01-01T00:00:00Z'
touch_stamp='202401010000.00'

# Deterministic "random" bytes: AES-CTR keystream over zeros, keyed by a seed.
# Incompressible, so blob sizes are realistic for upload tests.
pseudo_random() { # SEED BYTES FILE
  local key
  key=$(printf '%s' "$1" | openssl dgst -sha256 -r | cut -c1-32)
  head -c "$2" /dev/zero \
    | openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt \
    > "$3"
}

# Pin mode and mtime of everything in the rootfs (umask and "now" differ per run).
normalize() {
  find "$bundle/rootfs" -exec touch -h -t "$touch_stamp" {} +
}

repack() { # CREATED_BY
  normalize
  # --refresh-bundle: the next repack diffs against this layer, not the base,
  # so each call produces exactly one new layer with only the new files.
  umoci repack --refresh-bundle --image "$layout:$tag" \
    --history.created "$epoch" --history.author berth-tests \
    --history.created_by "$1" "$bundle"
}

umask 022
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
# Pin the creation time and platform before the first layer.
umoci config --image "$layout:$tag" --no-history \
  --created "$epoch" --author berth-tests --os linux --architecture amd64
# As root, unpack with a plain ownership mapping; otherwise (e.g. a developer
# running it unprivileged) use rootless mode.
if [ "$(id -u)" = 0 ]; then
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
else
  umoci unpack --rootless --image "$layout:$tag" "$bundle" >/dev/null
fi
root=$bundle/rootfs

# Layer 1: a directory tree, a small script, and ~1 MiB of data.
mkdir -p "$root/app/bin" "$root/app/data" "$root/etc"
cat > "$root/app/bin/hello.sh" <<'EOF'
#!/bin/sh
# layer 1 script
echo "hello from berth test image"
EOF
chmod 0755 "$root/app/bin/hello.sh"
echo "berth-test" > "$root/etc/hostname.berth"
pseudo_random layer1-big 1048576 "$root/app/data/big.bin"
repack "layer 1: app skeleton + 1MiB data"

# Layer 2: a few small files (KB range) and a second script.
for i in 1 2 3 4; do
  pseudo_random "layer2-$i" $((i * 4096)) "$root/app/data/small-$i.bin"
done
cat > "$root/app/bin/list.sh" <<'EOF'
#!/bin/sh
# layer 2 script
ls -l /app/data
EOF
chmod 0755 "$root/app/bin/list.sh"
repack "layer 2: small data files"

# Layer 3: modify a file from layer 1 and delete one from layer 2 (whiteout),
# so clients that apply layers see real overlay semantics.
echo "berth-test-v3" > "$root/etc/hostname.berth"
rm "$root/app/data/small-4.bin"
pseudo_random layer3 65536 "$root/app/data/mid.bin"
cat > "$root/app/bin/entry.sh" <<'EOF'
#!/bin/sh
# layer 3 script (entrypoint)
exec /app/bin/hello.sh "$@"
EOF
chmod 0755 "$root/app/bin/entry.sh"
repack "layer 3: modify, whiteout, entrypoint"

# Runtime config: entrypoint, env, labels, workdir.
umoci config --image "$layout:$tag" --no-history --created "$epoch" \
  --config.entrypoint /app/bin/entry.sh \
  --config.cmd world \
  --config.env BERTH_TEST=1 --config.env PATH=/app/bin:/usr/bin:/bin \
  --config.workingdir /app \
  --config.label org.opencontainers.image.title=berth-test-sample \
  --config.label org.opencontainers.image.source=berth-tests \
  --config.label berth.test.layers=3

# umoci keeps unreferenced intermediate blobs; drop them so the layout only
# contains what the final manifest references.
umoci gc --layout "$layout"
rm -rf "$bundle"

# docker-archive (docker save format) for `docker load` / `podman load`.
# skopeo recompresses nothing here: docker-archive stores uncompressed layers.
skopeo copy --quiet "oci:$layout:$tag" "docker-archive:$archive:$name"

# Report digests from the layout itself (index.json -> manifest -> config/layers).
manifest_digest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$layout/index.json" | head -n1)
manifest_file=$layout/blobs/sha256/${manifest_digest#sha256:}
config_digest=$(grep -o '"config":{[^}]*}' "$manifest_file" | grep -o 'sha256:[0-9a-f]*')
layer_digests=$(grep -o '"layers":\[.*\]' "$manifest_file" | grep -o 'sha256:[0-9a-f]*' | tr '\n' ' ' | sed 's/ $//')
nlayers=$(echo "$layer_digests" | wc -w)
[ "$nlayers" -ge 3 ] || { echo "expected >= 3 layers, got $nlayers" >&2; exit 1; }

echo "built $nlayers-layer image $name"
echo "OCI_LAYOUT=$layout"
echo "OCI_TAG=$tag"
echo "OCI_REF=oci:$layout:$tag"
echo "DOCKER_ARCHIVE=$archive"
echo "IMAGE_NAME=$name"
echo "MANIFEST_DIGEST=$manifest_digest"
echo "CONFIG_DIGEST=$config_digest"
echo "LAYER_DIGESTS=$layer_digests"
