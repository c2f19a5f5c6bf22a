"""stablelb: assigns LoadBalancer IPs to Services from IP pools, and keeps them stable."""

__version__ = "0.1.0"
