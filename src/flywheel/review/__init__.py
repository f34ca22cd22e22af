"""Human review owns what reviewers do: approve, reject, correct an output or a
tool call, and the four annotation kinds. Each action is a label written
through the ingest path (validated and redacted like any event), a state
change of the task's review item, and an audit event with the reviewer's
identity. The web pages and ``flywheel review`` are thin layers over it.

It also owns which items are worth a reviewer's time: each cycle ranks the
pending items by the expected value of labelling them and gives its review
budget to the best (``flywheel.review.budget``), and how a label written by a
person is identified and committed (``flywheel.review.labels``): a retried label
is stored once; label, item state and audit event in one transaction."""

from flywheel.review.actions import ACTIONS, ReviewOutcome, next_item, review, tools_of
from flywheel.review.budget import (
    ReviewBatch,
    boost_review_items,
    eval_coverage,
    rank_review_items,
    select_review_batch,
)
from flywheel.review.labels import StoredLabel, label_id, store_label

__all__ = [
    "ACTIONS",
    "ReviewBatch",
    "ReviewOutcome",
    "StoredLabel",
    "boost_review_items",
    "eval_coverage",
    "label_id",
    "next_item",
    "rank_review_items",
    "review",
    "select_review_batch",
    "store_label",
    "tools_of",
]
