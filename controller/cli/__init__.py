"""`kubectl stablelb`: read-only kubectl plugin running the controller's own allocator on the cluster's state.

cluster.py loads the objects, replay.py rebuilds the allocator from them as a new leader would, and
explain.py, plan.py and status.py each answer one command; render.py turns their answers into tables or JSON.
Nothing here writes to the cluster.
"""
