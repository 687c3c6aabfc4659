from kfp.dsl import Dataset, Metrics, Output


def prepare_data(config: str, tracking_uri: str, parent_run_id: str, dataset: Output[Dataset],
                 metrics: Output[Metrics]):
    """Validate and split the data; the Dataset artifact is a small manifest."""
    import json

    from scarletnas import stages

    cfg, tracker = stages.component_context(config, tracking_uri, parent_run_id, "prepare_data")
    with tracker:
        manifest = stages.prepare_data(cfg, tracker)
    with open(dataset.path, "w") as f:
        json.dump(manifest, f, indent=1)
    dataset.metadata.update({k: manifest[k] for k in ("dataset", "num_classes", "input_size")})
    for split in ("train", "val", "test"):
        metrics.log_metric(f"{split}_images", manifest[split])
