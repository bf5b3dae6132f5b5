"""Pure builders of the Kubernetes objects the operator writes: no I/O, no clients, no clock.

names.py    pod names, label values, label and annotation keys (approval by annotation)
podspec.py  the sandboxed pod of one step attempt; what a step's Agent and ToolPolicy grant
netpol.py   the NetworkPolicy of one step pod
status.py   the Workflow status (conditions for kstatus, the Argo CD health check)
events.py   journal events as Kubernetes Events

The one module that sends these to the API server lives beside them and is the only one here that does I/O.
"""
