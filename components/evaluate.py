from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from ._image import check_image_version


def evaluate(config: str, tracking_uri: str, parent_run_id: str, dataset: Input[Dataset],
             model: Input[Model], exported: Output[Model], summary: Output[Artifact],
             metrics: Output[Metrics]):
    """Test accuracy, cost, latency; torch.export (pt2) and ONNX export; MLflow model."""
    check_image_version()
    import json
    import os

    from scarletnas import stages

    cfg, tracker = stages.component_context(config, parent_run_id, "evaluate",
                                            tracking_uri=tracking_uri)
    os.makedirs(exported.path, exist_ok=True)
    with tracker:
        out = stages.evaluate(cfg, dataset.path, model.path, exported.path, tracker)
    with open(summary.path, "w") as f:
        json.dump(out, f, indent=1)
    exported.metadata.update({"arch": out["arch"], "formats": ["pt2", "onnx"]})
    for k, v in out.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics.log_metric(k, v)
