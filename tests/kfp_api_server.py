"""A local HTTP server speaking the KFP v2beta1 REST endpoints that the
upload/run/schedule commands call, with the state and the rules of a real KFP
API server (2.17) behind them, and a record of every request. No cluster is
reachable from the tests; this checks what the CLI sends and that it reads the
answers, against the same kfp.Client users run.

What it keeps as the real server does: pipelines unique by name within a
namespace; an upload of a new pipeline also makes its first version, named as
the pipeline; version names unique within a pipeline (409 on a second one);
version tags validated as KFP validates them; runs and recurring runs that
reference a version (404 for one that does not exist) or carry a spec inline,
in the namespace of their experiment. Multi-user mode (``multi_user=True``):
every request but the health check needs a bearer token naming a user (401
without), and the user may only touch the namespaces given for it (403
otherwise); namespaced calls without a namespace are refused (400). Error
bodies are shaped as the server's: ``{"code", "message", "details"}`` from the
gRPC gateway, ``{"error_message", "error_details"}`` from the upload handler."""

from __future__ import annotations

import json
import re
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlparse

import yaml

from .local_http import JsonHandler, LocalServer

API = "/apis/v2beta1"
# gRPC codes the gateway puts in error bodies, by the HTTP status it answers with
GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}


class Refused(Exception):
    def __init__(self, status: int, message: str, upload: bool = False):
        super().__init__(message)
        self.status, self.message, self.upload = status, message, upload

    def body(self) -> dict:
        if self.upload:  # the multipart upload handler writes its own error shape
            return {"error_message": self.message, "error_details": self.message}
        code = GRPC_CODE.get(self.status, 2)
        return {"code": code, "message": self.message,
                "details": [{"@type": "type.googleapis.com/google.rpc.Status", "code": code,
                             "message": self.message}]}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeKFP(LocalServer):
    def __init__(self, multi_user: bool = False,
                 users: dict[str, tuple[str, set[str]]] | None = None):
        """``users``: bearer token -> (user name, namespaces the user may edit)."""
        self.multi_user = multi_user
        self.users = users or {}
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}  # id -> the API's Pipeline
        self.versions: dict[str, dict] = {}  # id -> the API's PipelineVersion
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        super().__init__(self._handler())

    # ---- what tests read ----------------------------------------------------------------
    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def pipeline(self, name: str, namespace: str = "") -> dict | None:
        return next((p for p in self.pipelines.values()
                     if p["name"] == name and p["namespace"] == namespace), None)

    def versions_of(self, pipeline_id: str) -> list[dict]:
        return [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]

    def experiment(self, name: str, namespace: str = "") -> dict | None:
        return next((e for e in self.experiments.values()
                     if e["display_name"] == name and e["namespace"] == namespace), None)

    # ---- the server's rules -------------------------------------------------------------
    def _user(self, headers) -> str:
        if not self.multi_user:
            return ""
        auth = headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        if token not in self.users:
            raise Refused(401, "Failed to check authorization. User identity is empty in the "
                               "request header: Unauthenticated")
        return self.users[token][0]

    def _namespace(self, namespace: str | None) -> str:
        """As the server's ReplaceNamespace: single-user mode has no namespaces."""
        return (namespace or "") if self.multi_user else ""

    def _authorize(self, user: str, namespace: str, verb: str, what: str,
                   upload: bool = False) -> None:
        if not self.multi_user:
            return
        if not namespace:
            raise Refused(400, f"Invalid input error: {what} cannot have an empty namespace "
                               "in multi-user mode", upload)
        token = next(t for t, (u, _) in self.users.items() if u == user)
        if namespace not in self.users[token][1]:
            raise Refused(403, f"Failed to {verb} {what}: PermissionDenied: User '{user}' is "
                               f"not authorized with reason:  (request: namespace={namespace} "
                               f"verb={verb} resource={what}): Unauthorized access", upload)

    def _pipeline_namespace_access(self, user: str, pipeline: dict, verb: str,
                                   upload: bool = False) -> None:
        # shared pipelines (no namespace) are readable by everyone
        if pipeline["namespace"] or verb not in ("get", "list"):
            self._authorize(user, pipeline["namespace"] or "kubeflow", verb, "pipelines", upload)

    def _new_version(self, pipeline: dict, name: str, spec_text: str, description: str,
                     tags: dict | None) -> dict:
        if any(v["name"] == name for v in self.versions_of(pipeline["pipeline_id"])):
            raise Refused(409, "Failed to create a pipeline version", upload=True)
        docs = list(yaml.safe_load_all(spec_text))
        version = {"pipeline_id": pipeline["pipeline_id"],
                   "pipeline_version_id": str(uuid.uuid4()), "name": name,
                   "display_name": name, "description": description, "created_at": _now(),
                   "pipeline_spec": docs[0] if len(docs) == 1 else
                   {"pipeline_spec": docs[0], "platform_spec": docs[1]}}
        if tags:
            version["tags"] = tags
        self.versions[version["pipeline_version_id"]] = version
        return version

    def _new_pipeline(self, name: str, namespace: str, description: str) -> dict:
        if self.pipeline(name, namespace):
            raise Refused(409, f"Failed to create a pipeline: AlreadyExists: pipeline {name} "
                               f"already exists in namespace '{namespace}'")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "name": name, "display_name": name,
                    "description": description, "created_at": _now(),
                    "namespace": namespace}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return pipeline

    def _experiment_for(self, user: str, body: dict, what: str) -> dict:
        experiment = self.experiments.get(body.get("experiment_id") or "")
        if experiment is None:
            raise Refused(404, f"Failed to create a {what}: NotFound: experiment "
                               f"{body.get('experiment_id')!r} not found")
        self._authorize(user, experiment["namespace"], "create", what)
        return experiment

    def _check_pipeline_source(self, body: dict) -> None:
        ref = body.get("pipeline_version_reference")
        if ref:
            version = self.versions.get(ref.get("pipeline_version_id") or "")
            if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
                raise Refused(404, "Failed to fetch a template due to error retrieving "
                                   f"pipeline version: NotFound: pipeline version "
                                   f"{ref.get('pipeline_version_id')!r} not found")
        elif not body.get("pipeline_spec"):
            raise Refused(400, "Failed to fetch a template with an empty pipeline spec manifest")

    # ---- HTTP ---------------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _record(self, body: bytes):
                url = urlparse(self.path)
                rec = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                       "body": body, "content_type": self.headers.get("Content-Type", ""),
                       "authorization": self.headers.get("Authorization", "")}
                try:
                    rec["json"] = json.loads(body) if body else None
                except ValueError:
                    rec["json"] = None
                fake.requests.append(rec)
                return rec

            def _serve(self, route, body: bytes):
                rec = self._record(body)
                try:
                    user = "" if rec["path"] == f"{API}/healthz" else fake._user(self.headers)
                    code, answer = route(rec, user)
                except Refused as err:
                    code, answer = err.status, err.body()
                self._reply(code, answer)

            def do_GET(self):
                self._serve(self._get, b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                self._serve(self._post, self.rfile.read(length))

            def _get(self, rec, user):
                path, q = rec["path"], rec["query"]
                ns = fake._namespace(_one(q, "namespace"))
                if path == f"{API}/healthz":
                    return 200, {"multi_user": fake.multi_user, "pipeline_store": "database"}
                if path == f"{API}/pipelines":
                    if ns:
                        fake._authorize(user, ns, "list", "pipelines")
                    found = [p for p in fake.pipelines.values()
                             if p["namespace"] == ns and _matches(p, q)]
                    return 200, _page("pipelines", found)
                m = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", path)
                if m:
                    pipeline = fake.pipelines.get(m[1])
                    if pipeline is None:
                        raise Refused(404, f"Failed to list pipeline versions: NotFound: "
                                           f"pipeline {m[1]!r} not found")
                    fake._pipeline_namespace_access(user, pipeline, "list")
                    found = [v for v in fake.versions_of(m[1]) if _matches(v, q)]
                    return 200, _page("pipeline_versions", found)
                if path == f"{API}/experiments":
                    fake._authorize(user, ns, "list", "experiments")
                    found = [e for e in fake.experiments.values()
                             if e["namespace"] == ns and _matches(e, q)]
                    return 200, _page("experiments", found)
                return 404, {"code": 5, "message": f"no route {path}", "details": []}

            def _post(self, rec, user):
                path, q, body = rec["path"], rec["query"], rec["json"] or {}
                if path == f"{API}/pipelines/upload":
                    ns = fake._namespace(_one(q, "namespace"))
                    if ns:  # the upload handler authorizes a namespace only when given one
                        fake._authorize(user, ns, "create", "pipelines", upload=True)
                    name = _one(q, "name") or _one(q, "display_name")
                    text = _uploaded_file(rec)
                    pipeline = fake._new_pipeline(name, ns, _one(q, "description") or "")
                    # as the real server: the pipeline's first version, named as the pipeline
                    fake._new_version(pipeline, name, text, pipeline["description"], None)
                    return 200, pipeline
                if path == f"{API}/pipelines/upload_version":
                    pipeline = fake.pipelines.get(_one(q, "pipelineid") or "")
                    if pipeline is None:
                        raise Refused(400, "Failed to create a pipeline version", upload=True)
                    try:  # a shared pipeline's versions are not authorized by this handler
                        if pipeline["namespace"]:
                            fake._authorize(user, pipeline["namespace"], "create", "pipelines")
                    except Refused as err:  # and it hides why a version was refused
                        raise Refused(400, "Failed to create a pipeline version",
                                      upload=True) from err
                    tags = json.loads(_one(q, "tags") or "null")
                    _validate_tags(tags)
                    version = fake._new_version(pipeline, _one(q, "name"), _uploaded_file(rec),
                                                _one(q, "description") or "", tags)
                    return 200, version
                if path == f"{API}/pipelines":
                    ns = fake._namespace(body.get("namespace"))
                    fake._authorize(user, ns or "kubeflow", "create", "pipelines")
                    name = body.get("name") or body.get("display_name")
                    if not name:
                        raise Refused(400, "Invalid input error: name is required")
                    return 200, fake._new_pipeline(name, ns, body.get("description") or "")
                if path == f"{API}/experiments":
                    ns = fake._namespace(body.get("namespace"))
                    fake._authorize(user, ns, "create", "experiments")
                    name = body["display_name"]
                    if fake.experiment(name, ns):
                        raise Refused(409, f"Failed to create a new experiment: AlreadyExists: "
                                           f"experiment {name} in namespace '{ns}'")
                    experiment = {"experiment_id": str(uuid.uuid4()), "display_name": name,
                                  "namespace": ns, "created_at": _now(),
                                  "storage_state": "AVAILABLE"}
                    fake.experiments[experiment["experiment_id"]] = experiment
                    return 200, experiment
                if path == f"{API}/runs":
                    if not body.get("display_name"):
                        raise Refused(400, "The run name is empty. Please specify a valid name")
                    experiment = fake._experiment_for(user, body, "run")
                    fake._check_pipeline_source(body)
                    run = {**body, "run_id": str(uuid.uuid4()), "created_at": _now(),
                           "state": "PENDING", "storage_state": "AVAILABLE",
                           "namespace": experiment["namespace"]}
                    fake.runs[run["run_id"]] = run
                    return 200, {k: v for k, v in run.items() if k != "namespace"}
                if path == f"{API}/recurringruns":
                    experiment = fake._experiment_for(user, body, "recurring run")
                    fake._check_pipeline_source(body)
                    job = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": _now(),
                           "updated_at": _now(), "status": "ENABLED",
                           "namespace": experiment["namespace"]}
                    fake.recurring_runs[job["recurring_run_id"]] = job
                    return 200, job
                return 404, {"code": 5, "message": f"no route {path}", "details": []}

        return Handler


def _one(query: dict, key: str) -> str | None:
    return query.get(key, [None])[0]


def _page(key: str, items: list[dict]) -> dict:
    return {key: items, "total_size": len(items)} if items else {}


def _matches(item: dict, query: dict) -> bool:
    """Whether ``item`` passes a KFP list filter's EQUALS predicates."""
    raw = _one(query, "filter")
    for pred in json.loads(raw).get("predicates", []) if raw else []:
        value = pred.get("stringValue", pred.get("string_value"))
        if pred.get("operation") not in ("EQUALS", 1) or value is None:
            raise Refused(400, f"Invalid input error: unsupported filter {pred}")
        if item.get(pred["key"]) != value:
            return False
    return True


def _uploaded_file(rec: dict) -> str:
    """The ``uploadfile`` part of a multipart upload, as text."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + rec["content_type"].encode() + b"\r\n\r\n" + rec["body"])
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return part.get_payload(decode=True).decode()
    raise Refused(400, "Failed to read pipeline from file", upload=True)


def _validate_tags(tags: dict | None) -> None:
    """As KFP's ValidateTags: at most 20, keys without dots, keys and values <= 63."""
    if not tags:
        return
    if len(tags) > 20:
        raise Refused(400, f"number of tags ({len(tags)}) exceeds maximum of 20 per entity",
                      upload=True)
    for key, value in tags.items():
        if not key or "." in key or len(key) > 63 or len(value) > 63:
            raise Refused(400, f"invalid tag {key!r}={value!r}", upload=True)
