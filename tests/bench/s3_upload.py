"""Uploads a local archive to the S3 server tests/python/s3_server.py started.

    python3 tests/bench/s3_upload.py S3_JSON DIR PREFIX

S3_JSON is the server's first output line (endpoint, bucket, keys); every
file under DIR goes to s3://BUCKET/PREFIX/<path relative to DIR>.
"""
import json
import os
import sys

import boto3

info, root, prefix = sys.argv[1:]
c = json.load(open(info))
s3 = boto3.client("s3", endpoint_url=c["endpoint"], aws_access_key_id=c["access_key_id"],
                  aws_secret_access_key=c["secret_access_key"], region_name=c["region"])
for d, _, files in os.walk(root):
    for f in files:
        path = os.path.join(d, f)
        s3.upload_file(path, c["bucket"], prefix + "/" + os.path.relpath(path, root))
