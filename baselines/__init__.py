"""Codec adapters: each module wraps one maintained library behind benchmark.codec.Codec."""
