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
    # one machine, no preemption: a failed step is reported at once, not retried
    cfg = dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, retries=0))
    if not cfg.checkpoint_root:
        cfg.checkpoint_root = str(root / "checkpoints")
    pipeline_root = root / "pipeline_root"
    started = time.time()
    with LocalConsole(root / "logs" / time.strftime("%Y%m%d-%H%M%S"), verbose, echo) as console:
        console.say(f"local run: {cfg.data.dataset} data at {cfg.data.input_size} px, "
                    f"{cfg.space.preset} space; outputs in {root}")
        if not cfg.tracking.uri:
            cfg.tracking.uri = f"sqlite:///{root / 'mlflow.db'}"
            _prepare_local_mlflow(cfg.tracking.uri, cfg.tracking.experiment,
                                  root / "mlartifacts")
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
class _KfpClient:
    """kfp.Client whose calls fail with one line naming the host and the cause."""

    def __init__(self, host: str):
        self.host = host
        self.client = self._call(lambda: __import__("kfp").Client(host=host))

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
            raise RuntimeError(f"the KFP API at {self.host} answered {err.status} "
                               f"{err.reason}: {(err.body or '').strip()[:300]}") from None


def _client(host: str) -> _KfpClient:
    return _KfpClient(host)


def _compile_temp(cfg: PipelineConfig, image: str) -> str:
    import tempfile

    from .dag import compile_pipeline

    path = Path(tempfile.mkdtemp(), f"{PIPELINE_NAME}.yaml")
    return compile_pipeline(cfg, str(path), image)


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


def _given(args, key: str) -> bool:
    """Whether the config file or a --set names ``key`` (section.name)."""
    from scarletnas.config import read_yaml

    if any(item.split("=", 1)[0].strip() == key for item in args.set):
        return True
    section, name = key.split(".", 1)
    data = read_yaml(args.config) if args.config else None
    return isinstance(data, dict) and isinstance(data.get(section), dict) and \
        name in data[section]


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
        if args.data and not _given(args, "data.input_size"):
            size = preflight.input_size_for(folder)
            cfg = load_pipeline_config(args.config, [*overrides, f"data.input_size={size}"])
            median = sorted(folder.sides)[len(folder.sides) // 2] if folder.sides else 0
            print(f"           input size {size} px: the median shorter side of "
                  f"{len(folder.sides)} sampled training images is {median} px, rounded to a "
                  "multiple of 8 within 16..224 (--set data.input_size=N to choose)")
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
    client = _client(args.host)
    run = client.create_run_from_pipeline_package(
        _compile_temp(cfg, args.image), arguments=_arguments(cfg),
        run_name=args.run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment_name=args.experiment)
    print(json.dumps({"run_id": run.run_id}))
    return 0


def cmd_upload(args) -> int:
    cfg = _cluster_config(args)
    client = _client(args.host)
    package = _compile_temp(cfg, args.image)
    pipeline_id = client.get_pipeline_id(args.name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=args.name,
                                          description="SCARLET-NAS one-shot NAS")
        out = {"pipeline_id": pipeline.pipeline_id}
        if args.version:  # the first upload is the first version; name it too
            version = client.upload_pipeline_version(package, args.version,
                                                     pipeline_id=pipeline.pipeline_id)
            out["version_id"] = version.pipeline_version_id
    else:
        version = client.upload_pipeline_version(
            package, args.version or time.strftime("v%Y%m%d-%H%M%S"), pipeline_id=pipeline_id)
        out = {"pipeline_id": pipeline_id, "version_id": version.pipeline_version_id}
    print(json.dumps(out))
    return 0


def cmd_schedule(args) -> int:
    cfg = _cluster_config(args)
    cron = kfp_cron(args.cron)
    if args.max_concurrency < 1:
        raise ConfigError("--max-concurrency must be >= 1")
    client = _client(args.host)
    experiment = client.create_experiment(args.experiment)
    job = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=args.name, cron_expression=cron,
        max_concurrency=args.max_concurrency, no_catchup=True,
        pipeline_package_path=_compile_temp(cfg, args.image), params=_arguments(cfg))
    print(json.dumps({"recurring_run_id": job.recurring_run_id, "cron": cron}))
    return 0


def cmd_ui(args) -> int:
    db = Path(args.output_dir, "mlflow.db").absolute()
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

    def config_args(p):
        settings_args(p)
        p.add_argument("--image", default=DEFAULT_IMAGE, help="container image of every step")

    p = sub.add_parser("compile", help="write the pipeline's IR YAML")
    config_args(p)
    p.add_argument("-o", "--output", default=f"{PIPELINE_NAME}.yaml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run the pipeline: --local here, or --host on Kubeflow")
    config_args(p)
    p.add_argument("--local", action="store_true", help="execute the DAG on this machine")
    p.add_argument("--host", help="KFP API endpoint, e.g. http://localhost:8080")
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

    p = sub.add_parser("upload", help="upload the compiled pipeline (or a new version)")
    config_args(p)
    p.add_argument("--host", required=True)
    p.add_argument("--name", default=PIPELINE_NAME)
    p.add_argument("--version", help="version name (default: a timestamp)")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("schedule", help="create a recurring run on Kubeflow")
    config_args(p)
    p.add_argument("--host", required=True)
    p.add_argument("--cron", required=True, help="cron expression, e.g. '0 3 * * *'")
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--name", default=f"{PIPELINE_NAME}-recurring")
    p.add_argument("--experiment", default=PIPELINE_NAME)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("ui", help="open the MLflow UI on a local run's tracking store")
    p.add_argument("--output-dir", default=LOCAL_ROOT)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
