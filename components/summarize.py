from typing import List

from kfp.dsl import Artifact, Input, Markdown, Metrics, Output

from ._image import check_image_version


def summarize(config: str, tracking_uri: str, parent_run_id: str, warning: str,
              summaries: Input[List[Artifact]], leaderboard: Output[Markdown],
              metrics: Output[Metrics]):
    """Leaderboard of the retrained models; alias the champion in the registry."""
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
        out, markdown = stages.summarize(cfg, rows, tracker, warning=warning)
    with open(leaderboard.path, "w") as f:
        f.write(markdown)
    for k, v in out["metrics"].items():
        metrics.log_metric(k, v)
