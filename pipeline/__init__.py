"""The Kubeflow pipeline (installed as ``scarletnas.pipeline``): the DAG, its
compilation, and the compile/run/upload/schedule commands.

Importing this package is cheap: kfp is imported by the modules that use it
(``dag``) and by the commands that need it, never by ``scarlet-nas arch``.
"""

from scarletnas import __version__

PIPELINE_NAME = "scarlet-nas"
DEFAULT_IMAGE = f"scarlet-nas:{__version__}"  # as built by docker/README.md; set --image
