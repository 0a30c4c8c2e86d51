"""vans: Video-as-Answer — predict the next event of a video and show it as a video."""

__version__ = "0.1.0"
