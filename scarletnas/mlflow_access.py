"""The MLflow account the pipeline's steps log in as: not the server's admin but a
user of its own, with EDIT on the pipeline's experiment and registered model and
the server's default (READ in the manifests) on everything else.

``grant_pipeline_user`` is run once per server (and again to rotate the password)
with the admin's login, the MLflow client's usual ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``. With EDIT the steps create runs and logged models,
log params, metrics, inputs and artifacts, register model versions and set the
champion alias; they cannot delete the experiment or the registered model, grant
permissions, manage users, or write to any other experiment or model.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, ResourcesConfig

PIPELINE_USER = "scarlet-nas-pipeline"
# the Secret the steps read it from: resources.mlflow_secret's default
PIPELINE_SECRET = ResourcesConfig.mlflow_secret
PERMISSION = "EDIT"


@dataclass
class Grant:
    username: str
    password: str
    experiment_id: str
    registered_model: str
    created: bool  # a new user (else its password was replaced)


def _code(err: Exception) -> str:
    return getattr(err, "error_code", "") or ""


def grant_pipeline_user(tracking_uri: str, experiment: str, registered_model: str,
                        username: str = PIPELINE_USER, password: str | None = None) -> Grant:
    """As the admin: create the experiment and the registered model if missing, the
    user (or give it a new password) and grant it EDIT on both. ``password``:
    default a new random one. Refuses an admin user: the point is a lesser one."""
    import warnings

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # importing the server package warns about its web stack
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient

    from .tracking import _reachable, ensure_experiment

    if not _reachable(tracking_uri):
        raise ConfigError(f"cannot reach MLflow at {tracking_uri} (its /health does not "
                          "answer); check --tracking-uri (e.g. a port-forward to svc/mlflow)")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or \
            not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise ConfigError("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the "
                          "MLflow admin's login (the scarlet-nas-mlflow-auth Secret)")
    if username == os.environ["MLFLOW_TRACKING_USERNAME"]:
        raise ConfigError(f"--user {username!r} is the admin's login: name another account "
                          "for the pipeline")
    password = password or secrets.token_urlsafe(24)
    auth = AuthServiceClient(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        experiment_id = ensure_experiment(client, experiment)
        try:
            client.create_registered_model(registered_model)
        except MlflowException as err:
            if _code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            auth.create_user(username, password)
            created = True
        except MlflowException as err:
            if _code(err) != "RESOURCE_ALREADY_EXISTS":
                raise
            if auth.get_user(username).is_admin:
                raise ConfigError(f"MLflow user {username!r} is an admin: the pipeline needs "
                                  "an account without admin rights (name another)") from None
            auth.update_user_password(username, password)
            created = False
        for kind, key in (("experiment", experiment_id), ("registered_model", registered_model)):
            _grant(auth, username, kind, key)
    except MlflowException as err:
        raise ConfigError(_explain(tracking_uri, err)) from None
    return Grant(username, password, experiment_id, registered_model, created)


def _grant(auth, username: str, kind: str, key: str) -> None:
    """``username`` gets EDIT on the resource, whatever it had before."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, kind, key, PERMISSION)
    except MlflowException as err:
        if _code(err) != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, kind, key)
        auth.grant_user_permission(username, kind, key, PERMISSION)


def _explain(tracking_uri: str, err: Exception) -> str:
    message = str(getattr(err, "message", err)).strip().splitlines()
    first = message[0][:300] if message else type(err).__name__
    status = getattr(err, "get_http_status_code", lambda: 0)()
    if status == 401 or "401" in first:
        return (f"MLflow at {tracking_uri} refused the login ({first}); set "
                "MLFLOW_TRACKING_USERNAME/PASSWORD to the admin's")
    if status == 403 or "403" in first or "PERMISSION_DENIED" in _code(err):
        return (f"MLflow at {tracking_uri} refused ({first}); managing users takes the "
                "admin's login (MLFLOW_TRACKING_USERNAME/PASSWORD)")
    return f"MLflow at {tracking_uri}: {first}"


def write_env_file(path: str | Path, grant: Grant) -> Path:
    """The user's login as KEY=value lines for ``kubectl create secret generic
    --from-env-file``, readable by its owner only."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(f"MLFLOW_TRACKING_USERNAME={grant.username}\n"
                f"MLFLOW_TRACKING_PASSWORD={grant.password}\n")
    return path
