"""Helpers of benches/compare-export.sh.

  write-image POOL IMAGE VIRTUAL_GIB DATA_MIB  fill an existing RBD image with mixed data
                                               (needs the system python3 with python3-rbd)
  mkbucket BUCKET | rmbucket BUCKET            create / empty and delete a bucket (boto3)
  upload FILE s3://B/K PART_BYTES JOBS         a boto3 multipart upload (same part size and
                                               concurrency as diskferry)
  download s3://B/K FILE                       fetch an object
  head s3://B/K                                print size and metadata as JSON
  rm s3://B/K...                               delete objects

S3 settings come from the AWS_* environment that `scripts/dev-cluster env` prints.
"""

import json
import os
import sys

# The RGW-ready boto3 client and the s3:// URL split are the import bench's (same folder).
from import_helpers import client, remove_bucket, split, upload

MIB = 1 << 20
CHUNK = 4 * MIB


def chunk(i, rnd, text):
    """Mixed data, 4 MiB per chunk, cycling over four kinds."""
    kind = i % 4
    if kind == 0:  # incompressible
        return rnd[i % 65536 :] + rnd[: i % 65536]
    if kind == 1:  # text-like
        return text
    if kind == 2:  # half zeros inside allocated data (file systems leave these)
        return bytes(CHUNK // 2) + rnd[: CHUNK // 2]
    # binary-ish: small repeating structures with a counter
    block = (i.to_bytes(8, "little") + bytes(range(256)) * 15)[:4096]
    return block * (CHUNK // 4096)


def write_image(pool, name, virtual_gib, data_mib):
    import rados
    import rbd

    cluster = rados.Rados(conffile=os.environ.get("CEPH_CONF", ""))
    cluster.connect()
    try:
        ioctx = cluster.open_ioctx(pool)
        image = rbd.Image(ioctx, name)
        try:
            rnd = os.urandom(CHUNK)
            line = b"diskferry exports RBD images to RGW as qcow2 in one streaming pass.\n"
            text = (line * (CHUNK // len(line) + 1))[:CHUNK]
            count = data_mib * MIB // CHUNK
            stride = (virtual_gib << 30) // count // CHUNK * CHUNK
            for i in range(count):
                image.write(chunk(i, rnd, text), i * stride)
            image.flush()
        finally:
            image.close()
            ioctx.close()
    finally:
        cluster.shutdown()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "write-image":
        write_image(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "mkbucket":
        client().create_bucket(Bucket=args[0])
    elif cmd == "rmbucket":
        remove_bucket(args[0])
    elif cmd == "upload":
        upload(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "download":
        bucket, key = split(args[0])
        client().download_file(bucket, key, args[1])
    elif cmd == "head":
        bucket, key = split(args[0])
        out = client().head_object(Bucket=bucket, Key=key)
        print(json.dumps({"size": out["ContentLength"], "metadata": out.get("Metadata", {})}))
    elif cmd == "rm":
        s3 = client()
        for url in args:
            bucket, key = split(url)
            s3.delete_object(Bucket=bucket, Key=key)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
