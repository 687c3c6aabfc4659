from kfp.dsl import Dataset, Input, Metrics, Model, Output, TaskConfig

from ._image import check_image_version


def retrain(config: str, tracking_uri: str, parent_run_id: str, checkpoint_root: str,
            kfp_run_id: str, image: str, arch: str, dataset: Input[Dataset], model: Output[Model],
            metrics: Output[Metrics], task_config: TaskConfig = None):
    """Train one selected arch from scratch (plain identity skips), in this pod or
    (resources.retrain_nodes > 1) as a Kubeflow Trainer TrainJob."""
    check_image_version()
    import os

    from scarletnas import layout, stages
    from scarletnas.nodes import Nodes
    from scarletnas.preflight import final_failure

    cfg, tracker = stages.component_context(config, parent_run_id, f"retrain {arch}",
                                            tracking_uri=tracking_uri,
                                            checkpoint_root=checkpoint_root)
    key = layout.retrain_key(arch)
    ckpt = layout.step_state(cfg.checkpoint_root, kfp_run_id, "retrain", key)
    nodes = Nodes.for_step(cfg, "retrain", kfp_run_id, ckpt, image, task_config,
                           task=f"retrain-{key}")
    os.makedirs(model.path, exist_ok=True)
    with final_failure(ckpt, f"retrain {arch}"), tracker:
        out = stages.retrain(cfg, dataset.path, arch, model.path, ckpt, tracker, nodes)
    model.metadata.update({"arch": arch})
    for k, v in out.items():
        if isinstance(v, (int, float)):
            metrics.log_metric(k, v)
