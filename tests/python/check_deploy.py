"""Parses deploy/compose.yaml and deploy/k8s/*.yaml (no Docker engine runs
here) and checks they name the right images, ports, volumes, commands and
config keys. Prints the serve configs they embed, as JSON, for the Rust test
to load with ServeConfig."""

import json
import os
import sys

import yaml

root = sys.argv[1]
deploy = os.path.join(root, "deploy")
errors = []


def check(cond, what):
    if not cond:
        errors.append(what)


# --- compose --------------------------------------------------------------
compose = yaml.safe_load(open(os.path.join(deploy, "compose.yaml")))
svc = compose["services"]
check(set(svc) >= {"kafka", "topics", "weft-serve", "weft-archive", "weft-batch"}, f"compose services: {sorted(svc)}")
check(svc["kafka"]["image"].startswith("apache/kafka:"), "compose kafka image")
check(svc["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "compose: topics are created explicitly")
check("--topic events " in svc["topics"]["command"][0] and "--partitions 8" in svc["topics"]["command"][0], "compose topics job")
serve = svc["weft-serve"]
check(serve["image"].startswith("weft:"), "compose serve image")
check(serve["command"][:3] == ["serve", "--config", "/etc/weft/weft.toml"], f"compose serve command {serve['command']}")
check({"50051:50051", "8080:8080"} <= set(serve["ports"]), "compose serve ports")
mounts = {v.split(":")[1]: v.split(":")[0] for v in serve["volumes"]}
check(mounts.get("/var/lib/weft/speed") == "weft-speed", "compose serve speed volume")
check(mounts.get("/etc/weft/weft.toml") == "./weft.compose.toml", "compose serve config mount")
check(mounts.get("/var/lib/weft/views") == "weft-views", "compose serve views volume")
check("/readyz" in " ".join(serve["healthcheck"]["test"]), "compose serve health check")
arch = svc["weft-archive"]
check(arch["command"][:1] == ["archive"] and "--root" in arch["command"], "compose archive command")
check(any(v.startswith("weft-archive:/var/lib/weft/archive") for v in arch["volumes"]), "compose archive volume")
batch = svc["weft-batch"]
check("weft batch run --archive /var/lib/weft/archive" in batch["command"][0], "compose batch command")
check(set(compose["volumes"]) >= {"weft-speed", "weft-archive", "weft-views", "kafka-data"}, "compose volumes")
configs = {"deploy/weft.compose.toml": open(os.path.join(deploy, "weft.compose.toml")).read()}

# --- kubernetes -----------------------------------------------------------
docs = []
for name in sorted(os.listdir(os.path.join(deploy, "k8s"))):
    if name.endswith(".yaml"):
        docs += [d for d in yaml.safe_load_all(open(os.path.join(deploy, "k8s", name))) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
for key in [("StatefulSet", "kafka"), ("Service", "kafka"), ("Job", "kafka-topics"), ("ConfigMap", "weft-config"),
            ("Secret", "weft-keys"), ("StatefulSet", "weft-serve"), ("Service", "weft-serve"),
            ("StatefulSet", "weft-archive"), ("CronJob", "weft-batch"),
            ("PersistentVolumeClaim", "weft-archive"), ("PersistentVolumeClaim", "weft-views")]:
    check(key in by, f"k8s {key} missing")
if not errors:
    kafka = by[("StatefulSet", "kafka")]["spec"]["template"]["spec"]["containers"][0]
    check(kafka["image"].startswith("apache/kafka:"), "k8s kafka image")
    ss = by[("StatefulSet", "weft-serve")]["spec"]
    c = ss["template"]["spec"]["containers"][0]
    check(c["image"].startswith("weft:"), "k8s serve image")
    check(c["args"] == ["serve", "--config", "/etc/weft/weft.toml"], "k8s serve args")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"grpc": 50051, "http": 8080}, f"k8s serve ports {ports}")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "k8s readiness probe")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "k8s liveness probe")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    check(mounts.get("/var/lib/weft/speed") == "speed", "k8s serve speed mount")
    check([t["metadata"]["name"] for t in ss["volumeClaimTemplates"]] == ["speed"], "k8s serve RocksDB volume claim")
    secret_keys = set(by[("Secret", "weft-keys")]["stringData"])
    check({"WEFT_ACME_SERVER_KEY", "WEFT_ACME_WIDGET_KEY"} <= secret_keys, "k8s secret keys")
    svc_ports = {p["name"]: p["port"] for p in by[("Service", "weft-serve")]["spec"]["ports"]}
    check(svc_ports == {"grpc": 50051, "http": 8080}, "k8s serve service ports")
    arch = by[("StatefulSet", "weft-archive")]["spec"]["template"]["spec"]["containers"][0]
    check(arch["args"][0] == "archive" and "/var/lib/weft/archive" in arch["args"], "k8s archive args")
    cron = by[("CronJob", "weft-batch")]["spec"]
    bc = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    check(bc["args"][:2] == ["batch", "run"] and "--views" in bc["args"], "k8s batch args")
    check(cron["concurrencyPolicy"] == "Forbid", "k8s batch runs never overlap")
    configs["deploy/k8s/weft.yaml#weft.toml"] = by[("ConfigMap", "weft-config")]["data"]["weft.toml"]

if errors:
    sys.exit("deploy manifests:\n  " + "\n  ".join(errors))
print(json.dumps({"configs": configs}))
