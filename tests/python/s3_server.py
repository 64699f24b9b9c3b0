"""A real S3-compatible server on loopback for Weft's tests: moto's server,
with request signing checked (so a wrong key is refused as AWS would) and
one bucket.

Prints one JSON line, {"endpoint", "bucket", "access_key_id",
"secret_access_key", "region"}, once the server answers; then serves until
killed. Usage: python3 tests/python/s3_server.py [BUCKET]
"""

import json
import os
import sys
import time

# The setup's four requests (bucket, user, key, policy) go unsigned; every
# later one must be signed with the key made here.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"

from urllib.parse import quote, unquote  # noqa: E402

import boto3  # noqa: E402
import moto.iam.access_control as access_control  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

# moto checks a signature against the path and query string as its web
# server decoded them (`tenant=a/`, `prefix=archive/`), while AWS, and every
# client that signs for AWS, use the encoded form (`tenant%3Da`,
# `prefix=archive%2F`): such requests would fail with
# SignatureDoesNotMatch. Check them against the canonical encoding, as S3
# does.
_request_init = access_control.IAMRequestBase.__init__


def _canonical(path: str) -> str:
    base, sep, query = path.partition("?")
    base = quote(unquote(base), safe="/~")
    if not sep:
        return base
    pairs = (pair.partition("=") for pair in query.split("&"))
    return base + "?" + "&".join(
        f"{quote(unquote(k), safe='-_.~')}={quote(unquote(v), safe='-_.~')}"
        for k, _, v in pairs
    )


def _init_with_canonical_query(self, *args, **kwargs):
    if "path" in kwargs:
        kwargs["path"] = _canonical(kwargs["path"])
    _request_init(self, *args, **kwargs)


access_control.IAMRequestBase.__init__ = _init_with_canonical_query

REGION = "us-east-1"


def main() -> None:
    bucket = sys.argv[1] if len(sys.argv) > 1 else "weft"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    anon = dict(
        endpoint_url=endpoint,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        region_name=REGION,
    )
    boto3.client("s3", **anon).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="weft")
    key = iam.create_access_key(UserName="weft")["AccessKey"]
    iam.put_user_policy(
        UserName="weft",
        PolicyName="weft-s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "bucket": bucket,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "region": REGION,
            }
        ),
        flush=True,
    )
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
