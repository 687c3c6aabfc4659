from kfp import dsl


def finish_run(config: str, tracking_uri: str, kfp_run_id: str,
               status: dsl.PipelineTaskFinalStatus):
    """Exit handler: close this pipeline run's MLflow parent run as FINISHED or FAILED."""
    from scarletnas.stages import finish_pipeline_run

    finish_pipeline_run(config, tracking_uri, kfp_run_id, status.state)
