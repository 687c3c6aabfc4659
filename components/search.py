from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output, TaskConfig

from ._image import check_image_version


def search(config: str, tracking_uri: str, parent_run_id: str, checkpoint_root: str,
           kfp_run_id: str, image: str, dataset: Input[Dataset], supernet: Input[Model],
           front: Output[Artifact], pareto: Output[HTML], metrics: Output[Metrics],
           task_config: TaskConfig = None
           ) -> NamedTuple("SearchOutputs", [("selected", list), ("warning", str)]):
    """NSGA-II over the supernet, in this pod or (resources.nodes > 1) on every process
    of a Kubeflow Trainer TrainJob; outputs the Pareto front, the archs to retrain and
    the supernet's warning ('' when its sampled paths showed it learned)."""
    check_image_version()
    import os
    import shutil
    from collections import namedtuple

    from scarletnas import layout, stages
    from scarletnas.nodes import Nodes
    from scarletnas.preflight import final_failure

    cfg, tracker = stages.component_context(config, parent_run_id, "search",
                                            tracking_uri=tracking_uri,
                                            checkpoint_root=checkpoint_root)
    state_dir = layout.step_state(cfg.checkpoint_root, kfp_run_id, "search")
    nodes = Nodes.for_step(cfg, "search", kfp_run_id, state_dir, image, task_config)
    os.makedirs(front.path, exist_ok=True)
    with final_failure(state_dir, "search"), tracker:
        out = stages.search(cfg, dataset.path, os.path.join(supernet.path, layout.SUPERNET),
                            front.path, layout.inside(state_dir, layout.SEARCH_STATE), tracker,
                            nodes)
    shutil.copyfile(out["files"]["pareto.html"], pareto.path)
    for k, v in out["metrics"].items():
        metrics.log_metric(k, v)
    return namedtuple("SearchOutputs", ["selected", "warning"])(out["selected"], out["warning"])
