"""The pip-installed aws CLI (1.x) works against Hamster end to end.

Proves that a user with nothing but the stock aws CLI can make a bucket, upload a small and a
20 MiB object (one PUT each: the CLI is configured with a 64 MB multipart threshold), see them in
listings, download them byte-identical, read a byte range, see the size and an ETag equal to the
content MD5, delete them and remove the bucket. The CLI runs as a subprocess with credentials
only in its environment and a private config file, so nothing on the machine leaks in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import harness


def aws_executable() -> str:
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    found = shutil.which("aws")
    if not found:
        raise RuntimeError("aws CLI not installed (pip install -r e2e/requirements.txt)")
    return found


@pytest.fixture(scope="module")
def aws(shared_node, tmp_path_factory):
    cfg_dir = tmp_path_factory.mktemp("awscfg")
    cfg = cfg_dir / "config"
    cfg.write_text(
        "[default]\n"
        "region = us-east-1\n"
        "s3 =\n"
        "  multipart_threshold = 64MB\n"
        "  addressing_style = path\n"
    )
    env = harness.child_env({
        "AWS_ACCESS_KEY_ID": shared_node.access_key,
        "AWS_SECRET_ACCESS_KEY": shared_node.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(cfg),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PAGER": "",
    })
    exe = aws_executable()

    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        cmd = [exe, "--endpoint-url", shared_node.endpoint, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"`aws {' '.join(args)}` exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    return run


def bucket_names_from_ls(out: str) -> list[str]:
    # `aws s3 ls` prints "YYYY-MM-DD hh:mm:ss name" per bucket.
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def objects_from_ls(out: str) -> dict[str, int]:
    # `aws s3 ls s3://b` prints "YYYY-MM-DD hh:mm:ss SIZE KEY" per object.
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\S+\s+\S+\s+(\d+)\s+(.+)$", line)
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def test_make_list_and_remove_bucket(aws):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    aws("s3", "mb", f"s3://{name}")
    assert name in bucket_names_from_ls(aws("s3", "ls").stdout)
    aws("s3", "rb", f"s3://{name}")
    assert name not in bucket_names_from_ls(aws("s3", "ls").stdout)


def test_copy_up_list_down_range_head_remove(aws, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    small = os.urandom(1024)
    big = os.urandom(20 * 1024 * 1024)
    (tmp_path / "small.bin").write_bytes(small)
    (tmp_path / "big.bin").write_bytes(big)

    aws("s3", "mb", f"s3://{name}")
    aws("s3", "cp", str(tmp_path / "small.bin"), f"s3://{name}/dir/small.bin")
    aws("s3", "cp", str(tmp_path / "big.bin"), f"s3://{name}/big.bin")

    listed = objects_from_ls(aws("s3", "ls", "--recursive", f"s3://{name}").stdout)
    assert listed == {"dir/small.bin": 1024, "big.bin": len(big)}

    aws("s3", "cp", f"s3://{name}/dir/small.bin", str(tmp_path / "small.down"))
    aws("s3", "cp", f"s3://{name}/big.bin", str(tmp_path / "big.down"))
    assert harness.sha256((tmp_path / "small.down").read_bytes()) == harness.sha256(small)
    assert harness.sha256((tmp_path / "big.down").read_bytes()) == harness.sha256(big)

    out = tmp_path / "range.out"
    meta = json.loads(aws("s3api", "get-object", "--bucket", name, "--key", "big.bin",
                          "--range", "bytes=1000-1099", str(out)).stdout)
    assert out.read_bytes() == big[1000:1100]
    assert meta["ContentLength"] == 100
    assert meta["ContentRange"] == f"bytes 1000-1099/{len(big)}"

    for key, data in (("dir/small.bin", small), ("big.bin", big)):
        head = json.loads(aws("s3api", "head-object", "--bucket", name, "--key", key).stdout)
        assert head["ContentLength"] == len(data)
        assert head["ETag"] == f'"{harness.md5(data)}"'

    aws("s3", "rm", f"s3://{name}/dir/small.bin")
    aws("s3", "rm", f"s3://{name}/big.bin")
    assert objects_from_ls(aws("s3", "ls", "--recursive", f"s3://{name}",
                               check=False).stdout) == {}
    aws("s3", "rb", f"s3://{name}")
    assert name not in bucket_names_from_ls(aws("s3", "ls").stdout)


def test_missing_object_download_fails(aws, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    aws("s3", "mb", f"s3://{name}")
    try:
        proc = aws("s3", "cp", f"s3://{name}/nope", str(tmp_path / "nope"), check=False)
        assert proc.returncode != 0
        assert "404" in proc.stderr or "Not Found" in proc.stderr
        assert not (tmp_path / "nope").exists()
    finally:
        aws("s3", "rb", f"s3://{name}")
