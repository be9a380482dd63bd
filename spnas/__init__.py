"""spnas: serial-to-parallel backbone search for object detection by network morphism."""

__version__ = "0.1.0"
