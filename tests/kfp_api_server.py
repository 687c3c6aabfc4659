"""A local HTTP server speaking the KFP v2beta1 REST endpoints that the
upload/run/schedule commands call, recording every request. No cluster is
reachable from the tests; this checks what the CLI sends and that it reads
the answers, against the same kfp.Client users run."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlparse

from .local_http import JsonHandler, LocalServer


class FakeKFP(LocalServer):
    def __init__(self):
        self.requests: list[dict] = []
        self.pipelines: dict[str, str] = {}  # name -> id
        self.experiments: dict[str, str] = {}
        super().__init__(self._handler())

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _record(self, body: bytes):
                url = urlparse(self.path)
                rec = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                       "body": body, "content_type": self.headers.get("Content-Type", "")}
                try:
                    rec["json"] = json.loads(body) if body else None
                except ValueError:
                    rec["json"] = None
                fake.requests.append(rec)
                return rec

            def do_GET(self):
                rec = self._record(b"")
                path, q = rec["path"], rec["query"]
                if path == "/apis/v2beta1/healthz":
                    return self._reply(200, {"multi_user": False})
                if path == "/apis/v2beta1/pipelines":
                    name = _filter_value(q)
                    if name in fake.pipelines:
                        return self._reply(200, {"pipelines": [
                            {"pipeline_id": fake.pipelines[name], "display_name": name}],
                            "total_size": 1})
                    return self._reply(200, {})
                if path == "/apis/v2beta1/experiments":
                    name = _filter_value(q)
                    if name in fake.experiments:
                        return self._reply(200, {"experiments": [
                            {"experiment_id": fake.experiments[name], "display_name": name}],
                            "total_size": 1})
                    return self._reply(200, {})
                return self._reply(404, {"error": f"no route {path}"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                rec = self._record(self.rfile.read(length))
                path, q = rec["path"], rec["query"]
                if path == "/apis/v2beta1/pipelines/upload":
                    name = q["name"][0]
                    fake.pipelines[name] = str(uuid.uuid4())
                    return self._reply(200, {"pipeline_id": fake.pipelines[name],
                                             "display_name": name})
                if path == "/apis/v2beta1/pipelines/upload_version":
                    return self._reply(200, {"pipeline_id": q["pipelineid"][0],
                                             "pipeline_version_id": str(uuid.uuid4()),
                                             "display_name": q["name"][0]})
                if path == "/apis/v2beta1/experiments":
                    name = rec["json"]["display_name"]
                    fake.experiments[name] = str(uuid.uuid4())
                    return self._reply(200, {"experiment_id": fake.experiments[name],
                                             "display_name": name})
                if path == "/apis/v2beta1/runs":
                    return self._reply(200, {"run_id": str(uuid.uuid4()),
                                             "display_name": rec["json"]["display_name"]})
                if path == "/apis/v2beta1/recurringruns":
                    return self._reply(200, {"recurring_run_id": str(uuid.uuid4()),
                                             "display_name": rec["json"]["display_name"]})
                return self._reply(404, {"error": f"no route {path}"})

        return Handler


def _filter_value(query: dict) -> str | None:
    """The string value of a KFP list filter (name/display_name EQUALS value)."""
    raw = query.get("filter", [None])[0]
    if not raw:
        return None
    preds = json.loads(raw).get("predicates", [])
    return (preds[0].get("stringValue") or preds[0].get("string_value")) if preds else None
