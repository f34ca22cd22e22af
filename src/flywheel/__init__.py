"""data-flywheel: make AI agents improve from their own production traffic."""

__version__ = "0.1.0"
