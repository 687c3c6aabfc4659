from kfp.dsl import Dataset, Metrics, Output

from ._image import check_image_version


def prepare_data(config: str, checkpoint_root: str, dataset: Output[Dataset],
                 metrics: Output[Metrics]):
    """Validate and split the data; the Dataset artifact is its manifest, the one
    description of data and search space that every later step reads and checks. An
    image folder is prepared into shards, by default beside the run's checkpoints
    (``checkpoint_root/shards``), which every later step streams.

    Its inputs are the same in every run of one config (no MLflow parent run, no run
    id), so KFP's cache can hand a later run this output; it logs nothing to MLflow
    itself: train_supernet records the data in each pipeline run (stages.record_prepared)."""
    check_image_version()
    import time

    from scarletnas import stages
    from scarletnas.tracking import Tracker

    started = time.perf_counter()
    # untracked (tracking_uri ''): its inputs must be the same in every run of a config
    cfg, _ = stages.component_context(config, "", "prepare_data", tracking_uri="",
                                      checkpoint_root=checkpoint_root)
    manifest = stages.prepare_data(cfg, dataset.path, Tracker("", "", "prepare_data"))
    dataset.metadata.update({k: manifest[k] for k in ("dataset", "num_classes", "input_size",
                                                      "space_fingerprint")})
    dataset.metadata["minutes"] = (time.perf_counter() - started) / 60
    for split in ("train", "val", "test"):
        metrics.log_metric(f"{split}_images", manifest[split])
