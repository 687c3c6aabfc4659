from kfp import dsl

from ._image import check_image_version


def finish_run(config: str, tracking_uri: str, kfp_run_id: str,
               status: dsl.PipelineTaskFinalStatus):
    """Exit handler: close this pipeline run's MLflow parent run as FINISHED or FAILED."""
    check_image_version()
    from scarletnas.config import pipeline_config_from_json, with_run_parameters
    from scarletnas.tracking import finish_parent_run

    cfg = with_run_parameters(pipeline_config_from_json(config), tracking_uri=tracking_uri)
    finish_parent_run(cfg, cfg.tracking.uri, kfp_run_id, status.state)
