from kfp.dsl import Dataset, Metrics, Output


def prepare_data(config: str, tracking_uri: str, parent_run_id: str, checkpoint_root: str,
                 dataset: Output[Dataset], metrics: Output[Metrics]):
    """Validate and split the data; the Dataset artifact is its manifest, the one
    description of data and search space that every later step reads and checks. An
    image folder is prepared into shards, by default beside the run's checkpoints
    (``checkpoint_root/shards``), which every later step streams."""
    import dataclasses

    from scarletnas import stages

    cfg, tracker = stages.component_context(config, tracking_uri, parent_run_id, "prepare_data")
    cfg = dataclasses.replace(cfg, checkpoint_root=checkpoint_root or cfg.checkpoint_root)
    with tracker:
        manifest = stages.prepare_data(cfg, dataset.path, tracker)
    dataset.metadata.update({k: manifest[k] for k in ("dataset", "num_classes", "input_size",
                                                      "space_fingerprint")})
    for split in ("train", "val", "test"):
        metrics.log_metric(f"{split}_images", manifest[split])
