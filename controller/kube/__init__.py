"""Kubernetes plumbing ported from client-go's semantics to asyncio.

Nothing here knows about IP management: the package must never import ``controller.ipam``.
"""
