"""Helpers of benches/compare-import.sh.

  make-raw FILE VIRTUAL_GIB DATA_MIB     write a sparse raw disk with mixed data; print the
                                         offsets (one a line) of the 4 MiB chunks left as holes
                                         that the script then fills with explicit zero clusters
  mkbucket BUCKET | rmbucket BUCKET      create / empty and delete a bucket (boto3)
  upload FILE s3://B/K                   a boto3 multipart upload (16 MiB parts, 4 in flight)
  download-ceiling s3://B/K RANGE JOBS   a parallel ranged download of the object (boto3,
                                         JOBS threads, RANGE bytes per GET, data discarded);
                                         prints the MiB/s
  curl-config s3://B/K RANGE FILE        write a curl config that fetches the object in
                                         ranges (for `curl --parallel`), SigV4-signed

S3 settings come from the AWS_* environment that `scripts/dev-cluster env` prints.
"""

import os
import sys
import time

MIB = 1 << 20
CHUNK = 4 * MIB


def make_raw(path, virtual_gib, data_mib):
    """Per 4 MiB chunk, cycling over six kinds: random, text, half zeros + half random,
    structured binary, random, and an all-zero chunk (left as a hole here; the script writes
    it into the qcow2 as allocated zero clusters). Chunks are spread evenly over the disk, so
    the 100 GiB image has the same data as the 10 GiB one with more holes between."""
    rnd = os.urandom(CHUNK)
    line = b"diskferry imports qcow2 images into Ceph RBD in one streaming, parallel pass.\n"
    text = (line * (CHUNK // len(line) + 1))[:CHUNK]
    count = data_mib * MIB // CHUNK
    size = virtual_gib << 30
    stride = size // count // CHUNK * CHUNK
    zero_chunks = []
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(count):
            offset = i * stride
            kind = i % 6
            if kind in (0, 4):  # incompressible, varied per chunk
                data = rnd[i * 4096 % CHUNK :] + rnd[: i * 4096 % CHUNK]
            elif kind == 1:  # text-like
                data = text
            elif kind == 2:  # half zeros inside written data
                data = bytes(CHUNK // 2) + rnd[: CHUNK // 2]
            elif kind == 3:  # structured binary with a counter
                block = (i.to_bytes(8, "little") + bytes(range(256)) * 16)[:4096]
                data = block * (CHUNK // 4096)
            else:
                zero_chunks.append(offset)
                continue
            f.seek(offset)
            f.write(data)
    for offset in zero_chunks:
        print(offset)


def client():
    import boto3
    from botocore.config import Config

    # Pacific's RGW rejects the aws-chunked checksum trailers newer SDKs send by default.
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=64,
    )
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=config,
    )


def split(url):
    assert url.startswith("s3://"), url
    bucket, _, key = url[5:].partition("/")
    return bucket, key


def remove_bucket(bucket):
    """Aborts the bucket's multipart uploads, deletes its objects, then the bucket."""
    s3 = client()
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for u in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
    s3.delete_bucket(Bucket=bucket)


def upload(path, url, part_bytes, jobs):
    """A boto3 multipart upload of `path` to `url` in `part_bytes` parts, `jobs` in flight."""
    from boto3.s3.transfer import TransferConfig

    bucket, key = split(url)
    config = TransferConfig(
        multipart_threshold=part_bytes,
        multipart_chunksize=part_bytes,
        max_concurrency=jobs,
        use_threads=True,
    )
    client().upload_file(path, bucket, key, Config=config)


def download_ceiling(url, range_bytes, jobs):
    from concurrent.futures import ThreadPoolExecutor

    s3 = client()
    bucket, key = split(url)
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def get(start):
        end = min(start + range_bytes, size) - 1
        body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"]
        n = 0
        for piece in body.iter_chunks(1 << 20):
            n += len(piece)
        return n

    t0 = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        got = sum(pool.map(get, range(0, size, range_bytes)))
    seconds = time.monotonic() - t0
    assert got == size, (got, size)
    print(f"{size / MIB / seconds:.1f}")


def curl_config(url, range_bytes, out):
    s3 = client()
    bucket, key = split(url)
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    region = os.environ.get("AWS_REGION", "us-east-1")
    user = f'{os.environ["AWS_ACCESS_KEY_ID"]}:{os.environ["AWS_SECRET_ACCESS_KEY"]}'
    blocks = []
    for start in range(0, size, range_bytes):
        end = min(start + range_bytes, size) - 1
        blocks.append(
            f'url = "{endpoint}/{bucket}/{key}"\n'
            f'aws-sigv4 = "aws:amz:{region}:s3"\n'
            f'user = "{user}"\n'
            # curl 7.88 signs no payload hash; RGW wants the header (403 without it).
            'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n'
            f'range = "{start}-{end}"\n'
            f'output = "/dev/null"\n'
            "fail\nsilent\nshow-error\n"
        )
    with open(out, "w") as f:
        f.write("next\n".join(blocks))
    print(size)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-raw":
        make_raw(args[0], int(args[1]), int(args[2]))
    elif cmd == "mkbucket":
        client().create_bucket(Bucket=args[0])
    elif cmd == "rmbucket":
        remove_bucket(args[0])
    elif cmd == "upload":
        upload(args[0], args[1], 16 * MIB, 4)
    elif cmd == "download-ceiling":
        download_ceiling(args[0], int(args[1]), int(args[2]))
    elif cmd == "curl-config":
        curl_config(args[0], int(args[1]), args[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
