"""Who reaches MLflow and its PostgreSQL on a Kubeflow cluster, decided offline.

A Kubeflow install (kubeflow/manifests 26.03) runs the kubeflow namespace with the
NetworkPolicy default-allow-same-namespace and Istio sidecars, under the mesh-wide
AuthorizationPolicy global-deny-all; profile namespaces (multi-user) are labelled
app.kubernetes.io/part-of=kubeflow-profile and inject sidecars too; Kubeflow
Pipelines starts its pods without one. Those facts are modelled here; the rest
comes from the rendered overlays. The tests

- validate every rendered AuthorizationPolicy against Istio's own CRD schema
  (tests/schemas/istio-authorizationpolicy.yaml), strictly, as the API server would;
- decide reachability with a small NetworkPolicy evaluator (pod and namespace
  selectors, additive rules, policy types, ports, both directions) and an
  AuthorizationPolicy evaluator (sidecars, mTLS identities, ALLOW/DENY), for the
  single-user layout (pipelines in kubeflow) and the multi-user one (pipelines in
  profile namespaces), and check the result against the table in docs/deploy.md.
"""

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml

from scarletnas import trainjob
from scarletnas.config import PipelineConfig, ResourcesConfig
from scarletnas.nodes import MLFLOW_CLIENT_LABEL, Nodes

from .test_deploy import render

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "tests" / "schemas" / "istio-authorizationpolicy.yaml").read_text())
WITH_POSTGRES = ["overlays/minio", "overlays/aws"]
OVERLAYS = WITH_POSTGRES + ["overlays/external-db"]
INJECT = "sidecar.istio.io/inject"
ROOT_NAMESPACE = "istio-system"  # Istio's root namespace: its policies apply mesh-wide
PROFILE = "kubeflow-user-example-com"

# ---- what a Kubeflow 26.03 install brings (kubeflow/manifests) ---------------------------
# common/kubeflow-namespace/base/kubeflow/namespace.yaml
KUBEFLOW_LABELS = {"control-plane": "kubeflow", "istio-injection": "enabled",
                   "pod-security.kubernetes.io/enforce": "restricted"}
# a Profile's namespace: the profile controller sets istio-injection=enabled, plus
# applications/profiles/upstream/base/namespace-labels.yaml
PROFILE_LABELS = {"istio-injection": "enabled",
                  "app.kubernetes.io/part-of": "kubeflow-profile",
                  "pipelines.kubeflow.org/enabled": "true",
                  "katib.kubeflow.org/metrics-collector-injection": "enabled",
                  "serving.kubeflow.org/inferenceservice": "enabled"}
# common/kubeflow-namespace/base/kubeflow/default-allow-same-namespace.yaml
DEFAULT_ALLOW_SAME_NAMESPACE = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "default-allow-same-namespace", "namespace": "kubeflow"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
             "ingress": [{"from": [{"podSelector": {}}]}]}}
# common/istio/istio-install/base/deny_all_authorizationpolicy.yaml: an ALLOW policy
# with no rules, in the root namespace, matches nothing and so denies everything
GLOBAL_DENY_ALL = {"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "global-deny-all", "namespace": ROOT_NAMESPACE},
                   "spec": {}}


@functools.cache
def _rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render(overlay))


def rendered(overlay: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(overlay)))


# ---- the AuthorizationPolicies against Istio's CRD schema ---------------------------------
def _strict(schema: dict) -> dict:
    """The schema as the API server applies it: a field it does not declare is an
    error (kubectl's default field validation), unless the schema keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


# The CEL rules (x-kubernetes-validations) of the schema, by message, in Python: the
# API server evaluates them, jsonschema cannot. A rule the schema gains that is not
# here fails test_every_cel_rule_of_the_schema_is_evaluated.
CEL = {
    "only one of targetRefs or selector can be set":
        lambda s: sum(k in s for k in ("selector", "targetRef", "targetRefs")) <= 1,
    "Cannot set serviceAccounts with namespaces or principals":
        lambda s: not ({"serviceAccounts", "notServiceAccounts"} & set(s))
        or not ({"principals", "notPrincipals", "namespaces", "notNamespaces"} & set(s)),
    "wildcard not allowed in label key match": lambda m: all("*" not in k for k in m),
    "key must not be empty": lambda m: all(k != "" for k in m),
    "wildcard not allowed in label value match": lambda v: "*" not in v,
    "cross namespace referencing is not currently supported": lambda v: len(v) == 0,
}


def _cel_errors(schema: dict, value, path: str = "spec") -> list[str]:
    errors = [f"{path}: {rule['message']}" for rule in schema.get("x-kubernetes-validations", [])
              if not CEL[rule["message"]](value)]
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                errors += _cel_errors(sub, item, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def schema_errors(obj: dict) -> list[str]:
    """Why the API server would refuse ``obj`` as an AuthorizationPolicy ([] if it would not)."""
    group, _, version = obj.get("apiVersion", "").partition("/")
    if obj.get("kind") != SCHEMA["kind"] or group != SCHEMA["group"]:
        return [f"not a {SCHEMA['group']} {SCHEMA['kind']}: {obj.get('apiVersion')} "
                f"{obj.get('kind')}"]
    errors = [] if version in SCHEMA["versions"] else [f"version {version} is not served"]
    name = (obj.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name):
        errors.append(f"metadata.name {name!r} is not a DNS subdomain")
    body = {"spec": obj.get("spec", {})}
    validator = jsonschema.Draft7Validator(_strict(SCHEMA["openAPIV3Schema"]))
    errors += [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
               for e in validator.iter_errors(body)]
    return errors + (_cel_errors(SCHEMA["openAPIV3Schema"]["properties"]["spec"], body["spec"])
                     if not errors else [])


def _policies(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_authorization_policies_are_valid_for_istio(overlay):
    docs = rendered(overlay)
    policies = _policies(docs, "AuthorizationPolicy")
    assert set(policies) == ({"mlflow", "mlflow-postgres"} if overlay in WITH_POSTGRES
                             else {"mlflow"})  # external-db: no database of ours to guard
    for name, policy in policies.items():
        assert schema_errors(policy) == [], name
        assert policy["metadata"]["namespace"] == "kubeflow"
        assert policy["spec"]["action"] == "ALLOW"
    # without Istio nothing refers to its kinds: the base holds none
    assert not _policies(rendered("base"), "AuthorizationPolicy")


def test_every_cel_rule_of_the_schema_is_evaluated():
    messages = set(re.findall(r"message: (.+)", yaml.safe_dump(SCHEMA, width=1000)))
    assert messages == set(CEL)


@pytest.mark.parametrize("change, error", [
    (lambda s: s.update(action="PERMIT"), "'PERMIT' is not one of"),
    (lambda s: s["rules"][0].update(form=[]), "'form' was unexpected"),
    (lambda s: s["rules"][0]["from"][0]["source"].update(principals="x"), "is not of type 'array'"),
    (lambda s: s.update(targetRefs=[{"kind": "Service", "name": "mlflow"}]),
     "only one of targetRefs or selector"),
    (lambda s: s["selector"]["matchLabels"].update({"app": "ml*"}), "wildcard not allowed"),
    (lambda s: s["rules"][0]["from"][0]["source"].update(serviceAccounts=["kubeflow/x"]),
     "Cannot set serviceAccounts"),
    (lambda s: s["rules"][0]["when"].append({"values": ["x"]}), "'key' is a required property"),
])
def test_the_schema_check_refuses_what_the_api_server_would(change, error):
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "p", "namespace": "kubeflow"},
              "spec": {"selector": {"matchLabels": {"app": "mlflow"}}, "action": "ALLOW",
                       "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}],
                                  "when": [{"key": "source.ip", "values": ["10.0.0.1"]}]}]}}
    assert schema_errors(policy) == []
    change(policy["spec"])
    assert any(error in e for e in schema_errors(policy)), schema_errors(policy)
    assert schema_errors({**policy, "apiVersion": "security.istio.io/v2"})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies_guard_the_workloads_and_ports_they_name(overlay):
    docs = rendered(overlay)
    pods = {p.name: p for p in _workloads(docs)}
    for kind in ("AuthorizationPolicy", "NetworkPolicy"):
        for name, policy in _policies(docs, kind).items():
            selector = (policy["spec"]["selector"] if kind == "AuthorizationPolicy"
                        else policy["spec"]["podSelector"])
            guarded = [p for p in pods.values() if selects(selector, p.labels)]
            assert [p.name for p in guarded] == [name], (kind, name)  # exactly its workload
            ports = ([int(p) for r in policy["spec"]["rules"] for t in r["to"]
                      for p in t["operation"]["ports"]] if kind == "AuthorizationPolicy"
                     else [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]])
            assert set(ports) == set(guarded[0].ports.values()), (kind, name)
    # the database admits MLflow's identity: its service account, in its namespace
    if overlay in WITH_POSTGRES:
        postgres = _policies(docs, "AuthorizationPolicy")["mlflow-postgres"]["spec"]
        mlflow = pods["mlflow"]
        assert postgres["rules"][0]["from"][0]["source"]["principals"] == [
            f"cluster.local/ns/{mlflow.namespace}/sa/{mlflow.service_account}"]
    # both join the mesh, whatever the namespace's injection label says
    for pod in pods.values():
        assert pod.labels[INJECT] == "true", pod.name


# ---- a model of the cluster: pods, namespaces, policies ----------------------------------
@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict
    annotations: dict = field(default_factory=dict)
    service_account: str = "default"
    ports: dict = field(default_factory=dict)  # container port name -> number
    proxy: bool | None = None  # None: as Istio's injector decides; True: a gateway (Envoy itself)


@dataclass
class Cluster:
    namespaces: dict[str, dict]  # name -> labels
    network_policies: list[dict]
    authorization_policies: list[dict]

    def namespace_labels(self, name: str) -> dict:
        return {**self.namespaces[name], "kubernetes.io/metadata.name": name}


def _workloads(docs: list[dict]) -> list[Pod]:
    """The pods the rendered Deployments and StatefulSets start."""
    pods = []
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        template = d["spec"]["template"]
        spec = template["spec"]
        pods.append(Pod(d["metadata"]["name"], d["metadata"]["namespace"],
                        template["metadata"].get("labels", {}),
                        template["metadata"].get("annotations", {}),
                        spec.get("serviceAccountName", "default"),
                        {p["name"]: p["containerPort"] for c in spec["containers"]
                         for p in c.get("ports", [])}))
    return pods


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector: matchLabels and matchExpressions, all must hold."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        present, op = e["key"] in labels, e["operator"]
        among = present and labels[e["key"]] in (e.get("values") or [])
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown operator {op}")
        if not {"In": among, "NotIn": not among, "Exists": present,
                "DoesNotExist": not present}[op]:
            return False
    return True


def _policy_types(spec: dict) -> list[str]:
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _peer_admits(cluster: Cluster, peer: dict, policy_namespace: str, other: Pod) -> bool:
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not modelled")
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], cluster.namespace_labels(other.namespace))
    else:  # a podSelector alone means the policy's own namespace
        in_namespace = other.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector", {}), other.labels)


def _port_admits(ports: list[dict] | None, destination: Pod, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        if "port" not in p:
            return True
        number = p["port"] if isinstance(p["port"], int) else destination.ports.get(p["port"])
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def _admitted(cluster: Cluster, subject: Pod, direction: str, other: Pod, destination: Pod,
              port: int) -> bool:
    """Whether the policies selecting ``subject`` let ``other`` in (Ingress) or let
    ``subject`` out to it (Egress). No policy of that type selecting it: not isolated.
    Several: they add up, any rule of any of them is enough."""
    rules_key, peers_key = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}[direction]
    selecting = [np["spec"] for np in cluster.network_policies
                 if np["metadata"]["namespace"] == subject.namespace
                 and selects(np["spec"]["podSelector"], subject.labels)
                 and direction in _policy_types(np["spec"])]
    if not selecting:
        return True
    return any((not rule.get(peers_key)
                or any(_peer_admits(cluster, peer, subject.namespace, other)
                       for peer in rule[peers_key]))
               and _port_admits(rule.get("ports"), destination, port)
               for spec in selecting for rule in spec.get(rules_key) or [])


def network_allows(cluster: Cluster, source: Pod, destination: Pod, port: int) -> bool:
    return (_admitted(cluster, destination, "Ingress", source, destination, port)
            and _admitted(cluster, source, "Egress", destination, destination, port))


def has_proxy(cluster: Cluster, pod: Pod) -> bool:
    """Istio's injection rules: a namespace labelled istio-injection=enabled injects
    unless the pod says "false"; any other unlabelled one only where the pod's label says
    "true"; istio-injection=disabled never."""
    if pod.proxy is not None:
        return pod.proxy
    namespace = cluster.namespaces[pod.namespace].get("istio-injection")
    if namespace == "enabled":
        return pod.labels.get(INJECT) != "false" and pod.annotations.get(INJECT) != "false"
    return namespace is None and pod.labels.get(INJECT) == "true"


def _matches(value: str, patterns: list[str]) -> bool:
    """Istio's string match: exact, "prefix*", "*suffix", or "*" (any non-empty value)."""
    return any((p == "*" and value != "") or (p != "*" and p.endswith("*")
                                             and value.startswith(p[:-1]))
               or (p != "*" and p.startswith("*") and value.endswith(p[1:])) or value == p
               for p in patterns)


def _source_matches(source: dict, principal: str, namespace: str) -> bool:
    unknown = set(source) - {"principals", "notPrincipals", "namespaces", "notNamespaces"}
    if unknown:
        raise NotImplementedError(f"source fields not modelled: {sorted(unknown)}")
    return (("principals" not in source or _matches(principal, source["principals"]))
            and ("notPrincipals" not in source or not _matches(principal, source["notPrincipals"]))
            and ("namespaces" not in source or _matches(namespace, source["namespaces"]))
            and ("notNamespaces" not in source or not _matches(namespace, source["notNamespaces"])))


def _operation_matches(operation: dict, port: int) -> bool:
    unknown = set(operation) - {"ports", "notPorts"}
    if unknown:
        raise NotImplementedError(f"operation fields not modelled: {sorted(unknown)}")
    return (("ports" not in operation or str(port) in operation["ports"])
            and str(port) not in operation.get("notPorts", []))


def _rule_matches(rule: dict, principal: str, namespace: str, port: int) -> bool:
    if "when" in rule:
        raise NotImplementedError("conditions are not modelled")
    return ((not rule.get("from") or any(_source_matches(f["source"], principal, namespace)
                                         for f in rule["from"]))
            and (not rule.get("to") or any(_operation_matches(t["operation"], port)
                                           for t in rule["to"])))


def mesh_allows(cluster: Cluster, source: Pod, destination: Pod, port: int) -> bool:
    """Istio's verdict in the destination's sidecar. No sidecar: nothing is enforced.
    Two proxies speak mTLS (auto mTLS), so the source has an identity; a source without
    one arrives in plain text (Kubeflow leaves mTLS PERMISSIVE), with none."""
    if not has_proxy(cluster, destination):
        return True
    mtls = has_proxy(cluster, source)
    principal = f"cluster.local/ns/{source.namespace}/sa/{source.service_account}" if mtls else ""
    namespace = source.namespace if mtls else ""
    applying = []
    for ap in cluster.authorization_policies:
        spec, where = ap["spec"], ap["metadata"]["namespace"]
        if {"targetRef", "targetRefs", "provider"} & set(spec):
            raise NotImplementedError("targetRefs and CUSTOM providers are not modelled")
        if where in (ROOT_NAMESPACE, destination.namespace) and (
                "selector" not in spec or selects(spec["selector"], destination.labels)):
            applying.append(spec)
    actions = {spec.get("action", "ALLOW") for spec in applying}
    if actions - {"ALLOW", "DENY"}:
        raise NotImplementedError(f"actions not modelled: {actions}")

    def matched(spec):
        return any(_rule_matches(rule, principal, namespace, port)
                   for rule in spec.get("rules") or [])

    if any(matched(spec) for spec in applying if spec.get("action") == "DENY"):
        return False
    allowing = [spec for spec in applying if spec.get("action", "ALLOW") == "ALLOW"]
    return not allowing or any(matched(spec) for spec in allowing)


def reach(cluster: Cluster, source: Pod, destination: Pod, port: int) -> str:
    if not network_allows(cluster, source, destination, port):
        return "no (NetworkPolicy)"
    if not mesh_allows(cluster, source, destination, port):
        return "no (Istio)"
    return "yes"


def kubeflow_cluster(docs: list[dict], multi_user: bool) -> Cluster:
    """A Kubeflow install with the overlay applied; multi-user: with a profile namespace."""
    namespaces = {"kubeflow": KUBEFLOW_LABELS, ROOT_NAMESPACE: {}, "default": {}}
    if multi_user:
        namespaces[PROFILE] = PROFILE_LABELS
    return Cluster(namespaces,
                   [d for d in docs if d["kind"] == "NetworkPolicy"]
                   + [DEFAULT_ALLOW_SAME_NAMESPACE],
                   [d for d in docs if d["kind"] == "AuthorizationPolicy"] + [GLOBAL_DENY_ALL])


# ---- the callers ---------------------------------------------------------------------------
KFP_NO_SIDECAR = {INJECT: "false"}  # the KFP API server's default on every pod of a run


def pipeline_step(namespace: str) -> Pod:
    """A step of the compiled pipeline as KFP starts it (pipeline/dag.py labels it)."""
    account = "pipeline-runner" if namespace == "kubeflow" else "default-editor"
    return Pod("step", namespace, {MLFLOW_CLIENT_LABEL: "true",
                                   "pipelines.kubeflow.org/v2_component": "true"},
               dict(KFP_NO_SIDECAR), account)


def trainjob_node(namespace: str) -> Pod:
    """A node of the TrainJob a step starts: labels and annotations as trainjob.build
    writes its pod template."""
    cfg = PipelineConfig(checkpoint_root="s3://b/ck", resources=ResourcesConfig(nodes=2))
    nodes = Nodes.for_step(cfg, "train_supernet", "run-1", "s3://b/ck/run-1/supernet", "img")
    body = trainjob.build(nodes.name, image="img", command=["torchrun"], nodes=2,
                          procs_per_node=1, runtime="torch-distributed",
                          placement=nodes.placement, env=[], labels=nodes.labels,
                          shm_size="1Gi", service_account=cfg.resources.service_account)
    patch = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    metadata = patch["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]
    return Pod("node", namespace, dict(metadata.get("labels", {})),
               dict(metadata.get("annotations", {})), cfg.resources.service_account)


SINGLE, MULTI = ("single-user", "multi-user"), ("multi-user",)
# the rows of the table in docs/deploy.md: the caller, and the layouts it exists in
CALLERS = {
    "a pipeline step in `kubeflow` (single-user)": (lambda: pipeline_step("kubeflow"), SINGLE),
    "a TrainJob node in `kubeflow` (single-user)": (lambda: trainjob_node("kubeflow"), SINGLE),
    "a pipeline step in a profile namespace (multi-user)": (lambda: pipeline_step(PROFILE), MULTI),
    "a TrainJob node in a profile namespace (multi-user)": (lambda: trainjob_node(PROFILE), MULTI),
    "another pod in a profile namespace, e.g. a notebook":
        (lambda: Pod("notebook", PROFILE, {"notebook-name": "nb"}, {}, "default-editor"), MULTI),
    "another pod in `kubeflow` without a sidecar":
        (lambda: Pod("other", "kubeflow", {"app": "other"}, dict(KFP_NO_SIDECAR)), SINGLE),
    "another pod in `kubeflow` with a sidecar (most of Kubeflow)":
        (lambda: Pod("ml-pipeline", "kubeflow", {"app": "ml-pipeline"}, {}, "ml-pipeline"),
         SINGLE),
    "the MLflow server": (None, SINGLE),
    "the ingress gateway (`istio-system`)":
        (lambda: Pod("gateway", ROOT_NAMESPACE,
                     {"app": "istio-ingressgateway", "istio": "ingressgateway"}, {},
                     "istio-ingressgateway-service-account", proxy=True), SINGLE),
    "a pod labelled `scarlet-nas/mlflow-client=true` in any other namespace":
        (lambda: Pod("stranger", "default", {MLFLOW_CLIENT_LABEL: "true"}), SINGLE),
}


def docs_table() -> dict[str, tuple[str, str]]:
    """The table under "Who reaches MLflow and PostgreSQL" in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    lines = text[text.index("| From | MLflow"):].splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = (cells[1], cells[2])
    return rows


def decide(overlay: str, caller: str) -> tuple[str, str]:
    """The caller's (MLflow, PostgreSQL) cells, the same in every layout it exists in."""
    docs = rendered(overlay)
    make, layouts = CALLERS[caller]
    verdicts = set()
    for layout in layouts:
        cluster = kubeflow_cluster(docs, multi_user=layout == "multi-user")
        pods = {p.name: p for p in _workloads(docs)}
        source = pods["mlflow"] if make is None else make()
        mlflow = "–" if make is None else reach(cluster, source, pods["mlflow"], 5000)
        postgres = (reach(cluster, source, pods["mlflow-postgres"], 5432)
                    if "mlflow-postgres" in pods else "–")
        verdicts.add((mlflow, postgres))
    assert len(verdicts) == 1, (caller, verdicts)
    return verdicts.pop()


def test_the_docs_table_lists_every_caller():
    assert list(docs_table()) == list(CALLERS)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("overlay", WITH_POSTGRES)
def test_who_reaches_mlflow_and_postgres_is_what_the_docs_say(overlay, caller):
    assert decide(overlay, caller) == docs_table()[caller]


@pytest.mark.parametrize("caller", [c for c in CALLERS if "TrainJob" not in c])
def test_with_an_external_database_mlflow_is_reached_as_with_the_bundled_one(caller):
    assert decide("overlays/external-db", caller) == (docs_table()[caller][0], "–")


# ---- the evaluators themselves -------------------------------------------------------------
def _np(namespace, pod_selector, ingress=None, egress=None, types=None):
    spec = {"podSelector": pod_selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types:
        spec["policyTypes"] = types
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace},
            "spec": spec}


def test_network_policies_add_up_and_selectors_mean_what_kubernetes_says():
    server = Pod("server", "a", {"app": "server"}, ports={"http": 8080})
    client = Pod("client", "a", {"role": "client", "tier": "web"})
    other = Pod("other", "a", {"role": "batch"})
    outside = Pod("outside", "b", {"role": "client"})
    only_clients = _np("a", {"matchLabels": {"app": "server"}}, [{
        "from": [{"podSelector": {"matchExpressions": [
            {"key": "role", "operator": "In", "values": ["client"]},
            {"key": "tier", "operator": "Exists"}]}}],
        "ports": [{"port": "http"}]}])
    cluster = Cluster({"a": {}, "b": {"team": "x"}}, [only_clients], [])
    assert network_allows(cluster, client, server, 8080)
    assert not network_allows(cluster, client, server, 9090)  # the named port is 8080 only
    assert not network_allows(cluster, other, server, 8080)
    assert not network_allows(cluster, outside, server, 8080)  # podSelector alone: own namespace
    # a second policy adds what it admits: the whole namespace, as Kubeflow's does
    cluster.network_policies.append(_np("a", {}, [{"from": [{"podSelector": {}}]}]))
    assert network_allows(cluster, other, server, 9090)
    assert not network_allows(cluster, outside, server, 8080)
    # namespaceSelector and podSelector in one peer: both; in two peers: either
    both = [{"namespaceSelector": {"matchLabels": {"team": "x"}},
             "podSelector": {"matchLabels": {"role": "batch"}}}]
    cluster.network_policies = [_np("a", {"matchLabels": {"app": "server"}}, [{"from": both}])]
    assert not network_allows(cluster, outside, server, 8080)
    cluster.network_policies[0]["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {"matchLabels": {"team": "x"}}},
        {"podSelector": {"matchLabels": {"role": "batch"}}}]
    assert network_allows(cluster, outside, server, 8080) and network_allows(cluster, other,
                                                                              server, 8080)
    # NotIn admits a pod without the key; an egress policy isolates its own pods' way out
    cluster.network_policies = [_np("a", {"matchExpressions": [
        {"key": "role", "operator": "NotIn", "values": ["client"]}]}, egress=[],
        types=["Egress"])]
    assert network_allows(cluster, client, server, 8080)
    assert not network_allows(cluster, other, server, 8080)
    assert not network_allows(cluster, server, client, 8080)  # no role label: NotIn holds


def test_the_profile_rule_is_what_lets_multi_user_steps_in():
    docs = rendered("overlays/minio")
    policy = _policies(docs, "NetworkPolicy")["mlflow"]
    del policy["spec"]["ingress"][1]  # the policy as it was, before multi-user steps were let in
    pods = {p.name: p for p in _workloads(docs)}
    cluster = kubeflow_cluster(docs, multi_user=True)
    step = pipeline_step(PROFILE)
    assert reach(cluster, step, pods["mlflow"], 5000) == "no (NetworkPolicy)"
    # and without Kubeflow's allow-all, the namespace's other pods would be kept out as well
    cluster.network_policies.remove(DEFAULT_ALLOW_SAME_NAMESPACE)
    other = CALLERS["another pod in `kubeflow` without a sidecar"][0]()
    assert reach(cluster, other, pods["mlflow"], 5000) == "no (NetworkPolicy)"


def test_istio_denies_what_no_allow_policy_admits_and_only_where_a_sidecar_enforces():
    server = Pod("server", "a", {"app": "server"})
    meshed = Pod("meshed", "a", {"app": "client"}, {}, "client")
    plain = Pod("plain", "a", {"app": "client"}, {INJECT: "false"})
    cluster = Cluster({"a": {"istio-injection": "enabled"}}, [], [GLOBAL_DENY_ALL])
    assert not mesh_allows(cluster, meshed, server, 80)
    assert mesh_allows(cluster, meshed, Pod("bare", "a", {}, {INJECT: "false"}), 80)
    cluster.authorization_policies.append({
        "metadata": {"namespace": "a"},
        "spec": {"selector": {"matchLabels": {"app": "server"}},
                 "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}],
                            "to": [{"operation": {"ports": ["80"]}}]},
                           {"from": [{"source": {"principals": ["*/ns/a/sa/client"]}}]}]}})
    assert mesh_allows(cluster, plain, server, 80) and not mesh_allows(cluster, plain, server, 81)
    assert mesh_allows(cluster, meshed, server, 81)  # its identity, on any port
    assert not mesh_allows(cluster, Pod("x", "a", {}, {}, "other"), server, 80)  # mTLS, not listed
    cluster.authorization_policies.append({
        "metadata": {"namespace": ROOT_NAMESPACE},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["a"]}}]}]}})
    assert not mesh_allows(cluster, meshed, server, 81)  # a DENY wins, from the root namespace
    assert mesh_allows(cluster, plain, server, 80)  # plain text has no namespace to deny
