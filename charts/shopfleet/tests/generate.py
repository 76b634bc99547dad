#!/usr/bin/env python3
"""Generates charts/shopfleet/values.yaml, values.schema.json and README.md (from README.tmpl.md)
from one description, so that every value has a comment, a type, `additionalProperties: false` at
each object level, and a row in the README. Edit this file, then run

    python3 charts/shopfleet/tests/generate.py [CHART_DIR] && python3 charts/shopfleet/tests/generate.py [CHART_DIR] readme

check_chart.py fails when the three files differ from what this generates."""
import json
import sys
import textwrap

import yaml

import os

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(HERE)


# ---------------------------------------------------------------------------------------------
# A tiny DSL: Leaf(key, default, comment, schema) and Obj(key, comment, children)
class Leaf:
    def __init__(self, key, default, comment, schema):
        self.key, self.default, self.comment, self.schema = key, default, comment, schema


class Obj:
    def __init__(self, key, comment, children, extra=None):
        self.key, self.comment, self.children, self.extra = key, comment, children, extra or {}


def S(t, **kw):
    d = {"type": t}
    d.update(kw)
    return d


STR = S("string")
INT = S("integer")
BOOL = S("boolean")
REF = lambda name: {"$ref": f"#/definitions/{name}"}  # noqa: E731

SECRET_KEYS = [
    "SHOPFLEET_AMQP_URL", "SHOPFLEET_AMQP_MANAGEMENT_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_REDIS_URL",
    "SHOPFLEET_PAYMENTS_API_KEY", "SHOPFLEET_SMTP_URL", "SHOPFLEET_WEBHOOK_SECRET", "SHOPFLEET_JWT_SIGNING_KEY",
    "SHOPFLEET_FLEET_SECRET",
]

DEFINITIONS = {
    "stringMap": {
        "type": "object",
        "description": "A map of strings (labels, annotations, node selectors).",
        "additionalProperties": {"type": "string"},
    },
    "envMap": {
        "type": "object",
        "description": "Extra plain environment variables (name: value). Secrets never go here: "
                       "a secret key is rejected; put it in the role's Secret.",
        "propertyNames": {
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "not": {"enum": SECRET_KEYS + [k + "_FILE" for k in SECRET_KEYS]},
        },
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    },
    "quantity": {"type": ["string", "number"]},
    "resourceName": {
        "description": "cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource (vendor/name).",
        "type": "string",
        "pattern": "^(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+|[a-z0-9.-]+/[A-Za-z0-9._-]+)$",
    },
    "resources": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "requests": {"type": "object", "propertyNames": {"$ref": "#/definitions/resourceName"},
                         "additionalProperties": {"$ref": "#/definitions/quantity"}},
            "limits": {"type": "object", "propertyNames": {"$ref": "#/definitions/resourceName"},
                       "additionalProperties": {"$ref": "#/definitions/quantity"}},
        },
    },
    "labelSelector": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "matchLabels": {"$ref": "#/definitions/stringMap"},
            "matchExpressions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "tolerations": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "key": {"type": "string"},
                "operator": {"type": "string", "enum": ["Exists", "Equal"]},
                "value": {"type": "string"},
                "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
                "tolerationSeconds": {"type": "integer"},
            },
        },
    },
    "affinity": {
        "type": "object",
        "description": "A Kubernetes Affinity; each part is passed through as written.",
        "additionalProperties": False,
        "properties": {
            "nodeAffinity": {"type": "object"},
            "podAffinity": {"type": "object"},
            "podAntiAffinity": {"type": "object"},
        },
    },
    "intOrPercent": {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": "^([0-9]+%)?$"},
        ]
    },
    "pdb": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean", "description": "Make a PodDisruptionBudget (policy/v1)."},
            "minAvailable": {"$ref": "#/definitions/intOrPercent",
                             "description": "Pods that must stay up; when set it is used instead of maxUnavailable."},
            "maxUnavailable": {"$ref": "#/definitions/intOrPercent",
                               "description": "Pods a voluntary disruption may take down at once."},
        },
    },
    "imagePullSecrets": {
        "type": "array",
        "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
    },
    "networkPeer": {
        "type": "object",
        "description": "A NetworkPolicyPeer: an ipBlock, or namespace and/or pod selectors.",
        "additionalProperties": False,
        "properties": {
            "ipBlock": {
                "type": "object", "additionalProperties": False, "required": ["cidr"],
                "properties": {"cidr": {"type": "string"}, "except": {"type": "array", "items": {"type": "string"}}},
            },
            "namespaceSelector": {"$ref": "#/definitions/labelSelector"},
            "podSelector": {"$ref": "#/definitions/labelSelector"},
        },
    },
    "egressTarget": {
        "type": "array",
        "items": {
            "type": "object",
            "description": "A destination: cidr (with optional except) or namespace/pod selectors, and its TCP ports "
                           "(none: every port).",
            "additionalProperties": False,
            "anyOf": [{"required": ["cidr"]}, {"required": ["namespaceSelector"]}, {"required": ["podSelector"]}],
            "properties": {
                "cidr": {"type": "string"},
                "except": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {"$ref": "#/definitions/labelSelector"},
                "podSelector": {"$ref": "#/definitions/labelSelector"},
                "ports": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
            },
        },
    },
    "duration": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
}


def secret_obj(keys, optional=(), comment_extra=""):
    children = []
    for k in keys:
        children.append(Leaf(k, "", ("Optional. " if k in optional else "") + KEY_DOCS[k], STR))
    return Obj("secret",
               "Values of the Secret the chart makes when existingSecret is empty (keys are the environment "
               "variable names; an empty value is left out). Prefer existingSecret outside development."
               + comment_extra, children)


KEY_DOCS = {
    "SHOPFLEET_AMQP_URL": "RabbitMQ URL of this role's own broker user (amqp://shopfleet-<role>:…@host:5672/vhost).",
    "SHOPFLEET_DATABASE_URL": "PostgreSQL URL of this role's own database role (postgres://shopfleet_<role>:…@host:5432/shopfleet).",
    "SHOPFLEET_REDIS_URL": "Redis URL (redis://:password@host:6379/0).",
    "SHOPFLEET_PAYMENTS_API_KEY": "The payment gateway's secret key (also read by the payments sandbox).",
    "SHOPFLEET_SMTP_URL": "Mail server, smtp://[user:password@]host:port[?starttls=…]; empty with smtpSink.enabled: the sink.",
    "SHOPFLEET_WEBHOOK_SECRET": "HMAC-SHA256 key of X-Shopfleet-Signature; required when webhookUrl is set.",
    "SHOPFLEET_JWT_SIGNING_KEY": "Identity's Ed25519 signing key, <kid>:<base64url seed> (shopfleet keys generate).",
    "SHOPFLEET_JWT_PUBLIC_KEYS": "Public keys the edge verifies tokens with, <kid>:<base64url x>[,…] (used when edge.jwtPublicKeys is empty).",
    "SHOPFLEET_FLEET_SECRET": "The operator's fleet secret (32 bytes or more) every service password derives from.",
    "SHOPFLEET_AMQP_MANAGEMENT_URL": "RabbitMQ management API URL of the operator (administrator tag), for topology apply.",
}

ROLES = [
    # role, main queue, secret keys, optional keys, description
    ("catalog", "catalog.commands", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL"], [],
     "Products and prices."),
    ("inventory", "inventory.commands", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL"], [],
     "Stock and reservations."),
    ("orders", "orders.commands", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL"], [],
     "Orders and the checkout saga."),
    ("payments", "payments.commands", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_PAYMENTS_API_KEY"], [],
     "Payments through a Stripe-compatible gateway."),
    ("notifications", ["notifications.order-events", "notifications.commands"],
     ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_SMTP_URL", "SHOPFLEET_WEBHOOK_SECRET"],
     ["SHOPFLEET_WEBHOOK_SECRET"], "Customer emails (SMTP) and signed webhooks."),
    ("search", "search.updates", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL"], [],
     "The search read model (PostgreSQL full-text and trigram)."),
    ("identity", "identity.queries", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_JWT_SIGNING_KEY"], [],
     "Customers, sessions, access tokens (holds the signing key)."),
    ("cart", "cart.queries", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_REDIS_URL"], [],
     "Carts in Redis."),
    ("deadletters", "shopfleet.dead-letters", ["SHOPFLEET_AMQP_URL", "SHOPFLEET_DATABASE_URL"], [],
     "The dead-letter store."),
]


def scheduling():
    return [
        Leaf("nodeSelector", {}, "Node labels the pods must match.", REF("stringMap")),
        Leaf("tolerations", [], "Tolerations of the pods.", REF("tolerations")),
        Leaf("affinity", {}, "Affinity of the pods (nodeAffinity, podAffinity, podAntiAffinity).", REF("affinity")),
    ]


def queue_phrase(queue):
    """`queue` is a name, or a list of names (one KEDA trigger each; KEDA takes the largest)."""
    if isinstance(queue, str):
        return f"the queue {queue}"
    return "the queues " + " and ".join(queue) + " (a trigger each)"


def autoscaling(for_edge=False, minimum=1, maximum=4, queue=None):
    children = [
        Leaf("mode", "none",
             "none: a fixed `replicas`; hpa: an autoscaling/v2 HorizontalPodAutoscaler on CPU; keda: a KEDA ScaledObject "
             + ("(a cpu trigger)." if for_edge else f"on the length of {queue_phrase(queue)} (rabbitmq trigger, management API)."),
             S("string", enum=["none", "hpa", "keda"])),
        Leaf("minReplicas", minimum, "Fewest replicas" + ("." if for_edge else " (keda may go to 0; hpa at least 1)."),
             S("integer", minimum=0)),
        Leaf("maxReplicas", maximum, "Most replicas.", S("integer", minimum=1)),
    ]
    if not for_edge:
        children.append(Leaf("queueLength", 20, "keda: messages waiting in the queue per replica (QueueLength target).",
                             S("integer", minimum=1)))
    children.append(Leaf("targetCPUUtilizationPercentage", 70 if for_edge else 75,
                         "hpa" + (" and keda" if for_edge else "") + ": average CPU use, in percent of the request, to aim for.",
                         S("integer", minimum=1, maximum=100)))
    return Obj("autoscaling", "Autoscaling; `replicas` is left out of the Deployment when mode is not none.", children)


def pdb():
    return Obj("pdb", "PodDisruptionBudget (policy/v1).", [
        Leaf("enabled", True, "Make a PodDisruptionBudget.", BOOL),
        Leaf("minAvailable", "", "Pods that must stay up (a number or a percentage); when set it is used instead of maxUnavailable.",
             REF("intOrPercent")),
        Leaf("maxUnavailable", 1, "Pods a voluntary disruption (a drain) may take down at once.", REF("intOrPercent")),
    ])


def resources(req_cpu, req_mem, lim_cpu, lim_mem, comment):
    return Leaf("resources", {"requests": {"cpu": req_cpu, "memory": req_mem}, "limits": {"cpu": lim_cpu, "memory": lim_mem}},
                comment, REF("resources"))


ROLE_EXTRAS = {
    "orders": [Obj("checkout", "The checkout saga's timing (SHOPFLEET_CHECKOUT_*).", [
        Leaf("resendAfter", "10s", "A step without an answer is sent again after this, then after twice as long each time.", REF("duration")),
        Leaf("resendLimit", "1m", "The longest wait between two sends of a step.", REF("duration")),
        Leaf("reserveTimeout", "5m", "How long to wait for inventory before cancelling.", REF("duration")),
        Leaf("paymentTimeout", "5m", "How long to wait for an authorization before voiding and cancelling.", REF("duration")),
        Leaf("stepTimeout", "5m", "How long to wait on any other step before compensating.", REF("duration")),
    ])],
    "inventory": [Leaf("reservationTtl", "15m", "How long inventory holds an order's stock unless committed "
                       "(SHOPFLEET_CHECKOUT_RESERVATION_TTL).", REF("duration"))],
    "payments": [Leaf("gatewayUrl", "", "The Stripe-compatible gateway (SHOPFLEET_PAYMENTS_URL); empty: the payments "
                      "sandbox's Service when paymentsSandbox.enabled, else the process default (127.0.0.1:12111).", STR)],
    "notifications": [
        Leaf("mailFrom", "Shopfleet <orders@shopfleet.local>", "From of customer emails (SHOPFLEET_MAIL_FROM).", STR),
        Leaf("webhookUrl", "", "Where order events are POSTed, signed (SHOPFLEET_WEBHOOK_URL); empty: no webhooks. Needs "
             "SHOPFLEET_WEBHOOK_SECRET in the Secret.", STR),
    ],
    "identity": [Leaf("accessTokenTtl", "15m", "Lifetime of an access token (SHOPFLEET_ACCESS_TOKEN_TTL).", REF("duration"))],
    "cart": [Leaf("cartTtl", "168h", "A cart not touched for this long is gone (SHOPFLEET_CART_TTL).", REF("duration"))],
}


def worker(role, queue, keys, optional, desc):
    children = [
        Leaf("enabled", True, "Run this worker.", BOOL),
        Leaf("replicas", 1, "Replicas when autoscaling.mode is none (each competes on the same queues).", S("integer", minimum=0)),
        resources("50m", "64Mi", "1", "128Mi",
                  "Requests and limits; a worker is 31-36 MB resident idle and about 35-52 MB under load."),
        Leaf("prefetch", 1, "Unacknowledged deliveries per consumer (SHOPFLEET_WORKER_PREFETCH); keep 1 (README: RabbitMQ "
             "counts every delivery a dead consumer held towards the delivery limit).", S("integer", minimum=1)),
        Leaf("concurrency", 8, "Handlers in flight per queue (SHOPFLEET_WORKER_CONCURRENCY).", S("integer", minimum=1)),
        Leaf("batch", 16, "Messages a consumer handles in one transaction, from those already waiting (SHOPFLEET_WORKER_BATCH); "
             "1 handles each alone.", S("integer", minimum=1, maximum=1000)),
        autoscaling(queue=queue),
        pdb(),
        Leaf("env", {}, "Extra plain environment variables for this role (in its ConfigMap); never secrets.", REF("envMap")),
        Leaf("existingSecret", "", "Name of a Secret you made with this role's keys ("
             + ", ".join(k + (" optional" if k in optional else "") for k in keys)
             + "); empty: the chart makes one from `secret`.", STR),
        secret_obj(keys, optional),
    ] + ROLE_EXTRAS.get(role, []) + scheduling()
    main = queue if isinstance(queue, str) else " and ".join(queue)
    return Obj(role, f"{role}: {desc} {'Main queue' if isinstance(queue, str) else 'Main queues'}: {main}. Broker user shopfleet-{role}, database role shopfleet_{role}.",
               children)


def selector_leaf(key, default, comment):
    return Leaf(key, default, comment, REF("labelSelector"))


VALUES = [
    Leaf("nameOverride", "", "Replaces the chart name in resource names and the app.kubernetes.io/name label.", STR),
    Leaf("fullnameOverride", "", "Replaces <release>-<chart> as the prefix of every resource name.", STR),
    Obj("image", "The one Shopfleet image every role runs (ENTRYPOINT shopfleet, uid 10001).", [
        Leaf("repository", "ghcr.io/shopfleet/shopfleet", "Image repository.", S("string", minLength=1)),
        Leaf("tag", "", "Image tag; empty: the chart's appVersion.", STR),
        Leaf("digest", "", "Image digest (sha256:…); when set it is used instead of the tag.", S("string", pattern="^(sha256:[a-f0-9]{64})?$")),
        Leaf("pullPolicy", "IfNotPresent", "Image pull policy.", S("string", enum=["Always", "IfNotPresent", "Never"])),
    ]),
    Leaf("imagePullSecrets", [], "Secrets to pull the images with, e.g. [{name: ghcr}].", REF("imagePullSecrets")),
    Leaf("commonLabels", {}, "Labels added to every resource.", REF("stringMap")),
    Leaf("podAnnotations", {}, "Annotations added to every pod.", REF("stringMap")),
    Leaf("podLabels", {}, "Labels added to every pod.", REF("stringMap")),
    Obj("serviceAccount", "One ServiceAccount per role (automountServiceAccountToken false: no pod talks to the API server).", [
        Leaf("annotations", {}, "Annotations on every ServiceAccount (e.g. a cloud workload identity).", REF("stringMap")),
    ]),
    Obj("rabbitmq", "Where RabbitMQ is. Informative (NOTES, README); the URLs with passwords come from the Secrets. "
        "vhost is used by the topology job and KEDA.", [
        Leaf("host", "", "Host name of the broker.", STR),
        Leaf("port", 5672, "AMQP port.", S("integer", minimum=1, maximum=65535)),
        Leaf("managementPort", 15672, "Management API port.", S("integer", minimum=1, maximum=65535)),
        Leaf("vhost", "/", "Virtual host of the fleet (topology apply --vhost, KEDA vhostName).", S("string", minLength=1)),
    ]),
    Obj("postgresql", "Where PostgreSQL is. Informative; the URLs come from the Secrets.", [
        Leaf("host", "", "Host name of the database server.", STR),
        Leaf("port", 5432, "PostgreSQL port.", S("integer", minimum=1, maximum=65535)),
        Leaf("database", "shopfleet", "Database name (owned by the migrations identity shopfleet_migrator).", STR),
    ]),
    Obj("redis", "Where Redis is (cart, edge). Informative; the URL comes from the Secrets.", [
        Leaf("host", "", "Host name of Redis.", STR),
        Leaf("port", 6379, "Redis port.", S("integer", minimum=1, maximum=65535)),
    ]),
    Obj("config", "Plain settings every Shopfleet pod gets (in its role's ConfigMap).", [
        Leaf("logLevel", "info", "SHOPFLEET_LOG_LEVEL; logs are JSON lines on stderr.",
             S("string", enum=["trace", "debug", "info", "notice", "warning", "error", "critical"])),
        Leaf("threadSpinUs", 0, "SHOPFLEET_THREAD_SPIN_US: microseconds a connection thread spins before sleeping (0: off).",
             S("integer", minimum=0)),
        Leaf("env", {}, "Extra plain environment variables for every Shopfleet pod; never secrets.", REF("envMap")),
    ]),
    Obj("operator", "The operator's identity, for the migrate and topology jobs and for `shopfleet saga|dlq|admin` run "
        "by hand. Never given to a worker or the edge.", [
        Leaf("existingSecret", "", "Name of a Secret you made with SHOPFLEET_DATABASE_URL (the migrations identity), "
             "SHOPFLEET_FLEET_SECRET, SHOPFLEET_AMQP_MANAGEMENT_URL and optionally SHOPFLEET_AMQP_URL (the operator's broker "
             "user, for saga retry/cancel, dlq replay, dev seed); empty: the chart makes one (a pre-install/pre-upgrade hook, "
             "so it exists before the jobs; it is kept after uninstall).", STR),
        Obj("secret", "Values of the operator Secret the chart makes when existingSecret is empty.", [
            Leaf("SHOPFLEET_DATABASE_URL", "", "PostgreSQL URL of the migrations identity (shopfleet_migrator), which owns the database.", STR),
            Leaf("SHOPFLEET_FLEET_SECRET", "", KEY_DOCS["SHOPFLEET_FLEET_SECRET"], STR),
            Leaf("SHOPFLEET_AMQP_MANAGEMENT_URL", "", KEY_DOCS["SHOPFLEET_AMQP_MANAGEMENT_URL"], STR),
            Leaf("SHOPFLEET_AMQP_URL", "", "The operator's AMQP URL (optional; saga retry/cancel, dlq replay, dev seed).", STR),
        ]),
    ]),
    Obj("jobs", "Helm hooks (pre-install, pre-upgrade) run with the operator Secret before the workers start.", [
        Obj("migrate", "`shopfleet migrate`: each worker's database role and schema, then the migrations.", [
            Leaf("enabled", True, "Run the migrate job.", BOOL),
            Leaf("backoffLimit", 3, "Retries before the job (and the install or upgrade) fails.", S("integer", minimum=0)),
            Leaf("activeDeadlineSeconds", 600, "Longest the job may run.", S("integer", minimum=1)),
        ]),
        Obj("topology", "`shopfleet topology apply`: exchanges, queues, policies and each service's broker user.", [
            Leaf("enabled", True, "Run the topology job.", BOOL),
            Leaf("backoffLimit", 3, "Retries before the job (and the install or upgrade) fails.", S("integer", minimum=0)),
            Leaf("activeDeadlineSeconds", 300, "Longest the job may run.", S("integer", minimum=1)),
        ]),
        resources("50m", "64Mi", "1", "256Mi", "Requests and limits of the job pods."),
    ] + scheduling()),
    Obj("edge", "The HTTP edge: the public API (/v1, /openapi.yaml), the storefront (/) and the operations console "
        "(/console) on 8080, ops endpoints on 9090. Broker user shopfleet-edge (tag management: its own vhost only), no database.", [
        Leaf("enabled", True, "Run the edge.", BOOL),
        Leaf("replicas", 2, "Replicas when autoscaling.mode is none.", S("integer", minimum=0)),
        resources("100m", "128Mi", "1", "256Mi", "Requests and limits of the edge."),
        Leaf("rateLimit", 50, "Requests a second per client, bursts of twice that (SHOPFLEET_EDGE_RATE_LIMIT).", S("integer", minimum=1)),
        Leaf("registrationsPerHour", 20, "Accounts one client may register in an hour (SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR).",
             S("integer", minimum=1)),
        Leaf("queryTimeout", "5s", "How long the edge waits for a service's answer before 504 (SHOPFLEET_EDGE_QUERY_TIMEOUT).",
             REF("duration")),
        Leaf("trustedProxies", [], "Addresses or CIDR ranges of the proxies in front of the edge (the Ingress controller's "
             "pods): only their X-Forwarded-For names the client (SHOPFLEET_EDGE_TRUSTED_PROXIES).",
             S("array", items=S("string", minLength=1))),
        Leaf("jwtPublicKeys", "", "Public keys tokens are verified with, <kid>:<base64url x>[,…] (not secret; in the "
             "ConfigMap). Empty: SHOPFLEET_JWT_PUBLIC_KEYS from the edge's Secret.", STR),
        Leaf("managementUrl", "", "The RabbitMQ management API the console's fleet view reads, without a user or password "
             "(SHOPFLEET_EDGE_MANAGEMENT_URL; the edge signs in as its own broker user, tagged management). Empty: "
             "operator.secret.SHOPFLEET_AMQP_MANAGEMENT_URL without its user and password, else "
             "http://<rabbitmq.host>:<rabbitmq.managementPort>, else none (the fleet view answers 503).",
             S("string", pattern="^(https?://[^/@\\s]+(/[^@\\s]*)?)?$")),
        Leaf("env", {}, "Extra plain environment variables for the edge; never secrets.", REF("envMap")),
        Leaf("existingSecret", "", "Name of a Secret you made with SHOPFLEET_AMQP_URL, SHOPFLEET_REDIS_URL (and "
             "SHOPFLEET_JWT_PUBLIC_KEYS when jwtPublicKeys is empty); empty: the chart makes one from `secret`.", STR),
        secret_obj(["SHOPFLEET_AMQP_URL", "SHOPFLEET_REDIS_URL", "SHOPFLEET_JWT_PUBLIC_KEYS"], ["SHOPFLEET_JWT_PUBLIC_KEYS"]),
        Obj("service", "The edge's Service: port http (the API) and port ops (9090, metrics).", [
            Leaf("type", "ClusterIP", "Service type.", S("string", enum=["ClusterIP", "NodePort", "LoadBalancer"])),
            Leaf("port", 8080, "Service port of the API.", S("integer", minimum=1, maximum=65535)),
            Leaf("annotations", {}, "Annotations on the Service.", REF("stringMap")),
        ]),
        Obj("ingress", "An Ingress to the edge (paths /v1, /openapi.yaml, / (the storefront), /console and /assets only; "
            "the ops port is never exposed).", [
            Leaf("enabled", False, "Make the Ingress.", BOOL),
            Leaf("className", "", "IngressClass name; empty: the cluster default.", STR),
            Leaf("host", "shop.example.com", "Host name the API and the pages answer on.", S("string", minLength=1)),
            Leaf("annotations", {}, "Annotations on the Ingress.", REF("stringMap")),
            Obj("tls", "TLS for the host.", [
                Leaf("secretName", "", "Secret holding the certificate; empty with certManager.clusterIssuer set: "
                     "<fullname>-edge-tls (made by cert-manager); empty otherwise: no TLS.", STR),
            ]),
            Obj("certManager", "cert-manager.", [
                Leaf("clusterIssuer", "", "ClusterIssuer for the certificate (annotation cert-manager.io/cluster-issuer); empty: none.", STR),
            ]),
        ]),
        autoscaling(for_edge=True, minimum=2, maximum=10),
        pdb(),
    ] + scheduling()),
    Obj("workers", "One Deployment per enabled worker: `shopfleet worker <role> --port 9090`.",
        [worker(*r) for r in ROLES]),
    Obj("paymentsSandbox", "Development only: `shopfleet payments-sandbox`, a local Stripe-compatible gateway on 12111. "
        "It has a Secret of its own with SHOPFLEET_PAYMENTS_API_KEY (the payments worker's key); the payments worker "
        "uses the sandbox when workers.payments.gatewayUrl is empty.", [
        Leaf("enabled", False, "Run the sandbox.", BOOL),
        resources("50m", "64Mi", "500m", "128Mi", "Requests and limits of the sandbox."),
        Leaf("env", {}, "Extra plain environment variables for the sandbox; never secrets.", REF("envMap")),
        Leaf("existingSecret", "", "Name of a Secret you made with SHOPFLEET_PAYMENTS_API_KEY (the same key as the "
             "payments worker's); empty: the chart makes one from `secret`.", STR),
        Obj("secret", "Values of the sandbox's Secret the chart makes when existingSecret is empty.", [
            Leaf("SHOPFLEET_PAYMENTS_API_KEY", "", "The key the sandbox accepts; empty: "
                 "workers.payments.secret.SHOPFLEET_PAYMENTS_API_KEY.", STR),
        ]),
    ]),
    Obj("smtpSink", "Development only: an SMTP server that keeps every mail (any image listening on `port`). The "
        "notifications worker's chart-made Secret points at it when SHOPFLEET_SMTP_URL is empty.", [
        Leaf("enabled", False, "Run the SMTP sink.", BOOL),
        Obj("image", "The sink's image (Mailpit by default; its web UI is on 8025: kubectl port-forward).", [
            Leaf("repository", "axllent/mailpit", "Image repository.", S("string", minLength=1)),
            Leaf("tag", "v1.31.3", "Image tag.", S("string", minLength=1)),
            Leaf("pullPolicy", "IfNotPresent", "Image pull policy.", S("string", enum=["Always", "IfNotPresent", "Never"])),
        ]),
        Leaf("port", 2525, "The SMTP port the image listens on.", S("integer", minimum=1, maximum=65535)),
        Leaf("args", [], "Arguments of the container (empty: the image's own).", S("array", items=STR)),
        Leaf("env", {"MP_SMTP_BIND_ADDR": "0.0.0.0:2525", "MP_UI_BIND_ADDR": "0.0.0.0:8025"},
             "Environment of the container (Mailpit's listen addresses by default).", REF("envMap")),
        Leaf("runAsUser", 10001, "User id the sink runs as (non-root).", S("integer", minimum=1)),
        resources("10m", "32Mi", "250m", "128Mi", "Requests and limits of the sink."),
    ]),
    Obj("keda", "KEDA settings shared by every ScaledObject (workers with autoscaling.mode keda).", [
        Leaf("pollingInterval", 15, "Seconds between two looks at the queues.", S("integer", minimum=1)),
        Leaf("cooldownPeriod", 300, "Seconds after the last activity before scaling to minReplicas 0.", S("integer", minimum=0)),
        Obj("managementSecret", "The Secret KEDA's TriggerAuthentication reads `host` (a RabbitMQ management URL, "
            "http://user:password@host:15672, ideally a user with the monitoring tag) from.", [
            Leaf("name", "", "Name of an existing Secret; empty: the chart makes <fullname>-keda-rabbitmq from `url`.", STR),
            Leaf("key", "url", "Key of the management URL in that Secret.", S("string", minLength=1)),
            Leaf("url", "", "Management URL for the Secret the chart makes when name is empty.", STR),
        ]),
    ]),
    Obj("networkPolicy", "NetworkPolicies: deny everything for the release's pods, then allow what each role needs.", [
        Leaf("enabled", True, "Make the NetworkPolicies.", BOOL),
        Leaf("edgeFrom", [], "Who may reach the edge's API port 8080 (NetworkPolicyPeers, e.g. the Ingress controller's "
             "namespace); empty: anyone.", S("array", items=REF("networkPeer"))),
        Leaf("prometheus", [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
             "Who may scrape the ops port 9090 of the edge and the workers (NetworkPolicyPeers: Prometheus); "
             "empty: nobody. A list, so that yours replaces this one.", S("array", items=REF("networkPeer"))),
        Leaf("dns", [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "Where the cluster DNS is (NetworkPolicyPeers); every pod may reach it on UDP and TCP 53. Empty: port 53 "
             "anywhere (e.g. NodeLocal DNSCache).", S("array", items=REF("networkPeer"))),
        Obj("egress", "Where pods may connect, as lists of {cidr, except, ports} or {namespaceSelector, podSelector, ports}. "
            "The defaults allow the usual ports to any address: narrow them to your servers.", [
            Leaf("broker", [{"cidr": "0.0.0.0/0", "ports": [5671, 5672]}], "RabbitMQ (AMQP): every worker and the edge.",
                 REF("egressTarget")),
            Leaf("brokerManagement", [{"cidr": "0.0.0.0/0", "ports": [15671, 15672]}],
                 "RabbitMQ management API: the topology job, and the edge when it has a management URL (the console's "
                 "fleet view).", REF("egressTarget")),
            Leaf("database", [{"cidr": "0.0.0.0/0", "ports": [5432]}], "PostgreSQL: every worker and the migrate job.",
                 REF("egressTarget")),
            Leaf("redis", [{"cidr": "0.0.0.0/0", "ports": [6379]}], "Redis: cart and the edge.", REF("egressTarget")),
            Leaf("gateway", [{"cidr": "0.0.0.0/0", "ports": [443]}], "The payment gateway: payments.", REF("egressTarget")),
            Leaf("smtp", [{"cidr": "0.0.0.0/0", "ports": [25, 465, 587]}], "The mail server: notifications.", REF("egressTarget")),
            Leaf("webhook", [{"cidr": "0.0.0.0/0", "ports": [443]}],
                 "Webhook receivers: notifications, when workers.notifications.webhookUrl is set.", REF("egressTarget")),
        ]),
    ]),
    Obj("metrics", "Prometheus Operator resources.", [
        Obj("serviceMonitor", "A ServiceMonitor (monitoring.coreos.com/v1) scraping /metrics on the ops port of the edge "
            "and of each worker (each worker has a headless Service for it).", [
            Leaf("enabled", False, "Make the ServiceMonitor.", BOOL),
            Leaf("interval", "30s", "Scrape interval.", REF("duration")),
            Leaf("scrapeTimeout", "10s", "Scrape timeout.", REF("duration")),
            Leaf("labels", {}, "Labels on the ServiceMonitor (what your Prometheus selects, e.g. release: kube-prometheus-stack).",
                 REF("stringMap")),
        ]),
        Obj("prometheusRule", "A PrometheusRule with the dead-letter alerts of docs/dead-letters.md.", [
            Leaf("enabled", False, "Make the PrometheusRule.", BOOL),
            Leaf("labels", {}, "Labels on the PrometheusRule (what your Prometheus selects).", REF("stringMap")),
            Leaf("oldestWaitingSeconds", 900, "ShopfleetDeadLettersWaiting: fire when the oldest waiting letter is older (s).",
                 S("integer", minimum=1)),
            Leaf("pilingThreshold", 50, "ShopfleetDeadLettersPiling: fire when one queue stores more letters in 10 minutes.",
                 S("integer", minimum=1)),
        ]),
    ]),
]


# ---------------------------------------------------------------------------------------------
def schema_of(node):
    if isinstance(node, Leaf):
        s = dict(node.schema)
        s.setdefault("description", node.comment)
        return s
    props = {c.key: schema_of(c) for c in node.children}
    s = {"type": "object", "description": node.comment, "additionalProperties": False, "properties": props}
    s.update(node.extra)
    return s


class FlowDumper(yaml.SafeDumper):
    pass


def _repr_list(dumper, data):
    flow = all(not isinstance(x, (dict, list)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


FlowDumper.add_representer(list, _repr_list)


def dump_value(key, value, indent):
    pad = " " * indent
    if isinstance(value, (dict, list)) and value:
        if isinstance(value, list) and all(not isinstance(x, (dict, list)) for x in value):
            return f"{pad}{quote_key(key)}: " + yaml.dump(value, Dumper=FlowDumper, width=200).strip() + "\n"
        body = yaml.dump(value, Dumper=FlowDumper, default_flow_style=False, sort_keys=False, width=200, allow_unicode=True)
        body = textwrap.indent(body, pad + "  ")
        return f"{pad}{quote_key(key)}:\n{body}"
    if isinstance(value, dict):
        return f"{pad}{quote_key(key)}: {{}}\n"
    if isinstance(value, list):
        return f"{pad}{quote_key(key)}: []\n"
    if isinstance(value, bool):
        return f"{pad}{quote_key(key)}: {'true' if value else 'false'}\n"
    if isinstance(value, int):
        return f"{pad}{quote_key(key)}: {value}\n"
    scalar = yaml.safe_dump(value, allow_unicode=True, width=1000).strip()
    if scalar.endswith("\n..."):
        scalar = scalar[:-4].strip()
    if scalar.endswith("..."):
        scalar = scalar[:-3].strip()
    return f"{pad}{quote_key(key)}: {scalar}\n"


def quote_key(k):
    return k


def comment(text, indent):
    pad = " " * indent
    lines = textwrap.wrap(text, width=max(40, 110 - indent))
    return "".join(f"{pad}# {line}\n" for line in lines)


def emit(nodes, indent=0):
    out = []
    for n in nodes:
        if indent == 0 or (indent == 2 and isinstance(n, Obj)):
            out.append("\n")
        out.append(comment(n.comment, indent))
        if isinstance(n, Leaf):
            out.append(dump_value(n.key, n.default, indent))
        else:
            out.append(f"{' ' * indent}{n.key}:\n")
            out.append("".join(emit(n.children, indent + 2)))
    return out


HEADER = """\
# Default values for the Shopfleet chart. Every value is typed in values.schema.json, which rejects
# unknown keys (a typo such as workers.orders.replica fails `helm install`).
#
# Secrets: every role reads its own Secret only (docs/security.md). For each role either name a
# Secret you made (`existingSecret`) or let the chart make one from `secret` (development). Keys are
# the environment variable names (SHOPFLEET_AMQP_URL, …). Nothing secret goes in `env` or a ConfigMap.
"""


def main():
    values_text = HEADER + "".join(emit(VALUES))
    with open(f"{CHART}/values.yaml", "w") as f:
        f.write(values_text)
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the shopfleet chart",
        "type": "object",
        "additionalProperties": False,
        "definitions": DEFINITIONS,
        "properties": {n.key: schema_of(n) for n in VALUES},
    }
    # Helm passes `global` to every chart (and a parent chart to its subcharts): allow it.
    schema["properties"]["global"] = {"type": "object", "description": "Helm's global values (unused by this chart)."}
    with open(f"{CHART}/values.schema.json", "w") as f:
        json.dump(schema, f, indent=2, ensure_ascii=False)
        f.write("\n")
    # Self-check: the defaults parse back and match the schema.
    loaded = yaml.safe_load(values_text)
    import jsonschema
    jsonschema.Draft7Validator(schema).validate(loaded)
    print("ok", len(values_text.splitlines()), "lines of values")


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------
# README values table
def fmt_default(v):
    if isinstance(v, str):
        return '`""`' if v == "" else f"`{v}`"
    if isinstance(v, bool):
        return f"`{'true' if v else 'false'}`"
    if isinstance(v, (dict, list)):
        if not v:
            return "`{}`" if isinstance(v, dict) else "`[]`"
        return "`" + json.dumps(v, separators=(",", ":")) + "`"
    return f"`{v}`"


def rows(nodes, prefix):
    out = []
    for n in nodes:
        path = f"{prefix}{n.key}"
        if isinstance(n, Leaf):
            out.append((path, fmt_default(n.default), n.comment))
        elif n.key == "workers" and prefix == "":
            out.append(("workers", "", n.comment + " Roles: " + ", ".join(f"`{r[0]}`" for r in ROLES)
                        + ". Each has the keys below (defaults identical for every role)."))
            catalog = next(c for c in n.children if c.key == "catalog")
            for c in catalog.children:
                if c.key == "secret":
                    out.append(("workers.&lt;role&gt;.secret.&lt;KEY&gt;", '`""`',
                                "Values of the Secret the chart makes when existingSecret is empty; the keys a role "
                                "accepts are in the table of roles above (any other key is rejected)."))
                elif isinstance(c, Leaf):
                    out.append((f"workers.&lt;role&gt;.{c.key}", fmt_default(c.default), c.comment))
                else:
                    out.extend(rows([c], "workers.&lt;role&gt;."))
            for role, extras in ROLE_EXTRAS.items():
                out.extend(rows(extras, f"workers.{role}."))
        elif n.key == "secret":
            for c in n.children:
                out.append((f"{path}.{c.key}", fmt_default(c.default), c.comment))
        else:
            out.extend(rows(n.children, path + "."))
    return out


def readme_table():
    lines = ["| value | default | what |", "|---|---|---|"]
    for path, default, text in rows(VALUES, ""):
        parts = text.replace("|", "\\|").split("`")
        text = "`".join(x if i % 2 else x.replace("<", "&lt;").replace(">", "&gt;") for i, x in enumerate(parts))
        text = text.replace("the queue catalog.commands", "the role's main queue (table of roles)")
        lines.append(f"| `{path}` | {default} | {text} |".replace("`workers.&lt;role&gt;", "`workers.<role>").replace("&lt;KEY&gt;`", "<KEY>`"))
    return "\n".join(lines)


def write_readme():
    tmpl = open(os.path.join(HERE, "README.tmpl.md")).read()
    with open(f"{CHART}/README.md", "w") as f:
        f.write(tmpl.replace("{{VALUES_TABLE}}", readme_table()))


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[2] == "readme":
    write_readme()
    print("readme written")
