"""The schema: one SQLAlchemy Core table per record kind.

Rows never leave ``flywheel.store``; callers get records (``flywheel.records``).
Alembic migrations in ``migrations/`` create exactly this schema (a test
compares them). JSON columns are JSONB on PostgreSQL and TEXT on SQLite.
"""

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Time = DateTime(timezone=True)
ID = String(200)

tasks = Table(
    "tasks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("session_id", ID, nullable=False),
    Column("agent_version", ID),
    Column("input", Json),
    Column("output", Json),
    Column("success", Boolean),
    Column("confidence", Float),
    Column("error", Text),
    Column("started_at", Time, nullable=False),
    Column("ended_at", Time),
    Column("duration_ms", Float),
    Column("metadata", Json),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "workload", "started_at"),
    Index(None, "workload", "success", "started_at"),
    Index(None, "agent_version", "started_at"),
    Index(None, "session_id"),
    Index(None, "ingested_at"),
    Index(None, "workload", "ingested_at", "id"),
    Index(None, "started_at", "id"),  # the task browser's newest-first pages, unfiltered
)

steps = Table(
    "steps",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("name", String(200)),
    Column("started_at", Time, nullable=False),
    Column("ended_at", Time),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("data", Json, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "task_id", "seq"),
    Index(None, "kind", "name"),
)

otel_records = Table(
    # OpenTelemetry spans and log records as they came (redacted), kept so that a
    # trace's task is assembled from all of its records whatever order they arrive in.
    "otel_records",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("kind", String(10), nullable=False),  # span, log
    Column("span_id", String(16), nullable=False),
    Column("data", Json, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "task_id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("thumbs", Integer),
    Column("rating", Integer),
    Column("comment", Text),
    Column("edited", Boolean, nullable=False, default=False),
    Column("edited_output", Json),
    Column("retried", Boolean, nullable=False, default=False),
    Column("abandoned", Boolean, nullable=False, default=False),
    Column("source", String(200), nullable=False),
    Column("at", Time, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "task_id"),
    Index(None, "at"),
)

corrections = Table(
    "corrections",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("output", Json),
    Column("tool_calls", Json),
    Column("author", String(200), nullable=False),
    Column("at", Time, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "task_id"),
    Index(None, "at"),
)

annotations = Table(
    "annotations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("data", Json, nullable=False),
    Column("author", String(200), nullable=False),
    Column("at", Time, nullable=False),
    Column("redactions", Integer, nullable=False, default=0),
    Column("ingested_at", Time, nullable=False),
    Index(None, "task_id"),
    Index(None, "kind", "at"),
)

agent_versions = Table(
    "agent_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("parent_id", ID),
    Column("config", Json, nullable=False),
    Column("dataset_id", ID),
    Column("strategy", String(200)),
    Column("created_at", Time, nullable=False),
    Index(None, "workload", "number", unique=True),
)

deployments = Table(
    "deployments",
    metadata,
    Column("workload", String(200), primary_key=True),
    Column("stable_version", ID, nullable=False),
    Column("canary_version", ID),
    Column("canary_share", Float, nullable=False, default=0.0),
    Column("updated_at", Time, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", Json, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("revoked_at", Time),
)

# Reviewers' sessions ended before their expiry (logout): the session id's hash.
# A row is kept until the session would have expired anyway.
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", ID, nullable=False),
    Column("expires_at", Time, nullable=False),
    Column("ended_at", Time, nullable=False),
    Index(None, "expires_at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("at", Time, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("record_type", String(100), nullable=False),
    Column("record_id", ID),
    Column("details", Json, nullable=False),
    Index(None, "record_type", "record_id"),
    Index(None, "at"),
)

# ------------------------------------------------------------------ curate

datasets = Table(
    "datasets",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("parent_id", ID),
    Column("rules", Text, nullable=False),  # the rules file as given, versioned with the data
    Column("rules_hash", String(64), nullable=False),
    Column("summary", Json, nullable=False),  # counts per rule and action, dedup, splits, density
    Column("cutoff", Time),  # tasks ingested up to here were considered
    Column("created_at", Time, nullable=False),
    Index(None, "workload", "number", unique=True),
)

examples = Table(
    "examples",
    metadata,
    Column("id", ID, primary_key=True),  # content hash of (input, target)
    Column("task_id", ID, nullable=False),
    Column("session_id", ID, nullable=False),
    Column("workload", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # sft, preference
    Column("messages", Json, nullable=False),
    Column("tools_id", ID),  # the tools offered (tool_sets): thousands of examples share one list
    Column("target", Json, nullable=False),
    Column("rejected", Json),  # the worse response of a preference pair
    Column("source", String(40), nullable=False),  # correction, success, annotation
    Column("rule", String(200), nullable=False),
    Column("quality", Json, nullable=False),
    Column("task_at", Time, nullable=False),
    Column("created_at", Time, nullable=False),
    Index(None, "workload", "task_at"),
    Index(None, "task_id"),
)

tool_sets = Table(
    "tool_sets",
    metadata,
    Column("id", ID, primary_key=True),  # content hash of the list (``store.curation.tool_set_id``)
    Column("tools", Json, nullable=False),
    Column("created_at", Time, nullable=False),
)

example_embeddings = Table(
    "example_embeddings",
    metadata,
    Column("example_id", ID, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float32, unit length
    Column("created_at", Time, nullable=False),
)

dataset_examples = Table(
    "dataset_examples",
    metadata,
    Column("dataset_id", ID, primary_key=True),
    Column("example_id", ID, primary_key=True),
    Column("split", String(20), nullable=False),  # train, eval, few_shot
    Column("weight", Float, nullable=False),
    Index(None, "dataset_id", "split"),
)

review_items = Table(
    "review_items",
    metadata,
    Column("id", ID, primary_key=True),
    Column("task_id", ID, nullable=False, unique=True),
    Column("workload", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("rule", String(200), nullable=False),
    Column("priority", Float, nullable=False),
    Column("state", String(20), nullable=False),  # pending, approved, rejected, corrected
    Column("reviewer", String(200)),
    Column("dataset_id", ID),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("factors", Json),  # what the priority is made of (flywheel.curate.priority)
    Column("cycle_id", ID),  # the cycle whose review budget chose it
    Index(None, "workload", "state", "priority"),
)

judgements = Table(
    "judgements",
    metadata,
    Column("example_id", ID, primary_key=True),
    Column("prompt_version", String(40), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("scores", Json, nullable=False),
    Column("created_at", Time, nullable=False),
)

# --------------------------------------------------------------- evaluate

eval_results = Table(
    "eval_results",
    metadata,
    Column("version_id", ID, primary_key=True),
    Column("item_id", ID, primary_key=True),
    Column("dataset_id", ID, nullable=False),
    Column("category", String(200), nullable=False),
    Column("correct", Boolean, nullable=False),
    Column("calls", Json),
    Column("error", Text),
    Column("seconds", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost", Float),
    Column("created_at", Time, nullable=False),
)

eval_set_items = Table(
    # A workload's standing evaluation set: labelled items kept across cycles, never
    # trained on; an item is a curated example (its messages, tools and target).
    "eval_set_items",
    metadata,
    Column("id", ID, primary_key=True),  # the example's id (answers are cached per (version, item))
    Column("workload", String(200), nullable=False),
    Column("question", String(20), nullable=False),  # the normalised question's hash: never trained on
    Column("stratum", String(400), nullable=False),  # intent|tool(s)
    Column("provenance", String(40), nullable=False),  # correction, review, confirmed, seed, simulated
    Column("task_id", ID, nullable=False),
    Column("labelled_at", Time, nullable=False),  # when the label was made (the task's time)
    Column("added_version", Integer, nullable=False),
    Column("added_at", Time, nullable=False),
    Column("tools_fingerprint", String(64)),  # the offered tools when the label was made or re-validated
    Column("stale", String(400)),  # why the item is held out of the gate until re-validated
    Column("validated_at", Time),
    Column("retired_at", Time),  # replaced by a newer label of the same question, or removed
    Index(None, "workload", "retired_at"),
    Index(None, "workload", "question"),
)

eval_set_versions = Table(
    "eval_set_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("items", Integer, nullable=False),  # active items in this version
    Column("added", Integer, nullable=False),
    Column("retired", Integer, nullable=False),
    Column("dataset_id", ID),
    Column("summary", Json, nullable=False),  # per stratum and provenance
    Column("created_at", Time, nullable=False),
    Index(None, "workload", "number", unique=True),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("dataset_id", ID, nullable=False),
    Column("baseline_id", ID, nullable=False),
    Column("candidate_id", ID, nullable=False),
    Column("result", Json, nullable=False),  # metrics, paired comparison, the gate's decision
    Column("created_at", Time, nullable=False),
    Index(None, "workload", "created_at"),
)

eval_judgements = Table(
    "eval_judgements",
    metadata,
    Column("version_id", ID, primary_key=True),
    Column("item_id", ID, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("prompt_version", String(40), primary_key=True),
    Column("score", Float, nullable=False),
    Column("created_at", Time, nullable=False),
)

# ------------------------------------------------------------------ cycle

cycles = Table(
    "cycles",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # running, waiting, succeeded, failed
    Column("trigger", String(40), nullable=False),  # manual, schedule, volume, degradation
    Column("policy", Json, nullable=False),  # the cycle's settings, fixed at its start
    Column("result", Json, nullable=False),  # outcome and velocity metrics
    Column("started_at", Time, nullable=False),
    Column("finished_at", Time),
    Index(None, "workload", "number", unique=True),
)

cycle_stages = Table(
    "cycle_stages",
    metadata,
    Column("cycle_id", ID, primary_key=True),
    Column("stage", String(40), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # running, done, failed, skipped
    Column("inputs", Json, nullable=False),
    Column("outputs", Json, nullable=False),  # the checkpoint a resumed cycle starts from
    Column("error", Text),
    Column("started_at", Time, nullable=False),
    Column("finished_at", Time),
)

locks = Table(
    "locks",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("acquired_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False),  # a crashed holder's lease runs out
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("metric", String(100), nullable=False),
    Column("details", Json, nullable=False),
    Column("detected_at", Time, nullable=False),
    Column("cycle_id", ID),  # the cycle it triggered, if any
    Index(None, "workload", "detected_at"),
)

# Content-addressed binary artefacts a version pins (LoRA adapters, knowledge
# index snapshots): the bytes live in the store, so every machine that can read
# the store can serve the version.
artefacts = Table(
    "artefacts",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("size", Integer, nullable=False),
    Column("meta", Json, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Time, nullable=False),
)

# The agent's knowledge: items from corrections, missing-knowledge annotations
# and registered data sources, each with its source and freshness.
knowledge_items = Table(
    "knowledge_items",
    metadata,
    Column("id", ID, primary_key=True),  # hash of (workload, normalised text)
    Column("workload", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("source_kind", String(40), nullable=False),  # correction | missing_knowledge | source
    Column("source_ref", Text, nullable=False),  # task id, or source id + path
    Column("created_at", Time, nullable=False),
    Column("refreshed_at", Time, nullable=False),  # last time its source confirmed it
    Column("stale", Boolean, nullable=False),
    Column("embedding_model", String(200)),
    Column("vector", LargeBinary),  # float32, unit length
    Index(None, "workload", "stale"),
)

knowledge_sources = Table(
    "knowledge_sources",
    metadata,
    Column("id", ID, primary_key=True),
    Column("workload", String(200), nullable=False),
    Column("uri", Text, nullable=False),  # a file, a folder, or an http(s) URL
    Column("every_seconds", Integer, nullable=False),
    Column("last_read_at", Time),
    Column("state", Json, nullable=False),  # {document: sha256 of its content}
    Column("created_at", Time, nullable=False),
)
