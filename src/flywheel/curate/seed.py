"""The cold start: a workload's first evaluation and training data, from a teacher.

A new workload has no labels, so its first cycle cannot gate honestly. A seed
asks a teacher to answer a sample of the workload's inputs and stores each
answer as a labelled task of the workload, through the ingestion path like any
logged task:

* **Inputs**: a stratified sample of the workload's logged tasks (their last
  model call's messages up to the last user message, system prompts left out
  because the serving version brings its own, and the tools offered; an even
  share per stratum of intent and offered tools, ``sample_logged_inputs``), a
  task file (``read_task_file``: JSONL of ``{"messages": [...], "tools": [...]}``
  or ``{"question": ..., "tools": [...]}``, optionally with an ``"answer"`` and
  an ``"intent"``) or BFCL items (``inputs_from_bfcl``).
* **A teacher** answers each: any ``ChatModel`` (``ModelTeacher``; an
  OpenAI-compatible endpoint through ``flywheel.models.remote``), or offline
  the **replay teacher** (``ReplayTeacher``), which answers from the reference
  an input carries (a BFCL item's reference calls, a task file's ``answer``).
  The replay teacher's labels are **simulated**: their tasks say so in their
  metadata (``"label": "simulated"``, ``"simulated": true``) and carry a thumbs-up
  whose source is ``simulated-teacher``, so the standing evaluation set counts
  them as simulated (``flywheel.curate.eval_set``), never as a human's.
* **Each answer is a task** (``seed_workload``): its input, one ``llm_call``
  step (the messages, the tools, the teacher's answer) and the answer as its
  outcome; metadata ``{"seed": true, "teacher": "<model or replay>", "label":
  "teacher" | "simulated", "origin": ...}``.
* **Review everything**: every seeded task gets a review item (rule ``seed
  (<teacher>)``, its priority from ``flywheel.curate.priority``), so a human
  confirms or corrects the teacher before its answer counts as a human label:
  until then curation reads it as the task's own outcome (a teacher's) or as
  simulated.
* **Idempotent**: a seeded task's id is a hash of the workload and the input
  (``seed_task_id``), so seeding the same inputs again stores nothing twice and
  does not ask the teacher again; a seeded task missing its review item (a run
  cut short) gets it.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flywheel.curate.priority import Coverage, Scorer, uncertainty_of
from flywheel.curate.rules import ReviewPriority
from flywheel.errors import ConfigError, InvalidInput, NotFound
from flywheel.models.base import ChatModel, ChatRequest, ChatResult, last_user_text
from flywheel.records import Task, utcnow
from flywheel.store.seed import SEED_PREFIX

if TYPE_CHECKING:
    from flywheel.ingest import Ingestor
    from flywheel.store import Store
    from flywheel.workloads.bfcl import WorkloadItem

__all__ = [
    "SIMULATED_SOURCE",
    "ModelTeacher",
    "ReplayTeacher",
    "SeedInput",
    "SeedReport",
    "Teacher",
    "attach_bfcl_references",
    "inputs_from_bfcl",
    "read_task_file",
    "sample_inputs",
    "sample_logged_inputs",
    "seed_task_id",
    "seed_workload",
]

#: The source of the simulated confirmation a replay teacher's answer carries.
SIMULATED_SOURCE = "simulated-teacher"

_T = TypeVar("_T")


@dataclass(frozen=True)
class SeedInput:
    """A request to seed: the messages up to the user's question, the tools on
    offer, what stratum it is of, and (for the replay teacher) its right answer."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    intent: str | None = None
    reference: dict[str, Any] | None = None  # {"tool_calls": [...]} or {"content": "..."}
    origin: str = ""  # where it came from: "task:<id>", "file.jsonl:3", "bfcl:<id>"
    metadata: dict[str, Any] = field(default_factory=dict)  # carried into the task's metadata

    @property
    def question(self) -> str:
        return last_user_text(self.messages)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return _tool_names(self.tools)


def seed_task_id(workload: str, item: SeedInput) -> str:
    """The id of the task seeded from ``item``: a hash of the workload, the messages
    and the tools (the same input seeds one task, whichever teacher answers it)."""
    blob = orjson.dumps(
        [workload, item.messages, item.tools], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    return SEED_PREFIX + hashlib.sha256(blob).hexdigest()[:32]


def _tool_names(tools: Any) -> tuple[str, ...]:
    names = set()
    for tool in tools if isinstance(tools, list) else []:
        spec = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            names.add(spec["name"])
    return tuple(sorted(names))


def _request_of(messages: Any) -> list[dict[str, Any]]:
    """The messages a teacher answers: no system prompt (the serving version brings
    its own), up to and including the last user message; [] without one."""
    kept = [m for m in messages if isinstance(m, dict) and m.get("role") not in ("system", "developer")]
    last_user = max((i for i, m in enumerate(kept) if m.get("role") == "user"), default=-1)
    return kept[: last_user + 1]


# ----------------------------------------------------------------- sampling


def _round_robin(strata: dict[Hashable, list[_T]], rng: random.Random) -> Iterator[_T]:
    """Members of every stratum in turn (strata and members in a seeded order), so
    that a sample of any size covers as many strata as it can, evenly."""
    order = sorted(strata, key=repr)
    rng.shuffle(order)
    pools = {key: list(strata[key]) for key in order}
    for pool in pools.values():
        rng.shuffle(pool)
    while pools:
        for key in list(pools):
            pool = pools[key]
            yield pool.pop()
            if not pool:
                del pools[key]


def sample_inputs(inputs: list[SeedInput], n: int | None, *, seed: int = 0) -> list[SeedInput]:
    """At most ``n`` of ``inputs`` (all when ``n`` is None), an even share per
    stratum of intent and offered tools, in input order."""
    if n is None or n >= len(inputs):
        return list(inputs)
    strata: dict[Hashable, list[int]] = defaultdict(list)
    for index, item in enumerate(inputs):
        strata[(item.intent or "-", item.tool_names)].append(index)
    chosen: list[int] = []
    for index in _round_robin(strata, random.Random(seed)):
        chosen.append(index)
        if len(chosen) == n:
            break
    return [inputs[i] for i in sorted(chosen)]


def _input_of_task(task: Task) -> SeedInput | None:
    """The request a logged task answered, or None (no user question)."""
    calls = [s for s in task.steps if s.kind == "llm_call"]
    tools: Any = []
    if calls:
        messages: Any = calls[-1].data.get("messages") or []
        tools = calls[-1].data.get("tools") or []
    elif isinstance(task.input, list):
        messages = task.input
    elif isinstance(task.input, str) and task.input.strip():
        messages = [{"role": "user", "content": task.input}]
    else:
        return None
    request = _request_of(messages if isinstance(messages, list) else [])
    if not request or not isinstance(tools, list):
        return None
    metadata = task.metadata or {}
    intent = metadata.get("intent") or metadata.get("category")
    carried = {k: metadata[k] for k in ("category", "item_id") if isinstance(metadata.get(k), str | int)}
    return SeedInput(
        messages=request,
        tools=tools,
        intent=None if intent is None else str(intent)[:150],
        origin=f"task:{task.id}",
        metadata=carried,
    )


def sample_logged_inputs(store: Store, workload: str, n: int, *, seed: int = 0) -> list[SeedInput]:
    """Up to ``n`` distinct requests of the workload's logged tasks (seeded tasks
    left out), an even share per stratum of intent and offered tools."""
    strata: dict[Hashable, list[str]] = defaultdict(list)
    names: dict[Any, tuple[str, ...]] = {}
    for page in store.seed_candidates(workload):
        for task_id, intent, offered in page:
            if offered not in names:
                try:
                    names[offered] = _tool_names(orjson.loads(offered) if offered else None)
                except orjson.JSONDecodeError:
                    names[offered] = ()
            strata[(str(intent or "-")[:150], names[offered])].append(task_id)
    if not strata:
        raise InvalidInput(
            f"workload {workload!r} has no logged tasks to seed from",
            hint="log some traffic first, or give the inputs: --tasks FILE or --categories",
        )
    chosen: list[SeedInput] = []
    seen: set[str] = set()
    for task_id in _round_robin(strata, random.Random(seed)):
        try:
            task = store.get_task(task_id)
        except NotFound:  # deleted meanwhile
            continue
        if (task.metadata or {}).get("seed"):
            continue
        item = _input_of_task(task)
        if item is None:
            continue
        key = seed_task_id(workload, item)
        if key in seen:  # the same request logged twice
            continue
        seen.add(key)
        chosen.append(item)
        if len(chosen) == n:
            break
    return chosen


# ----------------------------------------------------------------- task files


class _Call(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class _TaskLine(BaseModel):
    """One line of a task file."""

    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    messages: list[dict[str, Any]] | None = None
    question: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    answer: list[_Call] | str | None = None
    intent: str | None = None
    category: str | None = None

    @field_validator("messages")
    @classmethod
    def _messages(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        for i, message in enumerate(value):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"message {i + 1} has no 'role'")
        if not any(m["role"] == "user" and m.get("content") for m in value):
            raise ValueError("no user message with content")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, tool in enumerate(value):
            spec = tool.get("function", tool)
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise ValueError(f"tool {i + 1} has no 'name' (give {{'type': 'function', 'function': ...}})")
            if not isinstance(spec.get("parameters", {}), dict):
                raise ValueError(f"tool {i + 1} ({spec['name']}): 'parameters' must be a JSON Schema object")
            out.append(tool if "function" in tool else {"type": "function", "function": tool})
        return out

    @model_validator(mode="after")
    def _one_request(self) -> _TaskLine:
        if (self.messages is None) == (self.question is None):
            raise ValueError("give either 'messages' or 'question'")
        if self.question is not None and not self.question.strip():
            raise ValueError("'question' is empty")
        offered = _tool_names(self.tools)
        if isinstance(self.answer, list):
            for call in self.answer:
                if call.name not in offered:
                    raise ValueError(
                        f"answer calls {call.name!r}, which is not among the tools: "
                        f"{', '.join(offered) or 'none'}"
                    )
        return self


_FILE_HINT = (
    'each line is a JSON object: {"messages": [...], "tools": [...]} or {"question": "...", '
    '"tools": [...]}, optionally with "answer" (a list of {"name", "arguments"}, or a text) and "intent"'
)


def read_task_file(path: Path) -> list[SeedInput]:
    """The inputs of a task file (JSONL), each line validated; every bad line is
    named with its field, in one error."""
    if not path.is_file():
        raise InvalidInput(f"no task file at {path}", hint=_FILE_HINT)
    inputs: list[SeedInput] = []
    problems: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc})")
                continue
            if not isinstance(data, dict):
                problems.append(f"{where}: not a JSON object")
                continue
            try:
                line = _TaskLine.model_validate(data)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
                    message = error["msg"].removeprefix("Value error, ")
                    if error["type"] == "extra_forbidden":
                        allowed = ", ".join(_TaskLine.model_fields)
                        message = f"unknown field (allowed: {allowed})"
                    problems.append(f"{where}, field {loc or '(line)'!r}: {message}")
                continue
            inputs.append(_input_of_line(line, f"{path.name}:{number}"))
    if problems:
        shown = "; ".join(problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InvalidInput(f"{len(problems)} problem(s) in {path}: {shown}{more}", hint=_FILE_HINT)
    if not inputs:
        raise InvalidInput(f"{path} holds no tasks", hint=_FILE_HINT)
    return inputs


def _input_of_line(line: _TaskLine, origin: str) -> SeedInput:
    messages = line.messages if line.messages is not None else [{"role": "user", "content": line.question}]
    reference: dict[str, Any] | None = None
    if isinstance(line.answer, list):
        reference = {"tool_calls": [c.model_dump() for c in line.answer]}
    elif isinstance(line.answer, str):
        reference = {"content": line.answer}
    intent = line.intent or line.category
    metadata: dict[str, Any] = {"item_id": str(line.id)} if line.id is not None else {}
    if line.category:
        metadata["category"] = line.category
    return SeedInput(
        messages=_request_of(messages),
        tools=line.tools,
        intent=intent,
        reference=reference,
        origin=origin,
        metadata=metadata,
    )


# ----------------------------------------------------------------- BFCL


def inputs_from_bfcl(items: Iterable[WorkloadItem]) -> list[SeedInput]:
    """BFCL items (``flywheel.workloads.bfcl``) as inputs, each with its reference calls."""
    return [
        SeedInput(
            messages=_request_of(item.messages),
            tools=item.tools,
            intent=item.category,
            reference={"tool_calls": item.reference_calls()},
            origin=f"bfcl:{item.id}",
            metadata={"category": item.category, "item_id": item.id},
        )
        for item in items
    ]


def attach_bfcl_references(inputs: list[SeedInput]) -> list[SeedInput]:
    """Inputs sampled from logged BFCL traffic (``category`` and ``item_id``
    metadata of a single-turn category), with that item's reference calls when
    the question is the item's."""
    from flywheel.workloads.bfcl import SINGLE_TURN, load_bfcl

    wanted = sorted(
        {
            str(i.metadata["category"])
            for i in inputs
            if i.reference is None and i.metadata.get("category") in SINGLE_TURN and "item_id" in i.metadata
        }
    )
    if not wanted:
        return inputs
    items = {item.id: item for item in load_bfcl(wanted)}
    out = []
    for i in inputs:
        item = items.get(str(i.metadata.get("item_id"))) if i.reference is None else None
        if item is not None and item.category == i.metadata.get("category") and item.question == i.question:
            i = SeedInput(
                i.messages, i.tools, i.intent, {"tool_calls": item.reference_calls()}, i.origin, i.metadata
            )
        out.append(i)
    return out


# ----------------------------------------------------------------- teachers


class Teacher(Protocol):
    """Answers seed inputs. ``name`` goes into the tasks' metadata; ``label`` says
    what its answers are: ``teacher`` (a model's) or ``simulated``."""

    name: str
    label: str

    def can_answer(self, item: SeedInput) -> bool: ...

    def answer(self, item: SeedInput) -> ChatResult: ...


class ModelTeacher:
    """A model answers (any ``ChatModel``: an OpenAI-compatible endpoint, the local model)."""

    label = "teacher"

    def __init__(self, model: ChatModel, *, system: str = "", max_tokens: int = 1024) -> None:
        self.model, self.system, self.max_tokens = model, system, max_tokens
        self.name = model.name

    def can_answer(self, item: SeedInput) -> bool:
        return True

    def answer(self, item: SeedInput) -> ChatResult:
        request = ChatRequest(
            messages=item.messages, tools=item.tools, system=self.system, max_tokens=self.max_tokens
        )
        return self.model.complete(request)


class ReplayTeacher:
    """The replay teacher (offline, simulated): the reference answer an input carries."""

    name = "replay"
    label = "simulated"
    model = "replay-teacher(simulated)"

    def can_answer(self, item: SeedInput) -> bool:
        return item.reference is not None

    def answer(self, item: SeedInput) -> ChatResult:
        reference = item.reference or {}
        calls = [dict(c) for c in reference.get("tool_calls") or []]
        return ChatResult(calls, str(reference.get("content") or ""), self.model, 0, 0, 0.0)


# ----------------------------------------------------------------- the run


@dataclass
class SeedReport:
    workload: str
    teacher: str
    label: str
    inputs: int = 0  # given
    seeded: list[str] = field(default_factory=list)  # tasks stored by this run
    already: int = 0  # seeded before: not asked again
    duplicates: int = 0  # the same input twice among those given
    no_reference: list[str] = field(default_factory=list)  # origins the teacher cannot answer
    failed: list[dict[str, str]] = field(default_factory=list)  # {"origin", "error"}
    review_items: int = 0  # review items added
    strata: Counter[str] = field(default_factory=Counter)  # seeded tasks per intent|tools
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "teacher": self.teacher,
            "label": self.label,
            "inputs": self.inputs,
            "seeded": len(self.seeded),
            "already_seeded": self.already,
            "duplicate_inputs": self.duplicates,
            "no_reference": len(self.no_reference),
            "failed": len(self.failed),
            "review_items": self.review_items,
            "strata": dict(sorted(self.strata.items())),
            "seconds": round(self.seconds, 3),
            "task_ids": self.seeded,
            "failures": self.failed[:100],
            "no_reference_origins": self.no_reference[:100],
        }


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _output(result: ChatResult) -> Any:
    """The outcome a seeded task logs: the calls, else the text, else no call ([])."""
    if result.calls:
        return result.calls
    return result.text if result.text.strip() else []


def _events(
    workload: str, task_id: str, item: SeedInput, teacher: Teacher, result: ChatResult, ended: float
) -> list[dict[str, Any]]:
    started = ended - max(result.seconds, 0.0)
    simulated = teacher.label == "simulated"
    metadata: dict[str, Any] = {
        **item.metadata,
        "seed": True,
        "teacher": teacher.name,
        "label": teacher.label,
        "origin": item.origin,
    }
    if item.intent is not None:
        metadata["intent"] = item.intent
    if simulated:
        metadata["simulated"] = True
    events: list[dict[str, Any]] = [
        {
            "type": "task_finished",
            "id": task_id,
            "workload": workload,
            "session_id": task_id,
            "input": item.question,
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "output": _output(result),
            "success": True,
            "confidence": result.confidence,
            "metadata": metadata,
        },
        {
            "type": "llm_call",
            "id": f"{task_id}-llm",
            "task_id": task_id,
            "seq": 1,
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "model": result.model,
            "messages": item.messages,
            "tools": item.tools,
            "response": result.as_message(),
            "input_tokens": result.input_tokens or None,
            "output_tokens": result.output_tokens or None,
        },
    ]
    if simulated:
        events.append(
            {
                "type": "feedback",
                "id": f"{task_id}-simulated",
                "task_id": task_id,
                "thumbs": 1,
                "source": SIMULATED_SOURCE,
                "at": _iso(ended),
            }
        )
    return events


def _rule(teacher_name: str, label: str) -> str:
    return (f"seed ({teacher_name}, simulated)" if label == "simulated" else f"seed ({teacher_name})")[:200]


def _review_item(
    scorer: Scorer,
    workload: str,
    task_id: str,
    teacher_name: str,
    label: str,
    confidence: float | None,
    tools: tuple[str, ...],
    intent: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A seeded task's review item: a human confirms or corrects the teacher."""
    rule = _rule(teacher_name, label)
    factors: dict[str, Any] = {"tools": list(tools), "intent": intent}
    if confidence is not None:
        factors["confidence"] = confidence
    priority, why = scorer.score(uncertainty_of(confidence), (0.0, ""), tools, intent, rule)
    who = "the replay teacher's (simulated)" if label == "simulated" else f"{teacher_name}'s"
    return {
        "id": f"review-{task_id}",
        "task_id": task_id,
        "workload": workload,
        "reason": f"confirm or correct {who} answer; {why}"[:2000],
        "rule": rule,
        "priority": priority,
        "state": "pending",
        "reviewer": None,
        "dataset_id": None,
        "created_at": now,
        "updated_at": now,
        "factors": factors,
        "cycle_id": None,
    }


def _stored_review_item(store: Store, scorer: Scorer, task_id: str, now: datetime) -> dict[str, Any] | None:
    """The review item of a seeded task stored without one (a run cut short)."""
    try:
        task = store.get_task(task_id)
    except NotFound:
        return None
    metadata = task.metadata or {}
    calls = task.output if isinstance(task.output, list) else []
    tools = tuple(sorted({str(c.get("name")) for c in calls if isinstance(c, dict)}))
    intent = metadata.get("intent") or metadata.get("category")
    return _review_item(
        scorer,
        task.workload,
        task_id,
        str(metadata.get("teacher") or "teacher"),
        str(metadata.get("label") or "teacher"),
        task.confidence,
        tools,
        None if intent is None else str(intent)[:150],
        now,
    )


def _standing_coverage(store: Store, workload: str) -> Coverage:
    latest = store.latest_eval_set(workload)
    strata = (latest or {}).get("summary", {}).get("strata")
    if latest is not None and isinstance(strata, dict):
        return Coverage.of_strata(strata, f"standing eval set v{latest['number']}")
    return Coverage({}, None, "no eval set yet")


#: The teacher failed on this many inputs before answering any: it is not reachable.
_GIVE_UP_AFTER = 3


def seed_workload(
    store: Store,
    ingestor: Ingestor,
    workload: str,
    inputs: list[SeedInput],
    teacher: Teacher,
    *,
    coverage: Coverage | None = None,
    weights: ReviewPriority | None = None,
    concurrency: int = 4,
    batch: int = 50,
    progress: Callable[[int, int], None] | None = None,
) -> SeedReport:
    """Seed ``workload``: ``teacher`` answers each new input, each answer is stored
    as a labelled task with a review item. ``coverage`` (default: the standing
    evaluation set's) and ``weights`` rank the review items; ``progress`` is called
    with (inputs done, inputs to do)."""
    if not inputs:
        raise InvalidInput("nothing to seed: no inputs were given", hint="give --tasks FILE or --sample N")
    started = time.perf_counter()
    report = SeedReport(workload, teacher.name, teacher.label, inputs=len(inputs))
    now = utcnow()
    scorer = Scorer(coverage or _standing_coverage(store, workload), weights or ReviewPriority())
    todo: dict[str, SeedInput] = {}
    for item in inputs:
        task_id = seed_task_id(workload, item)
        if task_id in todo:
            report.duplicates += 1
        else:
            todo[task_id] = item
    existing = store.existing_task_ids(list(todo))
    report.already = len(existing)
    missing = sorted(existing - store.tasks_with_review_items(sorted(existing)))
    repaired = [_stored_review_item(store, scorer, task_id, now) for task_id in missing]
    report.review_items += store.add_review_items([r for r in repaired if r is not None])
    work: list[tuple[str, SeedInput]] = []
    for task_id, item in todo.items():
        if task_id in existing:
            continue
        if not teacher.can_answer(item):
            report.no_reference.append(item.origin)
            continue
        work.append((task_id, item))
    if report.no_reference and not work and not existing:
        raise InvalidInput(
            f"the replay teacher has no reference answer for any of the {len(report.no_reference)} inputs",
            hint='give a task file whose lines carry "answer", BFCL categories (--categories), '
            "or a model: --teacher-model MODEL --teacher-url URL",
        )
    done = 0
    if progress:
        progress(0, len(work))

    def ask(job: tuple[str, SeedInput]) -> tuple[str, SeedInput, ChatResult, float]:
        try:
            result = teacher.answer(job[1])
        except Exception as exc:  # a teacher's failure is this input's, reported with it
            result = ChatResult([], "", teacher.name, 0, 0, 0.0, error=f"{type(exc).__name__}: {exc}")
        return job[0], job[1], result, time.time()

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        for chunk in _batches(work, max(concurrency, _GIVE_UP_AFTER), batch):
            events: list[dict[str, Any]] = []
            owners: list[str] = []  # the task id of each event
            answered: list[tuple[str, SeedInput, ChatResult]] = []
            for task_id, item, result, ended in pool.map(ask, chunk):
                done += 1
                if progress:
                    progress(done, len(work))
                if result.error is not None:
                    report.failed.append({"origin": item.origin, "error": result.error[:500]})
                    continue
                made = _events(workload, task_id, item, teacher, result, ended)
                events.extend(made)
                owners.extend([task_id] * len(made))
                answered.append((task_id, item, result))
            if not answered and not report.seeded:
                _give_up_if_unreachable(report, teacher)
            if not events:
                continue
            outcome = ingestor.ingest(events)
            refused = {owners[e.index] for e in outcome.rejected}
            for error in outcome.rejected:
                origin = todo[owners[error.index]].origin
                report.failed.append({"origin": origin, "error": f"refused: {error.field}: {error.message}"})
            items = []
            for task_id, item, result in answered:
                if task_id in refused:
                    continue
                report.seeded.append(task_id)
                tools = tuple(sorted({str(c["name"]) for c in result.calls}))
                report.strata[f"{item.intent or '-'}|{','.join(tools)}"] += 1
                items.append(
                    _review_item(
                        scorer, workload, task_id, teacher.name, teacher.label,
                        result.confidence, tools, item.intent, now,
                    )
                )  # fmt: skip
            report.review_items += store.add_review_items(items)
    report.seconds = time.perf_counter() - started
    return report


def _batches(work: list[_T], first: int, size: int) -> Iterator[list[_T]]:
    """``work`` in batches of ``size``, the first of ``first`` (a teacher that cannot
    be reached is found out after a few calls, not a whole batch)."""
    if work:
        yield work[:first]
    for start in range(first, len(work), size):
        yield work[start : start + size]


def _give_up_if_unreachable(report: SeedReport, teacher: Teacher) -> None:
    """Stop when the teacher has answered nothing and failed on several inputs."""
    if len(report.failed) >= _GIVE_UP_AFTER:
        first = report.failed[0]["error"]
        raise ConfigError(
            f"the teacher {teacher.name} failed on the first {len(report.failed)} inputs "
            f"and answered none: {first}",
            hint="check --teacher-url, --teacher-model and the key (FLYWHEEL_TEACHER_API_KEY); "
            "nothing was stored, so running again starts over",
        )
