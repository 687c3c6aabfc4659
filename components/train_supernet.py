from kfp.dsl import Dataset, Input, Metrics, Model, Output, TaskConfig

from ._image import check_image_version


def train_supernet(config: str, tracking_uri: str, parent_run_id: str, checkpoint_root: str,
                   kfp_run_id: str, image: str, dataset: Input[Dataset], supernet: Output[Model],
                   metrics: Output[Metrics], task_config: TaskConfig = None):
    """Train the weight-sharing supernet, in this pod or (resources.nodes > 1) as a
    Kubeflow Trainer TrainJob given the task's resources; resumes on retry."""
    check_image_version()
    import os

    from scarletnas import layout, stages
    from scarletnas.nodes import Nodes
    from scarletnas.preflight import final_failure

    cfg, tracker = stages.component_context(config, parent_run_id, "train_supernet",
                                            tracking_uri=tracking_uri,
                                            checkpoint_root=checkpoint_root)
    # prepare_data's MLflow record (its output may come from KFP's cache)
    stages.record_prepared(cfg, dataset.path, tracker, dataset.metadata.get("minutes"))
    state = layout.step_state(cfg.checkpoint_root, kfp_run_id, "supernet")
    ckpt = layout.inside(state, layout.CHECKPOINT)
    nodes = Nodes.for_step(cfg, "train_supernet", kfp_run_id, state, image, task_config)
    os.makedirs(supernet.path, exist_ok=True)
    with final_failure(state, "train_supernet"), tracker:
        out = stages.train_supernet(cfg, dataset.path, os.path.join(supernet.path, layout.SUPERNET),
                                    ckpt, tracker, nodes)
    supernet.metadata.update({"steps": out["steps"], "stabilizer": cfg.supernet.stabilizer})
    for k, v in out.items():
        metrics.log_metric(k, v)
