"""Model architectures, one file each, behind the registry in ``registry.py``."""
