"""A local HTTP server speaking the Kubernetes API paths a TrainJob's launcher
uses (trainjobs, clustertrainingruntimes, pods, pod logs, the OpenAPI document
of the Trainer group), recording every request. No cluster is reachable from
the tests; this serves the same kubernetes client the step runs in a pod.

It holds the TrainJob CRD of a Kubeflow Trainer version (``trainer``): its
schema as the API server publishes it under /openapi/v3, and what the API
server does with a created object that has fields the schema lacks:
``fieldValidation=Strict`` refuses it (400, every unknown field named), Warn
(the default) and Ignore drop those fields, Warn with a Warning header per
field. v2.3's schema is the Trainer API models'; the older ones differ by what
Trainer's CRDs show: v2.2 lacks the pod patch's terminationGracePeriodSeconds,
v2.1 has spec.podTemplateOverrides (pod overrides without a security context),
spec.labels and spec.annotations instead of spec.runtimePatches and
spec.activeDeadlineSeconds, and v2.0 spec.podSpecOverrides.

It also plays Kubeflow Trainer's part for the ``torch-distributed`` runtime:
a created TrainJob's nodes run as local processes with the trainer's command
and env (Secret references resolved from ``secrets``) and the PET_* variables
torchrun reads, so the job really trains; the node pods it reports carry the
labels and pod settings the stored TrainJob gives them, and a TrainJob past its
activeDeadlineSeconds fails as Trainer v2.2+ fails it. With ``kueue``, a
TrainJob with a queue label is suspended, as Kueue's webhook does, and never
admitted. With ``pod_security="restricted"`` the namespace enforces that Pod
Security Standard: node pods it refuses are never created, as Pod Security
admission refuses a Job's pods. ``mode`` picks other behaviours: "pending" (no node can be
scheduled), "hold" (nodes run until deleted).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

from scarletnas.devstack import free_port

from .local_http import JsonHandler, LocalServer

TRAINJOBS = re.compile(r"/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs"
                       r"(?:/([^/]+))?$")
RUNTIME = re.compile(r"/apis/trainer\.kubeflow\.org/v1alpha1/clustertrainingruntimes/([^/]+)$")
PODS = re.compile(r"/api/v1/namespaces/([^/]+)/pods$")
POD = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
POD_LOG = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
OPENAPI = re.compile(r"/openapi/v3/apis/trainer\.kubeflow\.org/v1alpha1$")
# how the API server names a CRD's schema in its OpenAPI: the group reversed, version, kind
SCHEMA_NAME = "org.kubeflow.trainer.v1alpha1.TrainJob"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
LAUNCHER = {"metadata": {"name": "launcher-pod", "uid": "0f3c-launcher-uid"},
            "status": {"phase": "Running"}}  # the pod of the step that starts TrainJobs
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


# ---- the TrainJob CRD of a Trainer version ---------------------------------------------
ANY = {"x-kubernetes-preserve-unknown-fields": True}
INT_OR_STRING = {"x-kubernetes-int-or-string": True}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
TRAINER_VERSIONS = ("v2.3", "v2.2", "v2.1", "v2.0")


def _structural(schema: dict, defs: dict) -> dict:
    """A pydantic JSON schema as a CRD's structural schema: objects with properties or
    additionalProperties, arrays with items, typed leaves."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        if "actual_instance" in target.get("properties", {}):  # Quantity, IntOrString
            return INT_OR_STRING
        return _structural(target, defs)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _structural(options[0], defs) if len(options) == 1 else INT_OR_STRING
    if schema.get("type") == "array":
        return {"type": "array", "items": _structural(schema.get("items", {}), defs)}
    if schema.get("type") == "object" or "properties" in schema:
        out: dict = {"type": "object"}
        if "properties" in schema:
            out["properties"] = {k: _structural(v, defs) for k, v in schema["properties"].items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _structural(extra, defs)
        elif extra or "properties" not in schema:
            out.update(ANY)
        return out
    return {"type": schema["type"]} if "type" in schema else ANY


@cache
def _latest() -> dict:
    schema = TrainerV1alpha1TrainJob.model_json_schema(by_alias=True)
    return _structural(schema, schema["$defs"])


def trainjob_schema(version: str) -> dict:
    """The TrainJob CRD's openAPIV3Schema as Trainer ``version`` installs it."""
    schema = copy.deepcopy(_latest())
    spec = schema["properties"]["spec"]["properties"]
    template = spec["runtimePatches"]["items"]["properties"]["trainingRuntimeSpec"]
    for key in ("template", "spec", "replicatedJobs", "template", "spec", "template"):
        template = template["items"] if template.get("type") == "array" else template
        template = template["properties"][key]
    pod = template["properties"]["spec"]["properties"]  # the pod spec a patch may set
    if version == "v2.2":
        del pod["terminationGracePeriodSeconds"]
    elif version in ("v2.1", "v2.0"):
        del spec["runtimePatches"], spec["activeDeadlineSeconds"]
        container = {"type": "object", "properties": {
            k: pod["containers"]["items"]["properties"][k] for k in ("name", "env",
                                                                      "volumeMounts")}}
        override = {k: pod[k] for k in ("serviceAccountName", "nodeSelector", "affinity",
                                        "tolerations", "volumes", "schedulingGates",
                                        "imagePullSecrets")}
        override["containers"] = override["initContainers"] = {"type": "array",
                                                               "items": container}
        spec["labels"] = spec["annotations"] = STRING_MAP
        spec["podTemplateOverrides" if version == "v2.1" else "podSpecOverrides"] = {
            "type": "array", "items": {"type": "object", "properties": {
                "targetJobs": {"type": "array", "items": {
                    "type": "object", "properties": {"name": {"type": "string"}}}},
                "metadata": template["properties"]["metadata"],
                "spec": {"type": "object", "properties": override}}}}
    elif version != "v2.3":
        raise ValueError(f"no TrainJob CRD of Trainer {version}")
    return schema


_TYPES = {"string": str, "integer": int, "boolean": bool, "number": (int, float)}


def prune(value, schema: dict, path: str, unknown: list, invalid: list):
    """``value`` less the fields ``schema`` lacks (their paths go to ``unknown``, as
    the API server's strict decoding names them), wrong types in ``invalid``."""
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            invalid.append((path, "integer or string", value))
        return value
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            invalid.append((path, "object", value))
            return value
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        kept = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if item is None:  # a null for a field that is not nullable: dropped
                continue
            if key in props or extra is not None:
                kept[key] = prune(item, props.get(key, extra), where, unknown, invalid)
            else:
                unknown.append(where)
        return kept
    if kind == "array":
        if not isinstance(value, list):
            invalid.append((path, "array", value))
            return value
        return [prune(item, schema["items"], f"{path}[{i}]", unknown, invalid)
                for i, item in enumerate(value)]
    expected = _TYPES.get(kind)
    if expected and (not isinstance(value, expected) or
                     (kind != "boolean" and isinstance(value, bool))):
        invalid.append((path, kind, value))
    return value


def node_pod(job: dict) -> tuple[dict, dict]:
    """(labels, spec) of a node pod of ``job``: the runtime's container with the
    trainer's image and command, then the TrainJob's patches or overrides of the
    "node" job (containers merged by name)."""
    trainer = job["spec"]["trainer"]
    spec: dict = {"containers": [{"name": "node", "image": trainer.get("image", "runtime"),
                                  "command": trainer.get("command")}]}
    labels: dict = {}
    for metadata, patch in _node_patches(job["spec"]):
        labels.update(metadata.get("labels") or {})
        for key, value in patch.items():
            if key in ("containers", "initContainers"):
                for container in value:
                    same = [c for c in spec.setdefault(key, []) if c["name"] == container["name"]]
                    if same:
                        same[0].update(container)
                    else:
                        spec[key].append(dict(container))
            else:
                spec[key] = value
    return labels, spec


# the restricted Pod Security Standard (Kubernetes' pod-security-standards page), as a check
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t",
                 "container_engine_t"}


def restricted_violations(spec: dict) -> list[str]:
    """What in a pod spec the restricted Pod Security Standard (baseline included)
    refuses; [] when it passes."""
    out = []
    pod = spec.get("securityContext") or {}
    containers = [c for key in ("initContainers", "containers", "ephemeralContainers")
                  for c in spec.get(key) or []]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(key)
    for volume in spec.get("volumes") or []:
        kind = next((k for k in volume if k != "name"), "")
        if kind not in RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {kind}")
    out += [f"sysctl {s['name']}" for s in pod.get("sysctls") or []
            if s["name"] not in SAFE_SYSCTLS]
    for where, ctx in [("pod", pod)] + [(c["name"], c.get("securityContext") or {})
                                        for c in containers]:
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: seccompProfile Unconfined")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: appArmorProfile Unconfined")
        selinux = ctx.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") \
                or selinux.get("role"):
            out.append(f"{where}: seLinuxOptions")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        if ctx.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser 0")
        if ctx.get("runAsNonRoot") is False:
            out.append(f"{where}: runAsNonRoot false")
    for c in containers:
        ctx = c.get("securityContext") or {}
        caps = ctx.get("capabilities") or {}
        if ctx.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation not false")
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{c['name']}: capabilities do not drop ALL")
        out += [f"{c['name']}: adds {cap}" for cap in caps.get("add") or []
                if cap != "NET_BIND_SERVICE"]
        if ctx.get("procMount", "Default") != "Default":
            out.append(f"{c['name']}: procMount")
        out += [f"{c['name']}: hostPort" for p in c.get("ports") or [] if p.get("hostPort")]
        if not (ctx.get("runAsNonRoot") or pod.get("runAsNonRoot")):
            out.append(f"{c['name']}: runAsNonRoot not true")
        seccomp = (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: no RuntimeDefault or Localhost seccompProfile")
    return out


def _node_patches(spec: dict):
    for patch in spec.get("runtimePatches") or []:
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if job["name"] == "node":
                template = job["template"]["spec"]["template"]
                yield template.get("metadata") or {}, template.get("spec") or {}
    for override in spec.get("podTemplateOverrides") or []:
        if any(t.get("name") == "node" for t in override.get("targetJobs") or []):
            yield override.get("metadata") or {}, override.get("spec") or {}


class _Node:
    """One node of a TrainJob: a local process, its log and termination message."""

    def __init__(self, job: str, index: int, labels: dict, spec: dict, workdir: Path):
        self.index, self.spec = index, spec
        self.name = f"{job}-node-0-{index}-{uuid.uuid4().hex[:5]}"
        self.uid = uuid.uuid4().hex
        self.labels = {**labels, "jobset.sigs.k8s.io/jobset-name": job,
                       "jobset.sigs.k8s.io/replicatedjob-name": "node",
                       "batch.kubernetes.io/job-name": f"{job}-node-0",
                       "batch.kubernetes.io/job-completion-index": str(index)}
        self.log = workdir / f"{self.name}.log"
        self.termination = workdir / f"{self.name}.termination"
        self.process: subprocess.Popen | None = None

    def start(self, command: list[str], env: dict) -> None:
        self.termination.write_text("")
        env = {**env, "SCARLETNAS_TERMINATION_LOG": str(self.termination)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def code(self) -> int | None:
        return self.process.poll() if self.process else None

    def kill(self, grace: float = 15.0) -> None:
        """As the kubelet stops a pod: SIGTERM (torchrun passes it on to the
        workers it started, each in its own session), SIGKILL after the grace."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def pod(self) -> dict:
        status: dict = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": UNSCHEDULABLE}]}
        if self.process is not None:
            code = self.code
            state = ({"running": {}} if code is None else {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "message": self.termination.read_text()}})
            status = {"phase": "Running" if code is None else
                      "Succeeded" if code == 0 else "Failed",
                      "conditions": [{"type": "PodScheduled", "status": "True"}],
                      "containerStatuses": [{"name": "node", "image": "scarlet-nas",
                                             "imageID": "", "ready": code is None,
                                             "restartCount": 0, "state": state}]}
        return {"metadata": {"name": self.name, "uid": self.uid, "labels": self.labels},
                "spec": self.spec, "status": status}


class FakeCluster(LocalServer):
    """``trainer``: the Trainer version whose TrainJob CRD is installed (None: none is);
    ``openapi``: whether this account may read the OpenAPI documents (False: 403)."""

    def __init__(self, workdir: Path, mode: str = "run", secrets: dict | None = None,
                 runtimes: tuple[str, ...] = ("torch-distributed",), forbid: tuple = (),
                 trainer: str | None = "v2.3", openapi: bool = True, kueue: bool = False,
                 pod_security: str = "baseline"):
        self.workdir, self.mode, self.secrets = workdir, mode, secrets or {}
        self.runtimes, self.forbid = runtimes, forbid  # forbid: (verb, resource) -> 403
        self.schema = trainjob_schema(trainer) if trainer else None
        self.openapi, self.kueue = openapi, kueue
        self.pod_security = pod_security  # the namespace's enforced Pod Security Standard
        self.refused: dict[str, list[str]] = {}  # pods Pod Security admission refused
        self.requests: list[dict] = []
        self.jobs: dict[str, dict] = {}
        self.created: dict[str, float] = {}
        self.failed: dict[str, dict] = {}  # a TrainJob's Failed condition, once set
        self.nodes: dict[str, list[_Node]] = {}
        self.lock = threading.Lock()
        super().__init__(self._handler())

    def __exit__(self, *exc):
        for nodes in self.nodes.values():
            for node in nodes:
                node.kill()
        super().__exit__(*exc)

    def kubeconfig(self, path: Path, namespace: str = "team-a") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u",
                                                      "namespace": namespace}}]}))
        return path

    def calls(self) -> list[tuple[str, str]]:
        """(verb, resource) of every resource request, in RBAC's words."""
        return [(r["verb"], r["resource"]) for r in self.requests if r["resource"]]

    def urls(self) -> list[str]:
        """The paths of the requests for non-resource URLs."""
        return [r["path"] for r in self.requests if not r["resource"]]

    # ---- Trainer's part ---------------------------------------------------------------
    def _env(self, trainer: dict) -> dict:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for e in trainer.get("env") or []:
            if "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets[ref["name"]][ref["key"]]  # KeyError: no Secret
            else:
                env[e["name"]] = e.get("value", "")
        return env

    def _start(self, job: dict) -> None:
        name, trainer = job["metadata"]["name"], job["spec"]["trainer"]
        self.created[name] = time.monotonic()
        if job["spec"].get("suspend"):  # until Kueue admits it: no JobSet, no pods
            return
        labels, spec = node_pod(job)
        if self.pod_security == "restricted" and restricted_violations(spec):
            self.refused[name] = restricted_violations(spec)  # the Job creates no pod
            self.nodes[name] = []
            return
        nodes = [_Node(name, i, labels, spec, self.workdir) for i in range(trainer["numNodes"])]
        self.nodes[name] = nodes
        if self.mode == "pending":
            return
        env = self._env(trainer)
        port = free_port()
        for node in nodes:
            if self.mode == "hold":
                command = [sys.executable, "-c", "import time; print('training', flush=True); "
                           "time.sleep(600)"]
            else:
                command = trainer["command"]
            node.start(command, {**env, "PET_NNODES": str(trainer["numNodes"]),
                                 "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                                 "PET_NODE_RANK": str(node.index),
                                 "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port),
                                 # the "nodes" share this machine's cores
                                 "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1)
                                                            // len(nodes)))})

    def _status(self, name: str) -> dict:
        codes = [n.code for n in self.nodes.get(name, [])]
        conditions = [{"type": "Created", "status": "True", "reason": "JobSetCreated"}]
        spec = self.jobs[name]["spec"]
        if name in self.failed:
            conditions.append(self.failed[name])
        elif spec.get("activeDeadlineSeconds") and not spec.get("suspend") and \
                time.monotonic() - self.created[name] > spec["activeDeadlineSeconds"]:
            for node in self.nodes[name]:  # Trainer v2.2+ deletes the JobSet
                node.kill()
            self.failed[name] = {"type": "Failed", "status": "True",
                                 "reason": "DeadlineExceeded",
                                 "message": "TrainJob exceeded its active deadline"}
            conditions.append(self.failed[name])
        elif any(c not in (None, 0) for c in codes):
            for node in self.nodes[name]:  # a JobSet fails as a whole
                node.kill()
            failed = next(i for i, c in enumerate(codes) if c not in (None, 0))
            conditions.append({"type": "Failed", "status": "True", "reason": "JobSetFailed",
                               "message": f"jobset failed: pod of node {failed} failed"})
        elif codes and all(c == 0 for c in codes):
            conditions.append({"type": "Complete", "status": "True",
                               "reason": "JobSetCompleted", "message": "jobset completed"})
        return {"conditions": conditions}

    # ---- HTTP ------------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"  # chunked log streams

            def _reply(self, code: int, body: dict, warnings: list[str] = ()):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for warning in warnings:  # as the API server warns (RFC 7234 code 299)
                    self.send_header("Warning", f"299 - {json.dumps(warning)}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str):
                self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": reason, "message": message, "code": code})

            def _route(self, method: str):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if m := TRAINJOBS.match(url.path):
                    resource, name = "trainjobs", m[2]
                    verb = {"POST": "create", "DELETE": "delete"}.get(
                        method, "get" if name else "list")
                elif m := RUNTIME.match(url.path):
                    resource, name, verb = "clustertrainingruntimes", m[1], "get"
                elif m := PODS.match(url.path):
                    resource, name, verb = "pods", None, "list"
                elif m := POD.match(url.path):
                    resource, name, verb = "pods", m[2], "get"
                elif m := POD_LOG.match(url.path):
                    resource, name, verb = "pods/log", m[2], "get"
                elif OPENAPI.match(url.path):
                    resource, name, verb = "", None, "get"  # a non-resource URL
                else:
                    return self._status(404, "NotFound", f"no route {url.path}")
                fake.requests.append({"method": method, "path": url.path, "query": query,
                                      "verb": verb, "resource": resource, "body": body})
                if (verb, resource) in fake.forbid:
                    return self._status(403, "Forbidden", f"cannot {verb} {resource}")
                with fake.lock:
                    handler = getattr(self, f"_{resource.replace('/', '_') or 'openapi'}")
                    return handler(verb, name, body, query)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

            def _clustertrainingruntimes(self, verb, name, body, query):
                if name not in fake.runtimes or fake.schema is None:  # no Trainer, no runtimes
                    return self._status(404, "NotFound", f"clustertrainingruntimes {name}")
                self._reply(200, {"apiVersion": "trainer.kubeflow.org/v1alpha1",
                                  "kind": "ClusterTrainingRuntime", "metadata": {"name": name}})

            def _openapi(self, verb, name, body, query):
                if fake.schema is None:
                    return self._status(404, "NotFound", "the server could not find the "
                                        "requested resource")
                if not fake.openapi:
                    return self._status(403, "Forbidden", "forbidden: User cannot get path "
                                        f'"{self.path}"')
                self._reply(200, {"openapi": "3.0.0", "info": {
                    "title": "Kubernetes CRD Swagger", "version": "v0.1.0"}, "paths": {},
                    "components": {"schemas": {SCHEMA_NAME: fake.schema}}})

            def _trainjobs(self, verb, name, body, query):
                if fake.schema is None:
                    return self._status(404, "NotFound", "the server could not find the "
                                        "requested resource")
                if verb == "create":
                    return self._create(body, query.get("fieldValidation", ["Warn"])[0])
                if name not in fake.jobs:
                    return self._status(404, "NotFound", f'trainjobs "{name}" not found')
                if verb == "delete":
                    for node in fake.nodes.pop(name, []):
                        node.kill()
                    fake.failed.pop(name, None)
                    job = fake.jobs.pop(name)
                    return self._reply(200, job)
                return self._reply(200, {**fake.jobs[name], "status": fake._status(name)})

            def _create(self, body, validation):
                """What the API server does with a TrainJob: its CRD's schema drops the
                fields it lacks (or, with Strict, refuses them), then checks types."""
                unknown: list[str] = []
                invalid: list[tuple] = []
                body = prune(body, fake.schema, "", unknown, invalid)
                if unknown and validation == "Strict":
                    return self._status(400, "BadRequest", (
                        'TrainJob in version "v1alpha1" cannot be handled as a TrainJob: '
                        "strict decoding error: "
                        + ", ".join(f'unknown field "{p}"' for p in unknown)))
                name = body["metadata"]["name"]
                if invalid:
                    return self._status(422, "Invalid", (
                        f'TrainJob.trainer.kubeflow.org "{name}" is invalid: ' + ", ".join(
                            f"{p}: Invalid value: {json.dumps(v)}: {p} in body must be of "
                            f"type {t}" for p, t, v in invalid)))
                if name in fake.jobs:
                    return self._status(409, "AlreadyExists", f"trainjobs {name} exists")
                body["metadata"].update(uid=uuid.uuid4().hex, namespace="team-a")
                if fake.kueue and QUEUE_LABEL in (body["metadata"].get("labels") or {}):
                    body["spec"]["suspend"] = True  # Kueue's webhook; never admitted here
                fake.jobs[name] = body
                fake._start(body)
                return self._reply(201, body, [f'unknown field "{p}"' for p in unknown]
                                   if validation == "Warn" else [])

            def _pods(self, verb, name, body, query):
                if verb == "get":
                    if name != LAUNCHER["metadata"]["name"]:
                        return self._status(404, "NotFound", f'pods "{name}" not found')
                    return self._reply(200, LAUNCHER)
                selector = dict(s.split("=") for s in query.get("labelSelector", [""])[0]
                                .split(",") if s)
                pods = [n.pod() for nodes in fake.nodes.values() for n in nodes
                        if all(n.labels.get(k) == v for k, v in selector.items())]
                self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                  "items": pods})

            def _pods_log(self, verb, name, body, query):
                node = next((n for nodes in fake.nodes.values() for n in nodes
                             if n.name == name), None)
                if node is None or node.process is None:
                    return self._status(400, "BadRequest", f"pod {name} has not started")
                fake.lock.release()  # following a log takes as long as the node runs
                try:
                    self.send_response(200)  # streamed in chunks, as the API server does
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    follow = query.get("follow", [""])[0].lower() in ("true", "1")
                    with open(node.log, "rb") as f:
                        while True:
                            done = node.code is not None or not follow
                            chunk = f.read()
                            if chunk:
                                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                                self.wfile.flush()
                            if done:
                                break
                            if not chunk:
                                time.sleep(0.1)
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    fake.lock.acquire()

        return Handler
