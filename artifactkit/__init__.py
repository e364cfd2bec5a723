"""artifactkit: classify, quantize, pack, size and roundtrip-evaluate model checkpoints
under a hard artifact budget (counted code bytes + compressed weights)."""

__version__ = "0.1.0"
