"""Pipeline commands of ``scarlet-nas``: compile, run (locally or on a cluster),
upload, schedule, and ui (the MLflow UI over a local run)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scarletnas.config import ConfigError, PipelineConfig, load_pipeline_config, to_dict
from scarletnas.layout import LocalRun

from . import DEFAULT_IMAGE, PIPELINE_NAME

LOCAL_ROOT = "local_outputs"


def _config(args) -> PipelineConfig:
    """The validated config, refused now if the run could not succeed."""
    from scarletnas import preflight

    cfg = load_pipeline_config(args.config, args.set)
    preflight.check(cfg)
    return cfg


def _cluster_config(args) -> PipelineConfig:
    """``_config``, also refused now if its steps could not share their data on a cluster."""
    from scarletnas import preflight

    cfg = _config(args)
    preflight.check_cluster(cfg)
    return cfg


def _arguments(cfg: PipelineConfig) -> dict:
    """Run-time pipeline parameters for a validated config."""
    return {"config": json.dumps(to_dict(cfg), sort_keys=True), "tracking_uri": cfg.tracking.uri,
            "checkpoint_root": cfg.checkpoint_root, "run_ranking": cfg.ranking.enabled}


# ---- local ---------------------------------------------------------------------------
def run_local(cfg: PipelineConfig, root: str | Path = LOCAL_ROOT, verbose: bool = False,
              echo=None) -> dict:
    """Execute the compiled DAG on this machine with kfp.local (one process per
    task, in this environment); MLflow goes to a sqlite store under ``root``.
    Prints one line per step to ``echo`` (default: stdout), and KFP's own output
    only if ``verbose`` (else it goes to ``root/logs``, see ``console``). A failed
    step raises ``console.StepFailed`` with its own error."""
    import dataclasses

    from kfp import local

    from .console import LocalConsole
    from .dag import build_pipeline

    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    outputs = LocalRun(root)
    # one machine, no preemption: a failed step is reported at once, not retried; and
    # retrains take turns (unless set), each using every core: side by side, their
    # threads would fight over the same cores and both run several times slower
    cfg = dataclasses.replace(cfg, resources=dataclasses.replace(
        cfg.resources, retries=0, retrain_parallelism=cfg.resources.retrain_parallelism or 1))
    if not cfg.checkpoint_root:
        cfg.checkpoint_root = str(outputs.checkpoints)
    pipeline_root = outputs.pipeline_root
    started = time.time()
    with LocalConsole(outputs.new_logs(), verbose, echo) as console:
        console.say(f"local run: {cfg.data.dataset} data at {cfg.data.size} px, "
                    f"{cfg.space.preset} space; outputs in {root}")
        if not cfg.tracking.uri:
            cfg.tracking.uri = f"sqlite:///{outputs.mlflow_db}"
            _prepare_local_mlflow(cfg.tracking.uri, cfg.tracking.experiment, outputs.mlartifacts)
        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(pipeline_root), raise_on_error=True)
        try:
            build_pipeline(cfg)(**_arguments(cfg))
        except RuntimeError:
            if console.failed():
                raise console.failed() from None
            raise
        if console.failed():
            raise console.failed()
        run_dir = max(pipeline_root.glob(f"{PIPELINE_NAME}-*"), key=os.path.getmtime)
        out = {"run_dir": str(run_dir), "minutes": round((time.time() - started) / 60, 2),
               "tracking_uri": cfg.tracking.uri, "logs": str(console.logs),
               **_local_outputs(run_dir)}
        console.summary(out, root)
    return out


def _prepare_local_mlflow(uri: str, experiment: str, artifacts: Path) -> None:
    """Create the experiment with its artifacts beside the database (not in the
    current directory, where a file store would otherwise put them)."""
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    from mlflow import MlflowClient

    from scarletnas.tracking import ensure_experiment

    ensure_experiment(MlflowClient(uri), experiment, artifacts.as_uri())


def _local_outputs(run_dir: Path) -> dict:
    found = {}
    for key, pattern in (("pareto_html", "search/pareto"),
                         ("pareto_png", "search/front/pareto.png"),
                         ("leaderboard", "summarize/leaderboard")):
        hits = sorted(run_dir.glob(pattern))
        if hits:
            found[key] = str(hits[0])
    found["exported_models"] = sorted(str(p) for p in run_dir.rglob("exported/*"))
    return found


# ---- cluster -------------------------------------------------------------------------
TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's own name for a token file's path
PACKAGE_TAG = "scarlet-nas-package-sha256"  # a version's tag: what was compiled (no dots)


def _api_message(body) -> str:
    """What a KFP API error says: the gateway's ``message``, the upload handler's
    ``error_message``, else the body; one line, at most 300 characters."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        text = str(data.get("message") or data.get("error_message") or data.get("error") or text)
    return " ".join(text.split())[:300]


def _token_credentials(path: str, source: str):
    """kfp's credentials that read a bearer token from ``path`` before every call
    (a projected service-account token the kubelet refreshes stays valid)."""
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise ConfigError(f"{source} {path}: {err.strerror or err}") from None
    if not token:
        raise ConfigError(f"{source} {path} is empty: it should hold the bearer token")
    return ServiceAccountTokenVolumeCredentials(path)


class _KfpClient:
    """kfp.Client for one host and namespace whose calls fail with one line naming
    the host and the cause: unreachable, no or bad credentials, a refused namespace."""

    def __init__(self, host: str, namespace: str = "", token_file: str = ""):
        import kfp

        self.host = host
        self.namespace = namespace
        kwargs = {}
        if token_file:
            kwargs["credentials"] = _token_credentials(token_file, "--token-file")
        elif os.environ.get(TOKEN_ENV):
            kwargs["credentials"] = _token_credentials(os.environ[TOKEN_ENV], TOKEN_ENV)
        if namespace:
            kwargs["namespace"] = namespace
        self.client = self._call(lambda: kfp.Client(host=host, **kwargs))
        if not self.namespace:  # kfp's own context (set_user_namespace), if any
            self.namespace = self.client.get_user_namespace() or ""
        if not self.namespace and self._call(self.client.get_kfp_healthz).multi_user:
            raise ConfigError(f"the KFP API at {host} is multi-user: give --namespace (your "
                              "Kubeflow profile's namespace)")

    def __getattr__(self, name):
        method = getattr(self.client, name)
        return lambda *a, **kw: self._call(lambda: method(*a, **kw))

    def _call(self, fn):
        from kfp_server_api.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except HTTPError as err:
            reason = getattr(err, "reason", None) or err
            raise ConfigError(f"cannot reach the KFP API at {self.host} ({reason}); check "
                              "--host (e.g. a port-forward to ml-pipeline-ui)") from None
        except ApiException as err:
            raise self._refusal(err) from None
        except TimeoutError:  # kfp.Client gave up on the health check
            raise ConfigError(f"the KFP API at {self.host} does not answer its health check; "
                              "check --host, and --token-file if it needs a login") from None

    def _refusal(self, err) -> Exception:
        said = _api_message(err.body)
        answer = f"{err.status} {err.reason}" + (f": {said}" if said else "")
        if err.status == 401:
            return ConfigError(f"the KFP API at {self.host} wants credentials ({answer}); give "
                               f"--token-file FILE holding a token it accepts (or set "
                               f"{TOKEN_ENV})")
        if err.status == 403:
            where = f"namespace {self.namespace!r}" if self.namespace else "the request"
            return ConfigError(f"the KFP API at {self.host} refused {where} ({answer}); check "
                               "--namespace (your Kubeflow profile's namespace) and that "
                               "your credentials may edit it")
        return RuntimeError(f"the KFP API at {self.host} answered {answer}")

    # ---- pipelines and their versions -------------------------------------------------
    def find_pipeline(self, name: str) -> str | None:
        listed = self._call(lambda: self.client.list_pipelines(
            filter=_equals("name", name), namespace=self.namespace or None))
        return listed.pipelines[0].pipeline_id if listed.pipelines else None

    def create_pipeline(self, name: str, description: str) -> str:
        """A pipeline without versions (``upload_pipeline`` would also make a first
        version, named as the pipeline)."""
        from kfp_server_api import V2beta1Pipeline

        body = V2beta1Pipeline(name=name, display_name=name, description=description,
                               namespace=self.namespace or None)
        return self._call(lambda: self.client.pipelines.pipeline_service_create_pipeline(
            pipeline=body)).pipeline_id

    def find_version(self, pipeline_id: str, name: str):
        listed = self._call(lambda: self.client.list_pipeline_versions(
            pipeline_id, filter=_equals("name", name)))
        return listed.pipeline_versions[0] if listed.pipeline_versions else None

    def upload_version(self, package: str, pipeline_id: str, name: str, tags: dict):
        return self._call(lambda: self.client.pipeline_uploads.upload_pipeline_version(
            package, name=name, pipelineid=pipeline_id, description=DESCRIPTION,
            tags=json.dumps(tags)))


DESCRIPTION = "SCARLET-NAS one-shot NAS"


def _equals(key: str, value: str) -> str:
    """A KFP list filter: ``key`` EQUALS ``value``."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key,
                                       "stringValue": value}]})


def _client(args) -> _KfpClient:
    return _KfpClient(args.host, args.namespace or "", args.token_file or "")


def _compile_temp(cfg: PipelineConfig, image: str) -> str:
    import tempfile

    from .dag import compile_pipeline

    path = Path(tempfile.mkdtemp(), f"{PIPELINE_NAME}.yaml")
    return compile_pipeline(cfg, str(path), image)


def _with_version(package: str, version: str) -> str:
    """The package again, its ``pipeline_version`` parameter defaulting to ``version``
    (so a run started in the KFP UI records the version it runs too)."""
    import tempfile

    from kfp import compiler, components

    path = Path(tempfile.mkdtemp(), f"{PIPELINE_NAME}.yaml")
    compiler.Compiler().compile(components.load_component_from_file(package), str(path),
                                pipeline_parameters={"pipeline_version": version})
    return str(path)


def publish(client: _KfpClient, cfg: PipelineConfig, image: str, pipeline: str,
            version: str | None) -> dict:
    """The pipeline version to run ``cfg`` on ``image``: found when ``pipeline`` has a
    version of that name holding the same package, else uploaded (the pipeline too,
    if new: then it has exactly this one version). Versions are named ``version`` or,
    by default, by their package's content, so the same settings and image are
    uploaded once; a name taken by another package is refused."""
    import hashlib

    from scarletnas import __version__

    package = _compile_temp(cfg, image)
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:40]
    name = version or f"{__version__}-{digest[:12]}"
    out = {"pipeline": pipeline, "version": name}
    pipeline_id = client.find_pipeline(pipeline)
    found = client.find_version(pipeline_id, name) if pipeline_id else None
    if found is not None:
        recorded = (found.tags or {}).get(PACKAGE_TAG)
        # a version named by its content is that content (servers before KFP 2.17 drop tags)
        if recorded != digest and not (recorded is None and version is None):
            raise ConfigError(f"pipeline {pipeline!r} already has a version {name!r} holding "
                              "another package (other settings or image); give a new "
                              "--version, or none to name it by its content")
        return {**out, "pipeline_id": pipeline_id, "version_id": found.pipeline_version_id,
                "uploaded": False}
    if pipeline_id is None:
        pipeline_id = client.create_pipeline(pipeline, DESCRIPTION)
    uploaded = client.upload_version(_with_version(package, name), pipeline_id, name,
                                     {PACKAGE_TAG: digest})
    return {**out, "pipeline_id": pipeline_id, "version_id": uploaded.pipeline_version_id,
            "uploaded": True}


def kfp_cron(expr: str) -> str:
    """KFP wants six cron fields (seconds first); accept the usual five too."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(f"--cron {expr!r}: give 5 fields (minute hour day month weekday) or "
                          "6 (with seconds first), e.g. '0 3 * * *' for 03:00 daily")
    return " ".join(fields)


def cmd_compile(args) -> int:
    from scarletnas.storage import check_writable

    from .dag import compile_pipeline

    cfg = _config(args)
    check_writable(args.output)
    compile_pipeline(cfg, args.output, args.image)
    print(f"wrote {args.output} (image {args.image})")
    return 0


def _local_config(args) -> PipelineConfig:
    """``_config`` for a local run: ``--data DIR`` is short for an image folder at DIR
    with an input size fitted to its images; an image folder on this machine (or
    named by --data) is checked before anything runs."""
    from scarletnas import preflight, storage

    overrides = list(args.set)
    if args.data:
        source = args.data if storage.is_s3(args.data) else str(Path(args.data).absolute())
        overrides = ["data.dataset=imagefolder", f"data.source={json.dumps(source)}",
                     *overrides]
    cfg = load_pipeline_config(args.config, overrides)
    if cfg.data.dataset == "imagefolder" and (args.data or not storage.is_s3(cfg.data.source)):
        folder = preflight.check_image_folder(cfg)
        print(f"data:      {folder.describe()}")
        if args.data and cfg.data.input_size == 0:  # not set (or set to 0: the data's own)
            size = preflight.input_size_for(folder)
            cfg = load_pipeline_config(args.config, [*overrides, f"data.input_size={size}"])
            median = sorted(folder.sides)[len(folder.sides) // 2] if folder.sides else 0
            print(f"           input size {size} px: the median shorter side of "
                  f"{len(folder.sides)} sampled training images is {median} px, rounded to a "
                  "multiple of 8 within 8..224 (--set data.input_size=N to choose)")
        if cfg.data.flip == "auto" and cfg.data.flips:  # harm that nothing else would show
            print("           flips on: training mirrors images left to right "
                  "(--set data.flip=off where a mirror image is another class)")
    preflight.check(cfg)
    return cfg


def cmd_run(args) -> int:
    if args.local == bool(args.host):
        raise ConfigError("choose one: --local (this machine) or --host URL (a KFP API server)")
    if args.data and not args.local:
        raise ConfigError("--data is for --local runs; on a cluster set data.dataset=imagefolder "
                          "and data.source=s3://BUCKET/PREFIX")
    if args.local:
        from .console import StepFailed

        cfg = _local_config(args)
        try:
            run_local(cfg, args.output_dir, verbose=args.verbose)
        except StepFailed as err:
            failure = err.failure
            if failure.traceback and not failure.bad_input and not args.verbose:
                print(failure.traceback, file=sys.stderr)  # a bug: where it happened
            raise  # its own error, the last line (scarletnas.cli.main)
        return 0
    cfg = _cluster_config(args)
    _check_version(args.version)
    client = _client(args)
    version = publish(client, cfg, args.image, args.pipeline, args.version)
    experiment = client.create_experiment(args.experiment, namespace=client.namespace or None)
    run = client.run_pipeline(
        experiment.experiment_id,
        args.run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        params={**_arguments(cfg), "pipeline_version": version["version"]},
        pipeline_id=version["pipeline_id"], version_id=version["version_id"])
    print(json.dumps({"run_id": run.run_id, **version}))
    return 0


def _check_version(version: str | None) -> None:
    if version is not None and not 0 < len(version.strip()) <= 127:
        raise ConfigError(f"--version {version!r}: give a name of 1..127 characters")


def cmd_upload(args) -> int:
    cfg = _cluster_config(args)
    _check_version(args.version)
    print(json.dumps(publish(_client(args), cfg, args.image, args.pipeline, args.version)))
    return 0


def cmd_schedule(args) -> int:
    cfg = _cluster_config(args)
    cron = kfp_cron(args.cron)
    if args.max_concurrency < 1:
        raise ConfigError("--max-concurrency must be >= 1")
    _check_version(args.version)
    client = _client(args)
    version = publish(client, cfg, args.image, args.pipeline, args.version)
    experiment = client.create_experiment(args.experiment, namespace=client.namespace or None)
    job = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=args.name, cron_expression=cron,
        max_concurrency=args.max_concurrency, no_catchup=not args.catchup,
        params={**_arguments(cfg), "pipeline_version": version["version"]},
        pipeline_id=version["pipeline_id"], version_id=version["version_id"])
    print(json.dumps({"recurring_run_id": job.recurring_run_id, "cron": cron, **version}))
    return 0


def cmd_mlflow_user(args) -> int:
    """The MLflow account the pipeline's steps log in as (``scarletnas.mlflow_access``)."""
    from scarletnas.mlflow_access import (
        PERMISSION,
        PIPELINE_SECRET,
        grant_pipeline_user,
        write_env_file,
    )
    from scarletnas.storage import check_writable

    cfg = load_pipeline_config(args.config, args.set)
    uri = args.tracking_uri or cfg.tracking.uri
    if not uri.startswith(("http://", "https://")):
        raise ConfigError("give --tracking-uri http(s)://... (or tracking.uri in --config): the "
                          "MLflow server whose admin makes the account")
    check_writable(args.env_file)  # before a new password exists
    grant = grant_pipeline_user(uri, cfg.tracking.experiment, cfg.tracking.registered_model,
                                args.user)
    write_env_file(args.env_file, grant)
    print(json.dumps({"user": grant.username, "created": grant.created,
                      "permission": PERMISSION, "experiment": cfg.tracking.experiment,
                      "experiment_id": grant.experiment_id,
                      "registered_model": grant.registered_model, "env_file": args.env_file,
                      # the Secret to make from the file: the one the config's steps read
                      "secret": cfg.resources.mlflow_secret or PIPELINE_SECRET}))
    return 0


def cmd_ui(args) -> int:
    db = LocalRun(Path(args.output_dir).absolute()).mlflow_db
    if not db.exists():
        raise ConfigError(f"{db} not found: run `scarlet-nas run --local` first")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    from scarletnas.tracking import UI_MODE

    print(f"MLflow UI on http://127.0.0.1:{args.port}/#/?workflowType={UI_MODE} "
          "(model-training view; Ctrl-C to stop)")
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                            f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(args.port)],
                           env=env)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from scarletnas.cli import config_args as settings_args
    from scarletnas.mlflow_access import PIPELINE_USER

    def config_args(p):
        settings_args(p)
        p.add_argument("--image", default=DEFAULT_IMAGE, help="container image of every step")

    def cluster_args(p, host_required: bool = True):
        p.add_argument("--host", required=host_required,
                       help="KFP API endpoint, e.g. http://localhost:8080")
        p.add_argument("--namespace",
                       help="multi-user Kubeflow: your profile's namespace, where the pipeline, "
                            "its experiment and runs live")
        p.add_argument("--token-file", metavar="FILE",
                       help=f"a bearer token for the KFP API, read before every call (default: "
                            f"${TOKEN_ENV} if set), e.g. from kubectl create token")
        p.add_argument("--pipeline", default=PIPELINE_NAME, help="pipeline name in KFP")
        p.add_argument("--version",
                       help="pipeline version: one uploaded before with the same package, or "
                            "the name for this upload (default: named by its content)")

    p = sub.add_parser("compile", help="write the pipeline's IR YAML")
    config_args(p)
    p.add_argument("-o", "--output", default=f"{PIPELINE_NAME}.yaml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the pipeline: --local here, or --host on Kubeflow")
    config_args(p)
    p.add_argument("--local", action="store_true", help="execute the DAG on this machine")
    cluster_args(p, host_required=False)
    p.add_argument("--output-dir", default=LOCAL_ROOT, help="local runs: where outputs go")
    p.add_argument("--data", metavar="DIR",
                   help="local runs: your own images, a folder or s3:// prefix of "
                        "train/<class>/* and val/<class>/* (short for data.dataset=imagefolder, "
                        "data.source=DIR and an input size fitted to the images)")
    p.add_argument("--verbose", action="store_true",
                   help="local runs: print KFP's own output and every step's log")
    p.add_argument("--experiment", default=PIPELINE_NAME, help="KFP experiment")
    p.add_argument("--run-name")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("upload", help="upload the compiled pipeline as a new version (the "
                                      "pipeline too, the first time)")
    config_args(p)
    cluster_args(p)
    p.add_argument("--name", dest="pipeline", default=argparse.SUPPRESS,
                   help="the same as --pipeline")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("schedule", help="create a recurring run on Kubeflow")
    config_args(p)
    cluster_args(p)
    p.add_argument("--cron", required=True, help="cron expression, e.g. '0 3 * * *'")
    p.add_argument("--max-concurrency", type=int, default=1,
                   help="runs of the schedule at once (default 1: a run waits for the last)")
    p.add_argument("--catchup", action="store_true",
                   help="run the intervals missed while the schedule was paused (default: "
                        "only the next one; each run trains on the data as it is then)")
    p.add_argument("--name", default=f"{PIPELINE_NAME}-recurring", help="recurring run name")
    p.add_argument("--experiment", default=PIPELINE_NAME)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("mlflow-user",
                       help="with the MLflow admin's login, make the account the pipeline's "
                            "steps log in as: EDIT on its experiment and registered model only")
    settings_args(p)
    p.add_argument("--tracking-uri", help="the MLflow server (default: tracking.uri)")
    p.add_argument("--user", default=PIPELINE_USER, help="the account's name")
    p.add_argument("--env-file", required=True, metavar="FILE",
                   help="where its login goes (MLFLOW_TRACKING_USERNAME/PASSWORD lines, mode "
                        "0600), for kubectl create secret generic ... --from-env-file")
    p.set_defaults(func=cmd_mlflow_user)

    p = sub.add_parser("ui", help="open the MLflow UI on a local run's tracking store")
    p.add_argument("--output-dir", default=LOCAL_ROOT)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
