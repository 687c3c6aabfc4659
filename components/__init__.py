"""KFP components (installed as ``scarletnas.components``): thin wrappers, one
file each, that parse inputs, call one library function and write outputs."""
