from ._image import check_image_version


def start_run(config: str, tracking_uri: str, checkpoint_root: str, run_ranking: bool,
              kfp_run_id: str, kfp_run_name: str, pipeline_version: str) -> str:
    """Open the MLflow parent run of this pipeline run (its params and config.json
    as the run's parameters make it); return its id."""
    check_image_version()
    from scarletnas.config import pipeline_config_from_json, with_run_parameters
    from scarletnas.tracking import start_parent_run

    cfg = with_run_parameters(pipeline_config_from_json(config), tracking_uri=tracking_uri,
                              checkpoint_root=checkpoint_root, run_ranking=run_ranking)
    return start_parent_run(cfg, cfg.tracking.uri, kfp_run_id, kfp_run_name, pipeline_version)
