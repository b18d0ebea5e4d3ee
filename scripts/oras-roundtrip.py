#!/usr/bin/env python3
"""oras-roundtrip.py HOST:PORT REPO:TAG FILE [--artifact-type T] [--v11] [--chunked]

Pushes FILE as an OCI artifact to http://HOST:PORT/REPO:TAG with the
`oras` Python SDK (PyPI package "oras"), pulls it back into a temporary
directory and compares the bytes. Exit code 0 only if the round trip is
byte-exact and the manifest carries the expected media types.

Run it with the venv made by scripts/install-test-deps.sh:
    target/venv/bin/python scripts/oras-roundtrip.py 127.0.0.1:5000 test/art:v1 some.bin

Artifact type:
  default  the classic ORAS (image-spec 1.0) way: config.mediaType = T,
           config blob = "{}"; accepted by distribution 2.8.
  --v11    image-spec 1.1 way: manifest.artifactType = T and the empty
           config descriptor (application/vnd.oci.empty.v1+json).
Env: BERTH_ORAS_RETRY_SLEEP caps oras-py's retry sleeps (default 0.2 s).
Plain http is used (insecure=True); --user/--password log in with basic auth
(auth_backend="basic"); without them no auth (the SDK's default "token" auth
backend is only exercised on a 401; use auth_backend="basic" for basic auth).
"""
import argparse
import filecmp
import hashlib
import os
import shutil
import sys
import tempfile

import requests

import oras.client
import oras.decorator
import oras.provider


class _FastRetryTime:
    """oras-py retries a failed request 5 times sleeping 2+3**n s (~2 min in
    all, e.g. on every HTTP 500). Tests want failures fast: cap each sleep."""

    def __init__(self, cap):
        self.cap = cap

    def sleep(self, seconds):
        import time
        time.sleep(min(seconds, self.cap))


oras.decorator.time = _FastRetryTime(float(os.environ.get("BERTH_ORAS_RETRY_SLEEP", "0.2")))

LAYER_MEDIA_TYPE = "application/vnd.berth.test.file.v1"
DEFAULT_ARTIFACT_TYPE = "application/vnd.berth.test.artifact.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


class V11Client(oras.provider.Registry):
    """Injects image-spec 1.1 fields into the manifest oras-py builds
    (oras-py 0.2.x has no artifactType parameter)."""

    artifact_type = None

    def upload_manifest(self, manifest, container):
        manifest["artifactType"] = self.artifact_type
        manifest["config"]["mediaType"] = EMPTY_MEDIA_TYPE
        return super().upload_manifest(manifest, container)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hostport", help="registry HOST:PORT (plain http)")
    ap.add_argument("ref", help="REPO:TAG, e.g. test/artifact:v1")
    ap.add_argument("file", help="file to push")
    ap.add_argument("--artifact-type", default=DEFAULT_ARTIFACT_TYPE)
    ap.add_argument("--v11", action="store_true",
                    help="use manifest.artifactType + empty config (image-spec 1.1)")
    ap.add_argument("--user", help="basic-auth user (with --password)")
    ap.add_argument("--password", help="basic-auth password")
    ap.add_argument("--chunked", action="store_true",
                    help="upload blobs with POST/PATCH/PUT instead of POST/PUT")
    args = ap.parse_args()

    if not os.path.isfile(args.file):
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2

    # oras-py retries failed requests for ~2 minutes; fail fast instead
    # when nothing is listening.
    try:
        r = requests.get(f"http://{args.hostport}/v2/", timeout=5)
    except requests.RequestException as e:
        print(f"registry {args.hostport} not reachable: {e}", file=sys.stderr)
        return 1
    print(f"GET /v2/ -> {r.status_code}")

    # With credentials, basic auth (oras-py's token backend is for token servers).
    auth = {"auth_backend": "basic"} if args.user else {}
    if args.v11:
        client = V11Client(hostname=args.hostport, insecure=True, **auth)
        client.artifact_type = args.artifact_type
    else:
        client = oras.client.OrasClient(hostname=args.hostport, insecure=True, **auth)
    if args.user:
        # Registry.login() also logs a docker daemon in; only the credentials are wanted.
        client.auth.set_basic_auth(args.user, args.password or "")
    target = f"{args.hostport}/{args.ref}"

    work = tempfile.mkdtemp(prefix="oras-roundtrip-")
    try:
        # oras-py stores the file under its basename (title annotation) and by
        # default refuses paths outside the cwd: stage a copy in the work dir.
        src_dir = os.path.join(work, "src")
        os.makedirs(src_dir)
        name = os.path.basename(args.file)
        staged = os.path.join(src_dir, name)
        shutil.copyfile(args.file, staged)
        config = os.path.join(work, "config.json")
        with open(config, "w") as f:
            f.write("{}")

        resp = client.push(
            target=target,
            files=[f"{staged}:{LAYER_MEDIA_TYPE}"],
            manifest_config=f"{config}:{args.artifact_type}",
            manifest_annotations={"org.opencontainers.image.title": name},
            disable_path_validation=True,
            do_chunked=args.chunked,
            quiet=True,
        )
        digest = resp.headers.get("Docker-Content-Digest", "?")
        print(f"pushed {args.file} -> {target} (HTTP {resp.status_code}, manifest {digest})")

        manifest = client.get_manifest(target)
        print(f"manifest: {manifest}")
        want_blob = sha256_file(args.file)
        errors = []
        layers = manifest.get("layers", [])
        if len(layers) != 1 or layers[0].get("digest") != want_blob:
            errors.append(f"layer digest mismatch: want {want_blob}, got {layers}")
        if layers and layers[0].get("mediaType") != LAYER_MEDIA_TYPE:
            errors.append(f"layer mediaType {layers[0].get('mediaType')!r}")
        if args.v11:
            if manifest.get("artifactType") != args.artifact_type:
                errors.append(f"artifactType {manifest.get('artifactType')!r}")
        elif manifest.get("config", {}).get("mediaType") != args.artifact_type:
            errors.append(f"config mediaType {manifest.get('config')}")

        out_dir = os.path.join(work, "out")
        files = client.pull(target=target, outdir=out_dir)
        print(f"pulled {target} -> {files}")
        if len(files) != 1:
            errors.append(f"expected 1 pulled file, got {files}")
        elif not filecmp.cmp(args.file, files[0], shallow=False):
            errors.append(f"content mismatch: {args.file} vs {files[0]}")

        tags = client.get_tags(target)
        print(f"tags: {tags}")
        tag = args.ref.rsplit(":", 1)[1] if ":" in args.ref.rsplit("/", 1)[-1] else "latest"
        if tag not in tags:
            errors.append(f"tag {tag} not in tag list {tags}")

        if errors:
            for e in errors:
                print(f"FAIL: {e}", file=sys.stderr)
            return 1
        print(f"OK: {os.path.getsize(args.file)} bytes round-tripped, blob {want_blob}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # oras-py raises ValueError etc. on non-2xx answers
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
