"""The team share in an S3 bucket: a real S3 API (moto's server on loopback, real HTTP and
SigV4 signing), reached through the standard AWS variables as a user's laptop would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from motoserver import moto_server, s3_env
from test_share import expected_totals, fill_home, make_rows, push_user

from ccmeter import share, share_identity, sharestore, team
from ccmeter.config import CCMeterError

s3 = pytest.fixture(scope="module")(moto_server)


@pytest.fixture
def bucket_url(s3, monkeypatch) -> str:
    for name, value in s3_env(s3.endpoint).items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3.bucket()}/ccmeter-share"


def objects(s3, url: str) -> dict[str, bytes]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = s3.client()
    out = {}
    for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def test_push_to_a_bucket_is_the_folder_layout_and_idempotent(tmp_path, s3, bucket_url):
    paths = fill_home(tmp_path / "a", make_rows("alice", 3))
    result = push_user(paths, bucket_url, "alice")
    machine = result.machine
    assert sorted(result.written) == [
        f"{bucket_url}/ccmeter/v1/month=2026-10/user=alice/part-{machine}.jsonl",
        f"{bucket_url}/ccmeter/v1/month=2026-11/user=alice/part-{machine}.jsonl"]
    stored = objects(s3, bucket_url)
    folder = tmp_path / "folder"
    folder.mkdir()
    push_user(paths, folder, "alice")  # the same rows to a folder: the same bytes
    for key, data in stored.items():
        assert (folder / key.split("/", 1)[1]).read_bytes() == data
    again = push_user(paths, bucket_url, "alice")
    assert again.written == [] and len(again.unchanged) == 2
    assert objects(s3, bucket_url) == stored


def test_rename_moves_this_machines_objects_only(tmp_path, s3, bucket_url):
    mine = fill_home(tmp_path / "a", make_rows("alice", 3))
    other = fill_home(tmp_path / "b", make_rows("alice2", 4))
    push_user(mine, bucket_url, "alice")
    push_user(other, bucket_url, "alice")  # alice's other laptop
    result = push_user(mine, bucket_url, "bob", rename=True)
    keys = sorted(objects(s3, bucket_url))
    assert sum("user=bob/" in k for k in keys) == 2
    assert sum("user=alice/" in k for k in keys) == 2  # the other laptop's stay
    assert all(result.machine not in k for k in keys if "user=alice/" in k)


def test_team_report_reads_a_bucket(tmp_path, s3, bucket_url):
    users = {"alice": make_rows("alice", 1), "bob": make_rows("bob", 2)}
    for user, rows in users.items():
        push_user(fill_home(tmp_path / user, rows), bucket_url, user)
    data = team.read_share(bucket_url)
    assert data.files == 4 and not data.skipped
    groups = {g["user"]: g for g in team.aggregate(data.rows, ["user"])}
    for user, rows in users.items():
        want = expected_totals(rows)
        assert groups[user]["cost_picousd"] == want["cost_picousd"]
        assert groups[user]["calls"] == want["calls"]
    out = subprocess.run([sys.executable, "-m", "ccmeter.entry", "team", "report", "--from",
                          bucket_url, "--format", "json"], capture_output=True, text=True,
                         env=os.environ, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["meta"]["share"] == bucket_url
    assert {r["user"] for r in doc["rows"]} == set(users)


def test_duckdb_reads_the_bucket(tmp_path, s3, bucket_url):
    duckdb = pytest.importorskip("duckdb")
    import s3fs

    users = {"alice": make_rows("alice", 1), "o'd d/y@x": make_rows("o", 13)}
    for user, rows in users.items():
        push_user(fill_home(tmp_path / str(len(user)), rows), bucket_url, user)
    con = duckdb.connect()
    con.register_filesystem(s3fs.S3FileSystem(endpoint_url=s3.endpoint, key="test",
                                              secret="test"))
    result = con.sql(f"""
        SELECT user, SUM(calls)::BIGINT, SUM(cost_picousd)::HUGEINT, COUNT(DISTINCT month)
        FROM read_json_auto('{bucket_url}/ccmeter/v1/*/*/*.jsonl', hive_partitioning = true)
        GROUP BY user ORDER BY user
    """).fetchall()
    assert [r[0] for r in result] == sorted(users)
    for user, calls, picousd, months in result:
        want = expected_totals(users[user])
        assert (calls, picousd, months) == (want["calls"], want["cost_picousd"], 2)


def test_a_missing_bucket_is_one_line(tmp_path, s3, bucket_url):
    paths = fill_home(tmp_path / "a", make_rows("alice", 3))
    with pytest.raises(CCMeterError, match=r"bucket no-such-bucket of share .* does not exist"):
        push_user(paths, "s3://no-such-bucket/x", "alice")
    with pytest.raises(CCMeterError, match="does not exist"):
        team.read_share("s3://no-such-bucket/x")


def test_wrong_credentials_are_one_line_naming_the_share(tmp_path, s3, bucket_url,
                                                         monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    paths = fill_home(tmp_path / "a", make_rows("alice", 3))
    with pytest.raises(CCMeterError, match=r"cannot reach s3://"):
        push_user(paths, bucket_url, "alice")


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fsspec(name, *args, **kwargs):
        if name == "fsspec" or name.startswith("fsspec."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    with pytest.raises(CCMeterError) as info:
        sharestore.open_share("gs://bucket/x")
    assert str(info.value) == "gs:// shares need the gcs extra: pip install 'ccmeter[gcs]'"


def test_a_folder_share_needs_no_extra():
    code = ("import sys; sys.modules['fsspec'] = None\n"
            "from ccmeter import sharestore\n"
            "print(type(sharestore.open_share('/tmp/x')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "FolderShare", out.stderr


def test_urls_keep_their_slashes_and_folders_expand():
    assert sharestore.location("s3://b/p/") == "s3://b/p"
    assert sharestore.location("~/team") == Path.home() / "team"
    cfg = {"share": {"path": "s3://acme/ccmeter"}}
    assert share_identity.resolve_settings(cfg, {}, user="a").share == "s3://acme/ccmeter"
    assert share.part_key("2026-11", "a/b", "x") == (
        "ccmeter/v1/month=2026-11/user=a%2Fb/part-x.jsonl")


def test_an_objects_stamp_changes_with_its_bytes_only(tmp_path, s3, bucket_url):
    target = sharestore.open_share(bucket_url)
    target.write("a/x.jsonl", b"one\n")
    first = target.stamps("a")
    target.write("a/x.jsonl", b"one\n")
    assert target.stamps("a") == first
    target.write("a/x.jsonl", b"two\n")
    assert target.stamps("a")["a/x.jsonl"] != first["a/x.jsonl"]
    target.write_new("a/y.json", b"{}")
    with pytest.raises(CCMeterError, match="exists already"):
        target.write_new("a/y.json", b"{}")
    assert target.read("a/y.json") == b"{}" and target.read("a/none") is None
