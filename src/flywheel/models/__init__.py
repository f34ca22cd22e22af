"""Model runtimes behind one interface (``ChatModel.complete``): any
OpenAI-compatible endpoint, the local llama.cpp student, and a simulated
replay teacher for offline runs."""

from flywheel.models.base import ChatModel, ChatRequest, ChatResult, FewShot, parse_calls

__all__ = ["ChatModel", "ChatRequest", "ChatResult", "FewShot", "parse_calls"]
