from typing import List

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from ._image import check_image_version


def summarize(config: str, tracking_uri: str, parent_run_id: str, warning: str,
              dataset: Input[Dataset], summaries: Input[List[Artifact]],
              leaderboard: Output[Markdown], metrics: Output[Metrics]):
    """Leaderboard of the retrained models; the best takes the champion alias if it
    beats the serving champion on this run's test split, else the challenger alias."""
    check_image_version()
    import json

    from scarletnas import stages

    cfg, tracker = stages.component_context(config, parent_run_id, "summarize",
                                            tracking_uri=tracking_uri)
    rows = []
    for artifact in summaries:
        with open(artifact.path) as f:
            rows.append(json.load(f))
    with tracker:
        out, markdown = stages.summarize(cfg, rows, tracker, warning=warning,
                                         dataset=dataset.path)
    with open(leaderboard.path, "w") as f:
        f.write(markdown)
    for k, v in out["metrics"].items():
        metrics.log_metric(k, v)
    if out["decision"]:
        metrics.log_metric("promoted", int(out["promoted"]))
