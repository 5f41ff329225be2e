"""The codec protocol, the codec registry and specs, and codecs that wrap codecs (best_of, rate matching)."""
