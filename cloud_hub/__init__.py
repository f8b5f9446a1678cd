"""edgesync cloud_hub: the hub daemon's role, ``regional`` or ``cloud`` (``hub.py``).

A hub runs the same daemon as an edge node (``edge_node/daemon.py``): one
replication machinery, with the role as configuration and policy.
"""
