"""lrm4d core: 4D Gaussian math, renderers, model and pipeline; never imports ROS."""

__version__ = "0.1.0"
