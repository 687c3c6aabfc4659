"""The first thing every component does: check that the image it runs on holds
the scarlet-nas that compiled the pipeline. A component's own code travels in the
compiled pipeline; the library it calls is the image's, so the two must be one
version. The compiled pipeline sets ``SCARLETNAS_PIPELINE_VERSION`` on every task
(pipeline/dag.py) and this function's source goes into each component with it."""

VERSION_ENV = "SCARLETNAS_PIPELINE_VERSION"


def check_image_version():
    """Refuse, in one line, to run on an image whose scarlet-nas differs from the
    version that compiled the pipeline (a run outside a compiled pipeline, without
    the variable, is not checked)."""
    import os

    from scarletnas import __version__

    compiled = os.environ.get("SCARLETNAS_PIPELINE_VERSION", "")
    if compiled and compiled != __version__:
        raise RuntimeError(
            f"this pipeline was compiled by scarlet-nas {compiled} but the image holds "
            f"scarlet-nas {__version__}: compile it with --image set to the {compiled} "
            "image, or build and push that image (docker/Dockerfile)")
