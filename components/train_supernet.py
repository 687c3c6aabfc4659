from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_supernet(config: str, tracking_uri: str, parent_run_id: str, checkpoint_root: str,
                   kfp_run_id: str, dataset: Input[Dataset], supernet: Output[Model],
                   metrics: Output[Metrics]):
    """Train the weight-sharing supernet; resumes from checkpoint_root on retry."""
    import os

    from scarletnas import stages, storage
    from scarletnas.preflight import final_failure

    cfg, tracker = stages.component_context(config, tracking_uri, parent_run_id,
                                            "train_supernet")
    state = storage.join(checkpoint_root, kfp_run_id, "supernet") if checkpoint_root else ""
    ckpt = storage.join(state, "checkpoint.pt") if state else ""
    os.makedirs(supernet.path, exist_ok=True)
    with final_failure(state, "train_supernet"), tracker:
        out = stages.train_supernet(cfg, dataset.path, os.path.join(supernet.path, "supernet.pt"),
                                    ckpt, tracker)
    supernet.metadata.update({"steps": out["steps"], "stabilizer": cfg.supernet.stabilizer})
    for k, v in out.items():
        metrics.log_metric(k, v)
