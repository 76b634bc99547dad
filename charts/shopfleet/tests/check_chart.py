#!/usr/bin/env python3
"""Checks the Helm chart without a cluster or a helm binary (make test runs it):

- renders it with the real Helm SDK (helm-python-sdk) for the default values and every file in
  charts/shopfleet/ci/, after checking each against values.schema.json and linting it (strict);
- validates every rendered manifest: built-in kinds with kubernetes-validate --strict for two
  Kubernetes minor versions, KEDA and Prometheus Operator resources against their CRD schemas
  (tests/crds/, see SOURCES.md there), strictly: a field the schema does not know is an error;
- reads the manifests: one Deployment per enabled worker, whose args name a real `shopfleet worker`
  domain; every Deployment with probes, limits, the restricted security context, no service
  account token and Secrets of its own; no Secret value in any ConfigMap or plain env value, and no
  URL with a user or password in a ConfigMap (the edge's management URL); the Ingress reaches the
  edge's http port only, never ops;
  every queue a KEDA trigger names exists in topology/; never KEDA and an HPA for one Deployment;
  checksum annotations that roll the pods; and a values typo rejected by the schema.

    .shopfleet/tools-venv/bin/python charts/shopfleet/tests/check_chart.py
"""
import base64
import copy
import glob
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import yaml
from helm_python.chart import Chart, lint

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CHART = os.path.join(ROOT, "charts", "shopfleet")
KUBERNETES_VERSIONS = ["1.29", "1.31"]
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrule_v1.json",
}

failures = []


def fail(where, what):
    failures.append("%s: %s" % (where, what))


def worker_domains():
    """The worker roles `shopfleet worker` knows (FleetPlan.workerRoles)."""
    text = open(os.path.join(ROOT, "Sources", "Fleet", "FleetPlan.swift")).read()
    match = re.search(r"static let workerRoles = \[([^\]]*)\]", text)
    return set(re.findall(r'"([a-z]+)"', match.group(1)))


def topology_queues():
    text = open(os.path.join(ROOT, "topology", "shopfleet.yaml")).read()
    data = yaml.safe_load(text)
    names = {q["name"] for q in data["queues"]}
    names.add(data["dead_letters"]["queue"])
    return names


def strict(schema):
    """The schema with unknown fields refused wherever it lists properties (as kubeconform -strict)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


CRD_SCHEMAS = {key: strict(json.load(open(os.path.join(CHART, "tests", "crds", name)))) for key, name in CRDS.items()}


def documents(rendered):
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")) or not text.strip():
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def validate(label, docs):
    for path, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        where = "%s %s %s/%s" % (label, path, doc.get("kind"), doc.get("metadata", {}).get("name"))
        if key in CRD_SCHEMAS:
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
            try:
                jsonschema.Draft7Validator(CRD_SCHEMAS[key]).validate(body)
            except jsonschema.ValidationError as error:
                fail(where, "does not match its CRD schema: %s at %s" % (error.message, "/".join(map(str, error.absolute_path))))
            continue
        if "." in (doc.get("apiVersion") or "").split("/")[0] and not doc.get("apiVersion", "").endswith("k8s.io/v1") \
                and doc.get("apiVersion", "").split("/")[0] not in ("apps", "batch", "policy", "networking.k8s.io", "autoscaling"):
            fail(where, "a custom resource without a schema to check it against (add it to tests/crds)")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                fail(where, "Kubernetes %s: %s" % (version, error.message))
            except Exception as error:  # an unknown kind or version
                fail(where, "Kubernetes %s: %s" % (version, error))


def pod_spec(doc):
    return doc.get("spec", {}).get("template", {}).get("spec", {})


def secret_names_of(spec):
    names = set()
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for env in container.get("env", []) or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []) or []:
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes", []) or []:
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
    return names


SECRET_ENV = {"SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_REDIS_URL", "SHOPFLEET_PAYMENTS_API_KEY",
              "SHOPFLEET_SMTP_URL", "SHOPFLEET_WEBHOOK_SECRET", "SHOPFLEET_JWT_SIGNING_KEY", "SHOPFLEET_FLEET_SECRET",
              "SHOPFLEET_AMQP_MANAGEMENT_URL"}


def check_manifests(label, docs, values, domains, queues):
    by_kind = {}
    for path, doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = by_kind.get("Deployment", [])

    # One Deployment per enabled worker, running a real domain.
    enabled = sorted(role for role, settings in (values.get("workers") or {}).items() if settings.get("enabled", True))
    roles = []
    for doc in deployments:
        for container in pod_spec(doc).get("containers", []):
            args = container.get("args") or []
            if args[:1] == ["worker"]:
                roles.append(args[1] if len(args) > 1 else "")
                if len(args) < 2 or args[1] not in domains:
                    fail(label, "Deployment %s runs `shopfleet %s`, not a worker domain" % (doc["metadata"]["name"], " ".join(args)))
    if sorted(roles) != enabled:
        fail(label, "worker Deployments %s, enabled workers %s" % (sorted(roles), enabled))

    # Every Deployment: probes, limits, the restricted security context, no token, its own Secrets.
    owners = {}
    for doc in deployments:
        name = doc["metadata"]["name"]
        spec = pod_spec(doc)
        if spec.get("automountServiceAccountToken") is not False:
            fail(label, "Deployment %s mounts a service account token" % name)
        pod_security = spec.get("securityContext") or {}
        annotations = doc["spec"]["template"].get("metadata", {}).get("annotations") or {}
        if not any(key.startswith("checksum/") for key in annotations):
            fail(label, "Deployment %s has no checksum annotation (a config change would not roll it)" % name)
        for container in spec.get("containers", []):
            where = "Deployment %s container %s" % (name, container["name"])
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe not in container:
                    fail(label, "%s has no %s" % (where, probe))
            limits = (container.get("resources") or {}).get("limits") or {}
            if "memory" not in limits or "cpu" not in limits:
                fail(label, "%s has no cpu and memory limits" % where)
            security = container.get("securityContext") or {}
            seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
            if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
                fail(label, "%s may run as root" % where)
            if security.get("readOnlyRootFilesystem") is not True:
                fail(label, "%s has a writable root filesystem" % where)
            if security.get("allowPrivilegeEscalation") is not False:
                fail(label, "%s allows privilege escalation" % where)
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                fail(label, "%s keeps capabilities" % where)
            if seccomp != "RuntimeDefault":
                fail(label, "%s has no RuntimeDefault seccomp profile" % where)
            for env in container.get("env", []) or []:
                if env.get("name") in SECRET_ENV and "value" in env:
                    fail(label, "%s has %s as a literal value, not from a Secret" % (where, env["name"]))
        for secret in secret_names_of(spec):
            owners.setdefault(secret, set()).add(name)
        if not secret_names_of(spec) and any(c.get("args", [""])[0] in ("worker", "edge") for c in spec.get("containers", [])):
            fail(label, "Deployment %s reads no Secret (its broker URL must come from one)" % name)
    for secret, users in owners.items():
        if len(users) > 1:
            fail(label, "Secret %s is shared by %s: each role must have its own" % (secret, ", ".join(sorted(users))))

    # No Secret value in any ConfigMap.
    values_of_secrets = set()
    for doc in by_kind.get("Secret", []):
        for value in (doc.get("stringData") or {}).values():
            values_of_secrets.add(str(value))
        for value in (doc.get("data") or {}).values():
            values_of_secrets.add(base64.b64decode(value).decode("utf-8", "replace"))
    for doc in by_kind.get("ConfigMap", []):
        for key, value in (doc.get("data") or {}).items():
            if key in SECRET_ENV:
                fail(label, "ConfigMap %s holds %s" % (doc["metadata"]["name"], key))
            for secret in values_of_secrets:
                if len(secret) >= 6 and secret in str(value):
                    fail(label, "ConfigMap %s key %s holds a Secret's value" % (doc["metadata"]["name"], key))
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@", str(value)):
                fail(label, "ConfigMap %s key %s holds a URL with a user or password" % (doc["metadata"]["name"], key))

    # The Ingress reaches the edge's public port only (the ops port is never exposed).
    for doc in by_kind.get("Ingress", []):
        for rule in doc["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                port = path["backend"]["service"]["port"]
                if port != {"name": "http"}:
                    fail(label, "Ingress %s sends %s to port %s, not the edge's http port" % (doc["metadata"]["name"], path["path"], port))

    # KEDA triggers name real queues; never KEDA and an HPA for one Deployment.
    scaled = {}
    for doc in by_kind.get("ScaledObject", []):
        target = doc["spec"]["scaleTargetRef"]["name"]
        scaled[target] = scaled.get(target, 0) + 1
        for trigger in doc["spec"].get("triggers", []):
            if trigger.get("type") == "rabbitmq":
                queue = trigger.get("metadata", {}).get("queueName")
                if queue not in queues:
                    fail(label, "ScaledObject %s watches queue %r, which topology/ does not declare" % (doc["metadata"]["name"], queue))
    for doc in by_kind.get("HorizontalPodAutoscaler", []):
        target = doc["spec"]["scaleTargetRef"]["name"]
        scaled[target] = scaled.get(target, 0) + 1
    for target, count in scaled.items():
        if count > 1:
            fail(label, "Deployment %s has %d autoscalers (KEDA makes its own HPA: never both)" % (target, count))
    return by_kind


def check_generated():
    """values.yaml, values.schema.json and README.md are what tests/generate.py makes."""
    import shutil
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(CHART, "tests", "generate.py")
        for extra in ([], ["readme"]):
            subprocess.run([sys.executable, script, folder] + extra, check=True, stdout=subprocess.DEVNULL)
        for name in ("values.yaml", "values.schema.json", "README.md"):
            if open(os.path.join(folder, name)).read() != open(os.path.join(CHART, name)).read():
                fail(name, "differs from what tests/generate.py makes: edit generate.py (or README.tmpl.md) and run it")


def main():
    check_generated()
    chart = Chart.load(CHART)
    domains = worker_domains()
    queues = topology_queues()
    sets = [("defaults", {})] + [(os.path.relpath(path, CHART), yaml.safe_load(open(path)) or {})
                                 for path in sorted(glob.glob(os.path.join(CHART, "ci", "*.yaml")))]
    if len(sets) < 4:
        fail("ci", "at least three value files are expected in charts/shopfleet/ci/")
    for label, values in sets:
        try:
            chart.validate_schema(values)
        except Exception as error:
            fail(label, "values.schema.json refuses these values: %s" % error)
            continue
        report = lint(CHART, values, strict=True, kube_version="v1.31.0")
        for message in report.get("messages", []):
            if message.get("severity", 0) >= 2:
                fail(label, "helm lint: %s %s" % (message.get("path"), message.get("error")))
        try:
            rendered = chart.render(values, name="shop", namespace="shop", is_install=True)
        except Exception as error:
            fail(label, "does not render: %s" % error)
            continue
        docs = list(documents(rendered))
        validate(label, docs)
        merged = chart.merge_values(values)
        by_kind = check_manifests(label, docs, merged, domains, queues)
        print("%-36s %3d manifests: %s" % (label, len(docs), ", ".join("%d %s" % (len(v), k) for k, v in sorted(by_kind.items()))))

    # A typo in a value is refused, naming it.
    for typo in [{"workers": {"orders": {"replica": 3}}}, {"edge": {"ingres": {"enabled": True}}}, {"workers": {"orders": {"replicas": "three"}}}]:
        try:
            chart.validate_schema(typo)
            fail("schema", "accepted %s" % json.dumps(typo))
        except Exception:
            pass

    if failures:
        print("\nchart check FAILED:")
        for failure in failures:
            print("  " + failure)
        sys.exit(1)
    print("chart check passed: %d value sets rendered, linted and validated (Kubernetes %s)" % (len(sets), " and ".join(KUBERNETES_VERSIONS)))


if __name__ == "__main__":
    main()
