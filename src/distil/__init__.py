"""distil: turn a large teacher model into a small student model a team owns."""

__version__ = "0.1.0"
