"""Renders deploy/helm/belay with Helm's own Go engine (helm-python-sdk binds Helm v4's
SDK) for several sets of values, and validates every rendered object against the
Kubernetes JSON schemas of one version (kubernetes-validate, strict: unknown fields
are errors). Run by `cargo xtask deploy-test`.

usage: chart.py CHART K8S_VERSION OUT_DIR
Prints one line per scenario, `chart: <scenario>: N objects valid` or the errors, and
writes OUT_DIR/<scenario>.yaml. Exit status 1 when anything failed.
"""

import json
import sys
from pathlib import Path

import yaml
from helm_python import Chart
import kubernetes_validate

NS = "belay-system"

# scenario -> (values, kinds that must be rendered, kinds that must not)
SCENARIOS = {
    # The plain manifests in deploy/kubernetes are this one.
    "default": (
        {"namespace": {"create": True}},
        {"Namespace", "ConfigMap", "DaemonSet", "StatefulSet", "Service", "NetworkPolicy"},
        {"Deployment", "Secret"},
    ),
    "postgres-replicas": (
        {
            "server": {
                "replicas": 3,
                "database": {"urlSecret": "belay-db"},
                "caSecret": "belay-ca",
                "auditKeySecret": "belay-audit-key",
                "auth": {"config": '[[api_token]]\nname = "ci"\nsha256 = "00"\nroles = ["reviewer"]\n'},
                "console": {
                    "enabled": True,
                    "url": "https://belay.example.com",
                    "tlsSecret": "belay-console-tls",
                    "chatSecret": "belay-chat",
                },
                "exportConfig": '[spool]\ndir = "/var/lib/belay-server/spool"\n',
                "tlsNames": ["belay.example.com"],
            },
            "agent": {
                "server": {
                    "enabled": True,
                    "caFingerprint": "sha256:00",
                    "enrollmentTokenSecret": "belay-enroll",
                    "policyFromServer": True,
                },
                "metricsPort": 0,
            },
            "image": {"registry": "registry.example.com/belay", "pullSecrets": ["regcred"]},
        },
        {"DaemonSet", "Deployment", "Service", "Secret", "NetworkPolicy"},
        {"StatefulSet", "Namespace"},
    ),
    "server-only": (
        {"agent": {"enabled": False}, "networkPolicy": {"enabled": False}},
        {"StatefulSet", "Service"},
        {"DaemonSet", "ConfigMap", "NetworkPolicy"},
    ),
}

# Values that must be refused, with a word of the expected message.
REFUSED = {
    "sqlite-replicas": ({"server": {"replicas": 2}}, "PostgreSQL"),
    "replicas-without-ca": (
        {"server": {"replicas": 2, "database": {"urlSecret": "db"}}},
        "share one CA",
    ),
    "server-without-fingerprint": ({"agent": {"server": {"enabled": True}}}, "caFingerprint"),
    "chat-without-console": ({"server": {"console": {"chatSecret": "belay-chat"}}}, "console"),
}


def objects(rendered):
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                yield path, doc


# Helm's install order, so that `kubectl apply -f` of the file creates the namespace first.
KIND_ORDER = ["Namespace", "NetworkPolicy", "Secret", "ConfigMap", "PersistentVolumeClaim",
              "Service", "DaemonSet", "Deployment", "StatefulSet"]


def as_manifest(rendered):
    """The rendered templates as one file, like `helm template` prints them."""
    def rank(path):
        kinds = [d.get("kind") for d in yaml.safe_load_all(rendered[path]) if d]
        return min((KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)) for k in kinds)
    paths = [p for p in rendered if p.endswith(".yaml") and any(yaml.safe_load_all(rendered[p]))]
    return "".join(
        f"---\n# Source: {p}\n{rendered[p].strip()}\n" for p in sorted(paths, key=lambda p: (rank(p), p))
    )


def check_pods(obj, errors):
    """What the schemas cannot say: probes, resources, the server as non-root."""
    kind = obj["kind"]
    if kind not in ("DaemonSet", "Deployment", "StatefulSet"):
        return
    spec = obj["spec"]["template"]["spec"]
    for c in spec["containers"]:
        where = f"{kind}/{obj['metadata']['name']}/{c['name']}"
        if "requests" not in c.get("resources", {}):
            errors.append(f"{where}: no resource requests")
        if c["name"] == "belay-server":
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                    errors.append(f"{where}: {probe} is not an HTTP GET of {path}")
            if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
                errors.append(f"{where}: not runAsNonRoot")
            ann = obj["spec"]["template"]["metadata"].get("annotations", {})
            if ann.get("prometheus.io/scrape") != "true":
                errors.append(f"{where}: no prometheus.io/scrape annotation")


def main():
    chart_dir, version, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    chart = Chart.load(chart_dir)
    failed = False
    for name, (values, must, must_not) in SCENARIOS.items():
        errors = []
        try:
            rendered = chart.render(values, name="belay", namespace=NS, is_install=True)
        except Exception as e:  # noqa: BLE001 - report any rendering error
            print(f"chart: {name}: rendering failed: {e}")
            failed = True
            continue
        docs = list(objects(rendered))
        kinds = {d["kind"] for _, d in docs}
        for k in sorted(must - kinds):
            errors.append(f"no {k} rendered")
        for k in sorted(must_not & kinds):
            errors.append(f"a {k} was rendered")
        for path, doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{path}: {doc['kind']}/{doc['metadata'].get('name')}: {e.message} at {'.'.join(map(str, e.path))}")
            except Exception as e:  # noqa: BLE001 - schema missing, etc.
                errors.append(f"{path}: {doc['kind']}: {e}")
            check_pods(doc, errors)
        (out / f"{name}.yaml").write_text(as_manifest(rendered))
        if errors:
            failed = True
            print(f"chart: {name}: {len(errors)} errors")
            for e in errors:
                print(f"  {e}")
        else:
            print(f"chart: {name}: {len(docs)} objects valid against Kubernetes {version} ({', '.join(sorted(kinds))})")
    for name, (values, word) in REFUSED.items():
        try:
            chart.render(values, name="belay", namespace=NS, is_install=True)
            print(f"chart: {name}: rendered, but must be refused")
            failed = True
        except Exception as e:  # noqa: BLE001
            if word in str(e):
                print(f"chart: {name}: refused as it must be")
            else:
                print(f"chart: {name}: refused, but not for the expected reason ({word!r}): {e}")
                failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
