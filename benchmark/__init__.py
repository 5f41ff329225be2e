"""cmcbench: benchmark and metrics suite for semantic (cross-modal) image compression."""

__version__ = "0.1.0"
