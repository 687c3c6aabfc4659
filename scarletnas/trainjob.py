"""A training step as a Kubeflow Trainer TrainJob, seen from the KFP step
that starts it: the object (checked against the Trainer API models before it
is sent), and its life (create, wait, node 0's logs in the step's log, the
failure reason, delete when the step is stopped or retried).

The nodes run ``torchrun`` from the ``torch-distributed`` runtime, which sets
PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR... on every node. The API calls
made here are the ones manifests/base/trainjob-launcher.yaml grants, plus the
API server's OpenAPI document of the Trainer group, which Kubernetes lets every
authenticated account read (the system:discovery ClusterRole).

Kubeflow Trainer changed how a TrainJob sets its nodes' pods: v2.1 has
``spec.podTemplateOverrides``, v2.2 replaced it with ``spec.runtimePatches`` and
added ``spec.activeDeadlineSeconds``. The step reads which fields the installed
TrainJob CRD has, sends the matching shape, and creates it with strict field
validation: a field the API server does not know is an error, never silently
dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE = "node"  # the torch runtime's replicated job and its training container
MANAGER = "scarlet-nas"  # owner of the runtime patch
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"  # the TrainJob's JobSet has its name
JOB_LABEL = "batch.kubernetes.io/job-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # the pod's own: KFP's
# the launcher's API token (a service-account-token Secret: token, ca.crt, namespace), mounted
# beside the pod's own credentials, never over them: KFP's launcher in the same container
# talks to the API server as the pod's service account
LAUNCHER_TOKEN_DIR = "/var/run/secrets/scarlet-nas/trainjob-launcher"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # the Kueue LocalQueue that admits a TrainJob
# the node pods run as the image's user (docker/Dockerfile) and pass the restricted Pod
# Security Standard
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# no Istio sidecar on the nodes, as KFP sets for its own pods: torch's rendezvous and
# NCCL use ports chosen at run time, which the mesh's deny-all would refuse between nodes
NODE_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}

# the TrainJob spec field that sets the node pods, by Kubeflow Trainer version
PATCHES, OVERRIDES = "runtimePatches", "podTemplateOverrides"
TRAINER = {PATCHES: "v2.2 or later", OVERRIDES: "v2.1", "podSpecOverrides": "v2.0"}
SHAPES = (PATCHES, OVERRIDES)  # the ones this project writes, newest first
# what a v2.1 pod template override may set (its PodTemplateSpecOverride, ContainerOverride)
V21_POD = ("serviceAccountName", "nodeSelector", "affinity", "tolerations", "volumes",
           "initContainers", "containers", "schedulingGates", "imagePullSecrets")
V21_CONTAINER = ("name", "env", "volumeMounts")
# the installed CRDs' schemas, as the API server publishes them (OpenAPI v3)
OPENAPI = f"/openapi/v3/apis/{GROUP}/{VERSION}"
OPENAPI_TRAINJOB = "org.kubeflow.trainer.v1alpha1.TrainJob"
UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')

log = logging.getLogger("scarletnas")


class TrainJobError(RuntimeError):
    """The TrainJob failed, timed out or vanished. ``kind`` is the class name of
    the error a node reported ('' when none did), so a bad-input failure on a
    node stays final (preflight.final_failure)."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


class UnknownFields(TrainJobError):
    """The API server refused a TrainJob (strict field validation): its CRD lacks ``fields``."""

    def __init__(self, fields: list[str], message: str):
        super().__init__(message, kind="ConfigError")
        self.fields = fields


@dataclass
class Placement:
    """What the KFP task asked for, for every node (the fields of ``dsl.TaskConfig``,
    passed through to here instead of to the launching pod)."""

    resources: dict | None = None
    env: list | None = None
    node_selector: dict | None = None
    tolerations: list | None = None
    affinity: dict | None = None
    volumes: list | None = None
    volume_mounts: list | None = None

    @classmethod
    def of_task(cls, task_config) -> Placement:
        """From a ``dsl.TaskConfig`` (None: nothing set), less the launching step's
        own API token, which the nodes must not get."""
        fields = {k: getattr(task_config, k, None) for k in cls.__dataclass_fields__}
        mounts = fields["volume_mounts"] or []
        token = {m.get("name") for m in mounts if m.get("mountPath") == LAUNCHER_TOKEN_DIR}
        fields["volume_mounts"] = [m for m in mounts if m.get("name") not in token] or None
        fields["volumes"] = [v for v in fields["volumes"] or []
                             if v.get("name") not in token] or None
        return cls(**fields)


def job_name(run_id: str, task: str) -> str:
    """The TrainJob of ``task`` in KFP run ``run_id``: the same on every retry of
    the step, and short enough for the JobSet's child Job and pod names."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:20].strip("-") or "step"
    digest = hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:8]
    short_run = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "run"
    return f"{slug}-{short_run}-{digest}"


def secret_env(secret: str, keys: tuple[str, ...]) -> list[dict]:
    """Env entries that read ``keys`` of a Secret, as a pipeline step gets them."""
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in keys]


def build(name: str, *, image: str, command: list[str], nodes: int, procs_per_node: int,
          runtime: str, placement: Placement, env: list[dict], labels: dict[str, str],
          shm_size: str, service_account: str = "", deadline: int = 0,
          queue: str = "") -> dict:
    """The TrainJob, as Trainer v2.2+ reads it: ``command`` on ``nodes`` nodes of
    ``image``, each node with the task's resources, placement and env, a memory-backed
    /dev/shm, ``labels`` and a restricted security context, as ``service_account``
    (the runtime's default when empty); stopped after ``deadline`` seconds (0: never),
    admitted by Kueue from LocalQueue ``queue`` when set. ``shaped`` writes it for
    another Trainer version."""
    names = {e["name"] for e in placement.env or []}
    trainer = {"image": image, "command": command, "numNodes": nodes,
               "numProcPerNode": procs_per_node,
               "env": list(placement.env or []) + [e for e in env if e["name"] not in names]}
    if placement.resources:
        trainer["resourcesPerNode"] = placement.resources
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}
    pod = {"serviceAccountName": service_account, "nodeSelector": placement.node_selector,
           "tolerations": placement.tolerations, "affinity": placement.affinity,
           "securityContext": POD_SECURITY, "volumes": list(placement.volumes or []) + [shm],
           "containers": [{"name": NODE, "securityContext": CONTAINER_SECURITY,
                           "volumeMounts": list(placement.volume_mounts or [])
                           + [{"name": "dshm", "mountPath": "/dev/shm"}]}]}
    patch = {"template": {"spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {
        "template": {"metadata": {"labels": labels, "annotations": NODE_ANNOTATIONS},
                     "spec": {k: v for k, v in pod.items() if v}}}}}]}}}
    spec = {"runtimeRef": {"name": runtime}, "trainer": trainer,
            PATCHES: [{"manager": MANAGER, "trainingRuntimeSpec": patch}]}
    if deadline:
        spec["activeDeadlineSeconds"] = deadline
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob",
            "metadata": {"name": name, "labels": {**labels, **({QUEUE_LABEL: queue} if queue
                                                               else {})}},
            "spec": spec}
    validate(body)
    return body


def api_shape(fields: set[str]) -> str:
    """Which TrainJob this project writes for a CRD whose spec has ``fields``;
    a one-line refusal for a Trainer it cannot set the node pods of."""
    for shape in SHAPES:
        if shape in fields:
            return shape
    found = (f"Kubeflow Trainer {TRAINER['podSpecOverrides']}'s (spec.podSpecOverrides)"
             if "podSpecOverrides" in fields else
             "of an unknown Kubeflow Trainer version (its spec has neither runtimePatches "
             "nor podTemplateOverrides)")
    raise TrainJobError(f"the cluster's TrainJob API is {found}, which this project does not "
                        "support: install Kubeflow Trainer v2.2 or later, or v2.1 "
                        "(docs/deploy.md)", kind="ConfigError")


def shaped(body: dict, shape: str) -> tuple[dict, list[str]]:
    """``body`` (``build``'s, Trainer v2.2+) written for the Trainer whose CRD sets the
    node pods with ``shape``, and the fields that Trainer cannot carry."""
    if shape == PATCHES:
        return body, []
    spec = dict(body["spec"])
    lost = ["spec.activeDeadlineSeconds"] if spec.pop("activeDeadlineSeconds", None) else []
    overrides = []
    for patch in spec.pop(PATCHES, []):
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            template = job["template"]["spec"]["template"]
            pod = template.get("spec") or {}
            lost += [f"pod.{k}" for k in pod if k not in V21_POD]
            for key in ("initContainers", "containers"):
                if key in pod:
                    lost += [f"{key}[{c['name']}].{k}" for c in pod[key] for k in c
                             if k not in V21_CONTAINER]
                    pod = {**pod, key: [{k: v for k, v in c.items() if k in V21_CONTAINER}
                                        for c in pod[key]]}
            override = {"targetJobs": [{"name": job["name"]}],
                        "spec": {k: v for k, v in pod.items() if k in V21_POD}}
            if template.get("metadata"):
                override["metadata"] = template["metadata"]
            overrides.append(override)
    spec[OVERRIDES] = overrides
    return {**body, "spec": spec}, lost


def validate(body: dict) -> None:
    """Refuse a TrainJob the Trainer API would not read as written: a wrong type
    (pydantic's error) or a field its models do not have (lost in a round trip)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(body).to_dict()
    except ValidationError as err:
        raise ValueError(f"TrainJob {body.get('metadata', {}).get('name')} is not valid: "
                         f"{err}") from None
    lost = _lost_fields(body, parsed)
    if lost:
        raise ValueError(f"TrainJob fields unknown to the Trainer API: {', '.join(lost)}")


def _lost_fields(sent, kept, path: str = "") -> list[str]:
    if isinstance(sent, dict):
        kept = kept if isinstance(kept, dict) else {}
        return [p for k, v in sent.items() if v is not None
                for p in (_lost_fields(v, kept[k], f"{path}.{k}".lstrip(".")) if k in kept
                          else [f"{path}.{k}".lstrip(".")])]
    if isinstance(sent, list):
        kept = kept if isinstance(kept, list) else []
        return [p for i, v in enumerate(sent)
                for p in _lost_fields(v, kept[i] if i < len(kept) else None, f"{path}[{i}]")]
    return [] if kept is not None or sent is None else [path]


class Cluster:
    """The Kubernetes API calls the launching step makes, in one namespace."""

    def __init__(self, api_client, namespace: str, pod: str = ""):
        from kubernetes import client

        self.api = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = pod  # the launching step's pod, when it runs in one

    @classmethod
    def connect(cls) -> Cluster:
        """In a pod: the launcher's token (LAUNCHER_TOKEN_DIR) and its namespace;
        elsewhere: the kubeconfig."""
        import os

        from kubernetes import client, config
        from kubernetes.config.incluster_config import InClusterConfigLoader

        pod = ""
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                InClusterConfigLoader(token_filename=f"{LAUNCHER_TOKEN_DIR}/token",
                                      cert_filename=f"{LAUNCHER_TOKEN_DIR}/ca.crt").load_and_set()
                with open(f"{LAUNCHER_TOKEN_DIR}/namespace") as f:
                    namespace = f.read().strip()
                pod = os.environ.get("HOSTNAME", "")  # a pod's host name is its name
            else:
                path = os.environ.get("KUBECONFIG")  # read now, not at import
                config.load_kube_config(config_file=path)
                _, context = config.list_kube_config_contexts(config_file=path)
                namespace = context["context"].get("namespace", "default")
        except (config.ConfigException, OSError) as err:
            raise TrainJobError(
                f"no Kubernetes API credentials for starting a TrainJob ({err}): in a "
                f"pipeline the step mounts the Secret resources.launcher_token_secret at "
                f"{LAUNCHER_TOKEN_DIR} (manifests/base/trainjob-launcher.yaml); elsewhere "
                "set KUBECONFIG") from None
        return cls(client.ApiClient(), namespace, pod)

    def _call(self, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise TrainJobError(_api_problem(err, self.namespace)) from None

    def runtime_exists(self, name: str) -> bool | None:
        """None when this account may not read cluster runtimes (then the TrainJob
        itself will say if it is missing)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.get_cluster_custom_object(GROUP, VERSION, "clustertrainingruntimes",
                                                  name)
            return True
        except ApiException as err:
            if err.status in (401, 403):
                log.warning("cannot read ClusterTrainingRuntime %s (%s): starting the "
                            "TrainJob without checking it", name, err.reason)
                return None
            if err.status == 404:
                return False
            raise TrainJobError(_api_problem(err, self.namespace)) from None

    def trainjob_fields(self) -> set[str] | None:
        """The spec fields of the installed TrainJob CRD, from the API server's OpenAPI
        document of the Trainer group; None when it cannot be read."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.call_api(OPENAPI, "GET", header_params={
                "Accept": "application/json"}, auth_settings=["BearerToken"],
                _return_http_data_only=True, _preload_content=False)
            schema = json.loads(response.data)["components"]["schemas"][OPENAPI_TRAINJOB]
            return set(schema["properties"]["spec"]["properties"])
        except ApiException as err:
            log.info("cannot read %s (%s %s): the TrainJob API's fields are found by "
                     "creating it", OPENAPI, err.status, err.reason)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.info("no TrainJob schema in %s (%r): the TrainJob API's fields are found "
                     "by creating it", OPENAPI, err)
        return None

    def create(self, body: dict) -> dict:
        """With strict field validation: a field the CRD lacks is refused (UnknownFields)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, field_validation="Strict")
        except ApiException as err:
            message = _message(err)
            if err.status == 400 and UNKNOWN_FIELD.search(message):
                raise UnknownFields(UNKNOWN_FIELD.findall(message), message) from None
            if err.status == 404:
                raise TrainJobError(f"the Kubernetes API serves no {PLURAL}.{GROUP}/{VERSION} "
                                    f"in namespace {self.namespace} ({message}): install "
                                    "Kubeflow Trainer (docs/deploy.md)", kind="ConfigError"
                                    ) from None
            raise TrainJobError(_api_problem(err, self.namespace)) from None

    def get(self, name: str) -> dict | None:
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                          self.namespace, PLURAL, name)

    def delete(self, name: str) -> None:
        # Foreground: the JobSet and pods go first, so a recreated job never meets them
        self._call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace,
                   PLURAL, name, propagation_policy="Foreground")

    def delete_and_wait(self, name: str, timeout: float = 300.0, poll: float = 1.0) -> None:
        self.delete(name)
        deadline = time.monotonic() + timeout
        while self.get(name) is not None:
            if time.monotonic() > deadline:
                raise TrainJobError(f"TrainJob {name} was not deleted within {timeout:.0f} s")
            time.sleep(poll)

    def owner(self) -> dict | None:
        """An owner reference to the launching step's pod: Kubernetes deletes the
        TrainJob with that pod, however the pod ends (even without a SIGTERM)."""
        if not self.pod:
            return None
        found = self._call(self.core.read_namespaced_pod, self.pod, self.namespace)
        if found is None:
            return None
        return {"apiVersion": "v1", "kind": "Pod", "name": found.metadata.name,
                "uid": found.metadata.uid, "controller": False}

    def pods(self, name: str) -> list:
        found = self._call(self.core.list_namespaced_pod, self.namespace,
                           label_selector=f"{JOBSET_LABEL}={name}")
        return list(found.items) if found else []

    def log_lines(self, pod: str) -> Iterator[str]:
        """A pod's training-container log, followed until the container ends."""
        response = self._call(self.core.read_namespaced_pod_log, pod, self.namespace,
                              container=NODE, follow=True, _preload_content=False)
        if response is None:
            return
        pending = b""
        for chunk in response.stream(amt=None, decode_content=False):  # as they come
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line.decode(errors="replace") for line in lines)
        if pending:
            yield pending.decode(errors="replace")


def _api_problem(err, namespace: str) -> str:
    if err.status == 403:
        return (f"the Kubernetes API refused this step ({err.reason}: {_message(err)}): it "
                f"needs the scarlet-nas-trainjob-launcher Role in namespace {namespace} and "
                "its token (manifests/base/trainjob-launcher.yaml, "
                "resources.launcher_token_secret)")
    return f"the Kubernetes API answered {err.status} {err.reason}: {_message(err)}"


def _message(err) -> str:
    """The message of the API's Status answer, else its first 300 characters."""
    import json

    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return (err.body or "").strip().replace("\n", " ")[:300]


def _condition(job: dict, kind: str) -> dict | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _node_index(pod) -> int:
    labels = pod.metadata.labels or {}
    try:
        return int(labels.get(INDEX_LABEL, 0))
    except ValueError:
        return 0


def _is_node0(pod, name: str) -> bool:
    labels = pod.metadata.labels or {}
    return labels.get(JOB_LABEL) == f"{name}-{NODE}-0" and _node_index(pod) == 0


def _started(pod) -> bool:
    return pod.status is not None and pod.status.phase in ("Running", "Succeeded", "Failed")


def _scheduling_problem(pods) -> str:
    for pod in pods:
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.message:
                return cond.message
    return "no node pod was created" if not pods else "the node pods did not start"


def _node_error(pods) -> tuple[str, str]:
    """(kind, message) of the first node that wrote a termination message."""
    for pod in sorted(pods, key=_node_index):
        for status in (pod.status.container_statuses or []) if pod.status else []:
            state = status.state.terminated if status.state else None
            if status.name == NODE and state is not None and (state.message or "").strip():
                first = state.message.strip().splitlines()[0]
                kind, sep, _ = first.partition(": ")
                return (kind if sep and " " not in kind else ""), \
                    f"node {_node_index(pod)}: {first}"
    return "", ""


class _NodeLogs:
    """Node 0's log copied into this step's log while it runs, one thread per pod."""

    def __init__(self, cluster: Cluster, echo: Callable[[str], None]):
        self.cluster, self.echo = cluster, echo
        self.threads: dict[str, threading.Thread] = {}

    def follow(self, pod) -> None:
        uid = pod.metadata.uid or pod.metadata.name
        if uid in self.threads or not _started(pod):
            return
        thread = threading.Thread(target=self._copy, args=(pod.metadata.name,), daemon=True)
        self.threads[uid] = thread
        thread.start()

    def _copy(self, pod: str) -> None:
        try:
            for line in self.cluster.log_lines(pod):
                self.echo(f"[node 0] {line}")
        except Exception as err:  # logs are a convenience: the job's state decides
            log.warning("stopped following the log of %s: %s", pod, err)

    def close(self, timeout: float = 10.0) -> None:
        for thread in self.threads.values():
            thread.join(timeout)


@contextmanager
def _deleted_unless_finished(cluster: Cluster, name: str) -> Iterator[dict]:
    """Delete the TrainJob if the step ends before it does: on SIGTERM (KFP
    terminating the run) or any error of this step. A finished job stays, for
    its logs; a retry of the step replaces it."""
    outcome = {"finished": False}

    def on_term(signum, frame):
        raise TrainJobError(f"the step was stopped (signal {signum}); TrainJob {name} deleted")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main else None
    try:
        yield outcome
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if not outcome["finished"]:
            log.info("deleting TrainJob %s", name)
            try:
                cluster.delete(name)
            except TrainJobError as err:
                log.warning("could not delete TrainJob %s: %s", name, err)


def run(cluster: Cluster, body: dict, *, pending_timeout: float, poll: float = 5.0,
        echo: Callable[[str], None] = print) -> dict:
    """Create the TrainJob ``body`` (``build``'s; replacing one an earlier attempt of
    the step left) in the shape the cluster's Trainer reads, wait for it and return
    it completed; node 0's log goes to ``echo``. Raises TrainJobError with the
    failure reason; stops the TrainJob once it ran past its activeDeadlineSeconds,
    also where the Trainer cannot."""
    name = body["metadata"]["name"]
    runtime = body["spec"]["runtimeRef"]["name"]
    deadline = body["spec"].get("activeDeadlineSeconds") or 0
    if cluster.get(name) is not None:  # an earlier attempt's; the new one resumes its work
        log.info("replacing TrainJob %s left by an earlier attempt of this step", name)
        cluster.delete_and_wait(name)
    if cluster.runtime_exists(runtime) is False:
        raise TrainJobError(f"ClusterTrainingRuntime {runtime!r} not found: install Kubeflow "
                            "Trainer and its runtimes (docs/deploy.md) or set "
                            "resources.trainer_runtime", kind="ConfigError")
    owner = cluster.owner()
    if owner:
        body = {**body, "metadata": {**body["metadata"], "ownerReferences": [owner]}}
        validate(body)
    shape = _create(cluster, body)
    nodes = body["spec"]["trainer"]["numNodes"]
    log.info("TrainJob %s created for Kubeflow Trainer %s: %d nodes in namespace %s", name,
             TRAINER[shape], nodes, cluster.namespace)
    logs = _NodeLogs(cluster, echo)
    try:
        with _deleted_unless_finished(cluster, name) as outcome:
            return _wait(cluster, name, nodes, _Limits(pending_timeout, deadline, shape), poll,
                         logs, outcome)
    finally:  # after a delete, so that the followed logs end
        logs.close()


def _create(cluster: Cluster, body: dict) -> str:
    """Create ``body`` in the shape of the installed CRD (read from the API server's
    OpenAPI; if unreadable, the newest shape the API server accepts); that shape."""
    fields = cluster.trainjob_fields()
    shapes = [api_shape(fields)] if fields is not None else list(SHAPES)
    for i, shape in enumerate(shapes):
        sent, lost = shaped(body, shape)
        try:
            cluster.create(sent)
        except UnknownFields as err:
            if f"spec.{shape}" in err.fields and i + 1 < len(shapes):
                continue  # an older Trainer: its shape next
            if f"spec.{shape}" in err.fields:
                api_shape(set())  # knows none of the shapes: refuse, naming them
            raise TrainJobError(
                f"the cluster's TrainJob API (Kubeflow Trainer {TRAINER[shape]}, by its fields) "
                f"refused fields it does not know: {', '.join(err.fields)}; install Kubeflow "
                "Trainer v2.2 or later (docs/deploy.md)", kind="ConfigError") from None
        if lost:
            log.warning("Kubeflow Trainer %s cannot set %s: the node pods run with the "
                        "runtime's security context (a namespace that enforces the restricted "
                        "Pod Security Standard refuses them) and this step stops the TrainJob "
                        "at its deadline itself; Trainer v2.2 or later sets both",
                        TRAINER[shape], ", ".join(lost))
        return shape
    raise AssertionError("unreachable")


@dataclass
class _Limits:
    pending: float  # seconds for all nodes to start
    deadline: float  # seconds the TrainJob may be active (0: no limit)
    shape: str  # the spec field that set the node pods


def _pending_problem(job: dict, pods, limits: _Limits) -> str:
    spec = job.get("spec") or {}
    if spec.get("suspend"):
        queue = (job.get("metadata") or {}).get("labels", {}).get(QUEUE_LABEL)
        return ("the TrainJob is suspended" + (f": Kueue has not admitted it from LocalQueue "
                                               f"{queue}" if queue else ""))
    problem = _scheduling_problem(pods)
    if not pods and limits.shape == OVERRIDES:
        problem += (" (Trainer v2.1 cannot give the node pods a security context: a namespace "
                    "that enforces the restricted Pod Security Standard refuses them)")
    return problem


def _wait(cluster: Cluster, name: str, nodes: int, limits: _Limits, poll: float,
          logs: _NodeLogs, outcome: dict) -> dict:
    started, all_started, active_since = time.monotonic(), False, None
    while True:
        job = cluster.get(name)
        if job is None:
            raise TrainJobError(f"TrainJob {name} was deleted while this step waited")
        pods = cluster.pods(name)
        for pod in pods:
            if _is_node0(pod, name):
                logs.follow(pod)
        if _condition(job, "Complete"):
            outcome["finished"] = True
            return job
        failed = _condition(job, "Failed")
        if failed:
            outcome["finished"] = True
            kind, node = _node_error(pods)
            reason = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
            hint = (f"; it ran past resources.trainjob_deadline ({limits.deadline:.0f} s)"
                    if failed.get("reason") == "DeadlineExceeded" else "")
            raise TrainJobError(f"TrainJob {name} failed ({reason})"
                                + (f"; {node}" if node else "") + hint, kind=kind)
        now = time.monotonic()
        if active_since is None and not (job.get("spec") or {}).get("suspend"):
            active_since = now  # the Trainer's deadline counts from here too (or earlier)
        if limits.deadline and active_since is not None and \
                now - active_since > limits.deadline:
            raise TrainJobError(f"TrainJob {name} ran past resources.trainjob_deadline "
                                f"({limits.deadline:.0f} s) and was stopped")
        running = sum(_started(p) for p in pods)
        all_started = all_started or running >= nodes
        waited = now - started
        if not all_started and waited > limits.pending:
            raise TrainJobError(
                f"TrainJob {name} still waits for nodes after {waited:.0f} s ({running} of "
                f"{nodes} started): {_pending_problem(job, pods, limits)}. "
                + ("Give the queue quota" if (job.get("spec") or {}).get("suspend") else
                   "Free the GPUs, lower resources.nodes")
                + " or raise resources.pending_timeout")
        time.sleep(poll)
