"""Data: video I/O, the VNEP sample schema and manifests, datasets and the toy world."""
