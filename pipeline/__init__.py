"""The Kubeflow pipeline (installed as ``scarletnas.pipeline``): the DAG, its
compilation, and the compile/run/upload/schedule commands."""
