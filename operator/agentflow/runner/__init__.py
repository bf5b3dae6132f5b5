"""The local driver: runs a workflow on one machine with its journal on local disk."""
