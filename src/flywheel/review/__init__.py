"""Human review owns what reviewers do: approve, reject, correct an output or a
tool call, and the four annotation kinds. Each action is a label written
through the ingest path (validated and redacted like any event), a state
change of the task's review item, and an audit event with the reviewer's
identity. The web pages and ``flywheel review`` are thin layers over it."""

from flywheel.review.actions import ACTIONS, ReviewOutcome, next_item, review, tools_of

__all__ = ["ACTIONS", "ReviewOutcome", "next_item", "review", "tools_of"]
