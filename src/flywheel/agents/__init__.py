"""Agents that run inside the flywheel. For now, the built-in example agent
used by ``flywheel demo``; the tool-calling agent loop joins it later."""
