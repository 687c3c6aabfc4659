"""A local HTTP server speaking the Kubernetes API paths a TrainJob's launcher
uses (trainjobs, clustertrainingruntimes, pods, pod logs), recording every
request. No cluster is reachable from the tests; this serves the same
kubernetes client the step runs in a pod.

It also plays Kubeflow Trainer's part for the ``torch-distributed`` runtime:
a created TrainJob's nodes run as local processes with the trainer's command
and env (Secret references resolved from ``secrets``) and the PET_* variables
torchrun reads, so the job really trains. ``mode`` picks other behaviours:
"pending" (no node can be scheduled), "hold" (nodes run until deleted).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
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
LAUNCHER = {"metadata": {"name": "launcher-pod", "uid": "0f3c-launcher-uid"},
            "status": {"phase": "Running"}}  # the pod of the step that starts TrainJobs
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


class _Node:
    """One node of a TrainJob: a local process, its log and termination message."""

    def __init__(self, job: str, index: int, labels: dict, workdir: Path):
        self.index = index
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
                "status": status}


class FakeCluster(LocalServer):
    def __init__(self, workdir: Path, mode: str = "run", secrets: dict | None = None,
                 runtimes: tuple[str, ...] = ("torch-distributed",), forbid: tuple = ()):
        self.workdir, self.mode, self.secrets = workdir, mode, secrets or {}
        self.runtimes, self.forbid = runtimes, forbid  # forbid: (verb, resource) -> 403
        self.requests: list[dict] = []
        self.jobs: dict[str, dict] = {}
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
        """(verb, resource) of every request, in RBAC's words."""
        return [(r["verb"], r["resource"]) for r in self.requests]

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
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
        labels = patch["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"]
        nodes = [_Node(name, i, labels, self.workdir) for i in range(trainer["numNodes"])]
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
        if any(c not in (None, 0) for c in codes):
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
                else:
                    return self._status(404, "NotFound", f"no route {url.path}")
                fake.requests.append({"method": method, "path": url.path, "query": query,
                                      "verb": verb, "resource": resource, "body": body})
                if (verb, resource) in fake.forbid:
                    return self._status(403, "Forbidden", f"cannot {verb} {resource}")
                with fake.lock:
                    handler = getattr(self, f"_{resource.replace('/', '_')}")
                    return handler(verb, name, body, query)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

            def _clustertrainingruntimes(self, verb, name, body, query):
                if name not in fake.runtimes:
                    return self._status(404, "NotFound", f"clustertrainingruntimes {name}")
                self._reply(200, {"apiVersion": "trainer.kubeflow.org/v1alpha1",
                                  "kind": "ClusterTrainingRuntime", "metadata": {"name": name}})

            def _trainjobs(self, verb, name, body, query):
                if verb == "create":
                    # what the CRD's schema does on a real API server
                    TrainerV1alpha1TrainJob.from_dict(body)
                    name = body["metadata"]["name"]
                    if name in fake.jobs:
                        return self._status(409, "AlreadyExists", f"trainjobs {name} exists")
                    body["metadata"].update(uid=uuid.uuid4().hex, namespace="team-a")
                    fake.jobs[name] = body
                    fake._start(body)
                    return self._reply(201, body)
                if name not in fake.jobs:
                    return self._status(404, "NotFound", f'trainjobs "{name}" not found')
                if verb == "delete":
                    for node in fake.nodes.pop(name, []):
                        node.kill()
                    job = fake.jobs.pop(name)
                    return self._reply(200, job)
                return self._reply(200, {**fake.jobs[name], "status": fake._status(name)})

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
