"""allinone: degradation-aware all-in-one restoration and fusion of infrared and visible images."""
__version__ = "0.1.0"
