"""A Python grpcio client of weft.v1.ProfileService, generated from the
project's .proto at run time (grpc_tools.protoc), as a Python user would.

Prints one JSON object: the profile of --user (features as plain JSON:
numbers, strings, lists, [value, count] pairs), its freshness, the
recommendations, the codes of two bad calls, the services listed by server
reflection, and the health status.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def generate(proto_root: str, out: str):
    rc = protoc.main([
        "protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(proto_root, "weft", "v1", "weft.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    for d in ("weft", os.path.join("weft", "v1")):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    return (importlib.import_module("weft.v1.weft_pb2"),
            importlib.import_module("weft.v1.weft_pb2_grpc"))


def value(v):
    which = v.WhichOneof("value")
    if which == "string_list":
        return list(v.string_list.values)
    if which == "ranked_list":
        return [[e.value, e.count] for e in v.ranked_list.entries]
    return getattr(v, which)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--proto-root", required=True)
    a = ap.parse_args()
    pb, pb_grpc = generate(a.proto_root, tempfile.mkdtemp())
    channel = grpc.insecure_channel(a.addr)
    stub = pb_grpc.ProfileServiceStub(channel)
    auth = [("authorization", f"Bearer {a.key}")]

    r = stub.GetProfile(pb.GetProfileRequest(user_id=a.user), metadata=auth, timeout=5)
    out = {
        "found": r.profile.found,
        "features": {k: value(v) for k, v in r.profile.features.items()},
        "freshness": {
            "batch_view_version": r.freshness.batch_view_version,
            "speed_generation": r.freshness.speed_generation,
            "speed_lag_messages": r.freshness.speed_lag_messages,
            "as_of_ms": r.freshness.as_of_ms,
        },
    }
    recs = stub.GetRecommendations(pb.GetRecommendationsRequest(user_id=a.user, n=5), metadata=auth, timeout=5)
    out["recommendations"] = [[i.item_id, i.score, pb.RecommendationReason.Name(i.reason)] for i in recs.items]

    def code_of(call):
        try:
            call()
            return "OK"
        except grpc.RpcError as e:
            return e.code().name

    out["no_key"] = code_of(lambda: stub.GetProfile(pb.GetProfileRequest(user_id=a.user), timeout=5))
    out["empty_id"] = code_of(lambda: stub.GetProfile(pb.GetProfileRequest(user_id=""), metadata=auth, timeout=5))

    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    out["services"] = sorted(s.name for s in reply.list_services_response.service)

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="weft.v1.ProfileService"), timeout=5)
    out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
