from ._image import check_image_version


def start_run(config: str, tracking_uri: str, kfp_run_id: str, kfp_run_name: str,
              pipeline_version: str) -> str:
    """Open the MLflow parent run of this pipeline run; return its id."""
    check_image_version()
    from scarletnas.config import pipeline_config_from_json
    from scarletnas.tracking import start_parent_run

    return start_parent_run(pipeline_config_from_json(config), tracking_uri, kfp_run_id,
                            kfp_run_name, pipeline_version)
