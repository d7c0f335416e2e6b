"""Model architectures, one folder each (``<arch>/model.py`` the network, ``<arch>/spec.py`` its
``ArchSpec``), listed in ``registry.py``."""
