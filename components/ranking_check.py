from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from ._image import check_image_version


def ranking_check(config: str, tracking_uri: str, parent_run_id: str, dataset: Input[Dataset],
                  supernet: Input[Model], report: Output[Markdown], metrics: Output[Metrics]):
    """Kendall tau of supernet-predicted vs stand-alone accuracy."""
    check_image_version()
    import os

    from scarletnas import layout, stages

    cfg, tracker = stages.component_context(config, parent_run_id, "ranking_check",
                                            tracking_uri=tracking_uri)
    with tracker:
        result, markdown = stages.ranking_check(cfg, dataset.path,
                                                os.path.join(supernet.path, layout.SUPERNET),
                                                tracker)
    with open(report.path, "w") as f:
        f.write(markdown)
    for k in ("kendall_tau", "kendall_p", "spearman_rho", "spearman_p"):
        metrics.log_metric(k, result[k])
