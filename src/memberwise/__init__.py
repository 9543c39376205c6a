"""memberwise: an engine for personalized membership programs on e-commerce platforms."""

__version__ = "0.1.0"
