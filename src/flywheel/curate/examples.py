"""Examples from tasks, their quality on named dimensions, near-duplicates and
leak-free splits."""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from flywheel.curate.rules import RulesFile
from flywheel.models.base import last_user_text
from flywheel.records import CurationTask, Task

__all__ = [
    "Example",
    "assess",
    "band_keys",
    "build_example",
    "clusters_of",
    "dominant",
    "dedup_text",
    "input_messages",
    "lsh_components",
    "minhash_signatures",
    "normalized_question",
    "near_duplicate_clusters",
    "preference_examples",
    "schema_problem",
    "split_of",
    "stratified_ranks",
    "weight",
]


@dataclass
class Example:
    id: str
    task_id: str
    session_id: str
    workload: str
    kind: str  # sft, negative, preference
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    target: dict[str, Any]  # {"tool_calls": [...]} or {"content": "..."}
    rejected: dict[str, Any] | None
    source: str  # correction, success, failure
    rule: str
    task_at: datetime
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)

    @functools.cached_property
    def question(self) -> str:
        """The last user message (read by the review reason, the dedup text and the
        question hash: found once)."""
        return last_user_text(self.messages)

    @property
    def tools_used(self) -> list[str]:
        return [c["name"] for c in self.target.get("tool_calls") or []]


def _calls_of(response: Any) -> list[dict[str, Any]] | None:
    """Tool calls in an assistant message or a list of calls, arguments parsed."""
    if isinstance(response, list) and all(isinstance(c, dict) and "name" in c for c in response):
        return [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in response]
    if isinstance(response, dict):
        if "choices" in response:  # a whole chat completion
            try:
                response = response["choices"][0]["message"]
            except (KeyError, IndexError, TypeError):
                return None
            if not isinstance(response, dict):
                return None
        calls = []
        for call in response.get("tool_calls") or []:
            function = call.get("function") or call
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = orjson.loads(arguments)
                except orjson.JSONDecodeError:
                    arguments = {"__raw__": arguments}
            calls.append({"name": function.get("name"), "arguments": arguments or {}})
        if calls or ("tool_calls" in response and not response.get("content")):
            return calls  # an empty list with no text: the answer "no call"
    return None


def _text_of(content: Any) -> Any:
    """A list of content parts as its text (the parts' texts, joined); anything else as it is."""
    if isinstance(content, list):
        texts = [p.get("text", p.get("content")) if isinstance(p, dict) else p for p in content]
        return "".join(t for t in texts if isinstance(t, str))
    return content


def _target(value: Any) -> dict[str, Any] | None:
    calls = _calls_of(value)
    if calls is not None:
        return {"tool_calls": calls}
    if isinstance(value, dict) and isinstance(value.get("choices"), list) and value["choices"]:
        choice = value["choices"][0]  # a whole chat completion with a text answer
        value = choice.get("message") if isinstance(choice, dict) else None
    if isinstance(value, dict) and "content" in value:
        content = _text_of(value.get("content"))
        return {"content": content} if content else None
    if isinstance(value, str) and value.strip():
        return {"content": value}
    return None


def _id(workload: str, messages: list[dict[str, Any]], target: dict[str, Any], kind: str) -> str:
    """The content address of an example (the hash of its canonical JSON)."""
    blob = orjson.dumps(
        [workload, kind, messages, target], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return "ex-" + hashlib.sha256(blob).hexdigest()[:32]


_tool_lists: dict[bytes, Any] = {}


def _interned(tools: Any) -> Any:
    """One shared object per distinct tool list: a million examples offering the same
    tools hold one copy of their schemas, not a million."""
    if not tools:
        return tools
    key = orjson.dumps(tools, option=orjson.OPT_NON_STR_KEYS, default=str)
    shared = _tool_lists.get(key)
    if shared is None:
        if len(_tool_lists) > 100_000:
            _tool_lists.clear()
        shared = _tool_lists[key] = tools
    return shared


def _last_call(task: Task | CurationTask) -> dict[str, Any] | None:
    """The payload of the task's last model call."""
    if isinstance(task, CurationTask):
        return task.last_call
    calls = [s for s in task.steps if s.kind == "llm_call"]
    return calls[-1].data if calls else None


_SYSTEM_ROLES = ("system", "developer")


def input_messages(call: dict[str, Any], *, drop_system: bool = False) -> list[dict[str, Any]]:
    """The messages a model call saw, system prompts included (they are part of the
    input) unless ``drop_system``; none when there is no message but a system prompt."""
    messages = [
        m
        for m in call.get("messages") or []
        if isinstance(m, dict) and not (drop_system and m.get("role") in _SYSTEM_ROLES)
    ]
    return messages if any(m.get("role") not in _SYSTEM_ROLES for m in messages) else []


def build_example(
    task: Task | CurationTask, action: str, rule: str, *, drop_system: bool = False
) -> Example | None:
    """The example a task gives: the messages its model saw (with its system prompt
    unless ``drop_system``), the tools offered, and the target (a human's
    correction, else the agent's own answer)."""
    last = _last_call(task)
    if last is None:
        return None
    messages = input_messages(last, drop_system=drop_system)
    if not messages:
        return None
    # one shared object per distinct tool list (the store's bulk loading shares them already)
    tools = last.get("tools") if isinstance(task, CurationTask) else _interned(last.get("tools"))
    agent_answer = _target(last.get("response")) or _target(task.output)
    correction = task.corrections[-1] if task.corrections else None
    human = None
    if correction is not None:
        human = (
            {"tool_calls": correction["tool_calls"]}
            if correction.get("tool_calls") is not None
            else _target(correction.get("output"))
        )
    if action == "train_negative":
        if agent_answer is None:
            return None
        kind, target, rejected, source = "negative", agent_answer, None, "failure"
    elif human is not None:
        # A correction is the best label there is; with the agent's answer it is also a preference pair.
        kind, target, source = "sft", human, "correction"
        rejected = agent_answer if agent_answer != human else None
    else:
        if agent_answer is None:
            return None
        kind, target, rejected, source = "sft", agent_answer, None, "success"
    return Example(
        id=_id(task.workload, messages, target, kind),
        task_id=task.id,
        session_id=task.session_id,
        workload=task.workload,
        kind=kind,
        messages=messages,
        tools=tools,
        target=target,
        rejected=rejected,
        source=source,
        rule=rule,
        task_at=task.ended_at or task.started_at,
    )


_validators: dict[bytes, Any] = {}


def preference_examples(task: Task | CurationTask, rule: str, *, drop_system: bool = False) -> list[Example]:
    """Pairs from reviewers' pairwise-preference annotations (ties give none)."""
    data = _last_call(task)
    if data is None or not task.annotations:
        return []
    messages = input_messages(data, drop_system=drop_system)
    out = []
    for note in task.annotations:
        body = note.get("data") or {}
        if note.get("kind") != "preference" or body.get("preferred") not in ("a", "b") or not messages:
            continue
        good, bad = (
            (body["response_a"], body["response_b"])
            if body["preferred"] == "a"
            else (body["response_b"], body["response_a"])
        )
        target, rejected = _target(good), _target(bad)
        if target is None or rejected is None:
            continue
        out.append(
            Example(
                id=_id(task.workload, messages, {"preferred": target, "rejected": rejected}, "preference"),
                task_id=task.id,
                session_id=task.session_id,
                workload=task.workload,
                kind="preference",
                messages=messages,
                tools=data.get("tools"),
                target=target,
                rejected=rejected,
                source="annotation",
                rule=rule,
                task_at=task.ended_at or task.started_at,
            )
        )
    return out


def _compiled(schema: dict[str, Any]) -> Any:
    """(fast check, full validator) of a tool's parameter schema, made once per schema.

    The fast check is the schema compiled to Python by ``fastjsonschema``; the
    full validator (``jsonschema``) only explains a failure. A schema that is
    not valid JSON Schema gives (None, None): it cannot be held against a call.
    """
    import jsonschema

    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    compiled = _validators.get(key)
    if compiled is None:
        schema = schema or {"type": "object"}
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError:
            compiled = (None, None)
        else:
            import fastjsonschema

            try:
                fast = fastjsonschema.compile(schema, use_default=False)  # never fill in the call
            except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError, RecursionError):
                fast = None  # a valid schema it cannot compile: the full validator checks it
            compiled = (fast, cls(schema))
        if len(_validators) < 10_000:
            _validators[key] = compiled
    return compiled


def schema_problem(arguments: Any, schema: dict[str, Any]) -> str | None:
    """None when ``arguments`` satisfy ``schema``, else the first problem."""
    import fastjsonschema
    import jsonschema

    fast, full = _compiled(schema)
    if full is None:
        return None
    if fast is not None:
        try:
            fast(arguments)
            return None
        except fastjsonschema.JsonSchemaValueException:
            pass  # explained below, in jsonschema's words
    error = jsonschema.exceptions.best_match(full.iter_errors(arguments))
    return None if error is None else error.message


_QUESTION_TERMS = re.compile(r"\w{4,}")


def assess(example: Example, rules: RulesFile, now: datetime) -> dict[str, dict[str, Any]]:
    """Scores in [0, 1] on accuracy, completeness, relevance and timeliness, each
    saying how it was obtained (deterministic checks; an LLM judge may add to them)."""
    offered = {}
    for tool in example.tools or []:
        spec = tool.get("function", tool) if isinstance(tool, dict) else {}
        if spec.get("name"):
            offered[spec["name"]] = spec.get("parameters") or {}
    calls = example.target.get("tool_calls")
    scores: dict[str, dict[str, Any]] = {}
    if example.source == "correction":
        scores["accuracy"] = {"score": 1.0, "method": "human correction"}
    elif calls is not None:
        problems = [
            f"{c['name']}: {problem}"
            for c in calls
            if (
                problem := (None if c["name"] in offered else "not an offered tool")
                or schema_problem(c["arguments"], offered.get(c["name"], {}))
            )
        ]
        scores["accuracy"] = {
            "score": 0.0 if problems else 1.0,
            "method": "tool call validated against its JSON schema",
            "problems": problems[:3],
        }
    else:
        scores["accuracy"] = {"score": 0.5, "method": "unverified text answer"}
    if calls is not None:
        missing = [
            f"{c['name']}.{r}"
            for c in calls
            for r in (offered.get(c["name"], {}).get("required") or [])
            if r not in (c.get("arguments") or {})
        ]
        scores["completeness"] = {
            "score": 0.0 if missing else 1.0,
            "method": "required arguments present",
            "missing": missing[:3],
        }
    else:
        text = str(example.target.get("content") or "")
        scores["completeness"] = {"score": min(1.0, len(text.strip()) / 20), "method": "non-empty answer"}
    if calls is not None:
        used = [c["name"] for c in calls]
        relevant = sum(name in offered for name in used)
        scores["relevance"] = {
            "score": relevant / len(used) if used else 1.0,
            "method": "calls only offered tools",
        }
    else:
        question_words = set(_QUESTION_TERMS.findall(example.question.lower()))
        answer_words = set(_QUESTION_TERMS.findall(str(example.target.get("content") or "").lower()))
        overlap = len(question_words & answer_words) / max(1, min(len(question_words), 8))
        scores["relevance"] = {
            "score": min(1.0, 0.5 + overlap),
            "method": "answer shares the question's terms",
        }
    age_days = max(0.0, (now - example.task_at).total_seconds() / 86400)
    scores["timeliness"] = {
        "score": 0.5 ** (age_days / rules.staleness.half_life_days),
        "method": f"half-life {rules.staleness.half_life_days} days",
        "age_days": round(age_days, 2),
    }
    return scores


def _shingles(text: str, k: int = 3) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}


_FOLD = 0x01000193  # FNV's 32-bit prime
_WORDS = re.compile(r"\w+")


def shingle_hash(shingle: bytes) -> int:
    """The 32-bit hash of a shingle (words joined by spaces): each word's CRC-32,
    folded left (``h = h * 16777619 ^ crc``, mod 2^32). The same in every
    process, and computed in numpy from the words' hashes (``minhash_signatures``)."""
    h = 0
    for word in shingle.split(b" "):
        h = ((h * _FOLD) & 0xFFFFFFFF) ^ zlib.crc32(word)
    return h


def _shingle_hashes(texts: Sequence[str], cache: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(the hashes of every text's word 3-shingles, concatenated; how many each
    text has), as ``shingle_hash`` gives them for ``_shingles``'s shingles (a
    repeated shingle appears again: the minimum does not mind)."""
    words: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for n, text in enumerate(texts):
        found = _WORDS.findall(text.lower())
        lengths[n] = len(found)
        for word in found:
            code = cache.get(word)
            if code is None:
                code = cache[word] = zlib.crc32(word.encode())
            words.append(code)
    hashes = np.zeros(len(words) + 2, dtype=np.uint32)  # two more: the last shingles' look-ahead
    hashes[: len(words)] = words
    counts = np.maximum(1, lengths - 2)  # a text of fewer than 3 words is one shingle
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    shifts = starts - np.concatenate(([0], np.cumsum(counts)[:-1]))
    first = np.repeat(shifts, counts) + np.arange(counts.sum())  # each shingle's first word
    size = np.repeat(lengths, counts)
    fold = np.uint32(_FOLD)
    h = np.where(size >= 1, hashes[first], np.uint32(0))
    h = np.where(size >= 2, (h * fold) ^ hashes[first + 1], h)
    h = np.where(size >= 3, (h * fold) ^ hashes[first + 2], h)
    return h.astype(np.uint32), counts


def _fmix32(hv: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer, the pre-mix of datasketch's ``affine32`` scheme."""
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def minhash_signatures(texts: Sequence[str], num_perm: int, *, seed: int = 7, chunk: int = 128) -> np.ndarray:
    """MinHash signatures (rows of ``num_perm`` uint32) of the texts' word 3-shingles.

    The same values as ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)``
    fed each text's shingles (its permutations, its ``affine32`` scheme), computed
    for a chunk of texts at once in numpy instead of one object per text. Small
    chunks keep the (shingles x permutations) block in the CPU's cache: 128 texts
    at a time take less than half the time per text that 4,096 do.
    """
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    cache: dict[str, int] = {}
    for start in range(0, len(texts), chunk):
        hashes, counts = _shingle_hashes(texts[start : start + chunk], cache)
        mixed = _fmix32(hashes)
        permuted = mixed[:, None] * a[None, :] + b[None, :]  # uint32: wraps mod 2^32, as datasketch's
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out[start : start + len(counts)] = np.minimum.reduceat(permuted, offsets, axis=0)
    return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key per (row, band): rows with equal keys in a band share all of
    that band's signature values (the buckets of ``datasketch.MinHashLSH``)."""
    rng = np.random.default_rng(0)
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    for band in range(bands):
        part = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        weights = rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
        keys[:, band] = (part * weights[None, :]).sum(axis=1, dtype=np.uint64)
    return keys


def lsh_components(keys: np.ndarray) -> np.ndarray:
    """A component label per row of band keys: rows sharing a bucket in any
    band (the candidates ``datasketch.MinHashLSH`` returns) are joined,
    transitively. A label is the smallest row index of its component."""
    n = len(keys)
    labels = np.arange(n, dtype=np.int64)
    if n < 2:
        return labels
    orders, starts = [], []
    for band in range(keys.shape[1]):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        first = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
        if first.all():
            continue  # no bucket of this band holds two rows
        orders.append(order)
        starts.append(np.flatnonzero(first))
    while True:  # propagate the smallest label through buckets until nothing changes
        before = labels.copy()
        for order, start in zip(orders, starts, strict=True):
            smallest = np.minimum.reduceat(labels[order], start)
            sizes = np.diff(np.append(start, len(order)))
            labels[order] = np.minimum(labels[order], np.repeat(smallest, sizes))
        while True:  # point every label at its own label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


@functools.lru_cache(maxsize=64)
def lsh_parameters(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) that datasketch's MinHashLSH chooses for a threshold (a
    numerical integration of about 15 ms: made once per setting, not per chunk)."""
    from datasketch.lsh import _optimal_param

    bands, rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(bands), int(rows)


def dedup_text(question: str, target: dict[str, Any]) -> str:
    """What near-duplicate detection compares: the question and the target."""
    return (
        question
        + " "
        + orjson.dumps(target, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str).decode()
    )


def near_duplicate_clusters(texts: Sequence[str], threshold: float, num_perm: int) -> list[list[int]]:
    """Groups of indices of near-duplicate texts (MinHash LSH, see ``lsh_components``)."""
    bands, rows = lsh_parameters(threshold, num_perm)
    return clusters_of(lsh_components(band_keys(minhash_signatures(texts, num_perm), bands, rows)))


def clusters_of(labels: np.ndarray) -> list[list[int]]:
    """Row indices grouped by component label, in order of first appearance."""
    clusters: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        clusters[label].append(i)
    return list(clusters.values())


def normalized_question(example: Example) -> str:
    return " ".join(_WORDS.findall(example.question.lower()))


def split_of(stratum_rank: float, rules: RulesFile) -> str:
    if stratum_rank < rules.splits.eval:
        return "eval"
    if stratum_rank < rules.splits.eval + rules.splits.few_shot:
        return "few_shot"
    return "train"


def stratified_ranks(keys: list[str], strata: list[str], seed: int) -> dict[str, float]:
    """For each group key, its position in (0, 1] among the groups of its stratum,
    ordered by a seeded hash: deterministic, and proportional within each stratum."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for key, stratum in zip(keys, strata, strict=True):
        by_stratum[stratum].append(key)
    ranks = {}
    for members in by_stratum.values():
        ordered = sorted(set(members), key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        for position, key in enumerate(ordered):
            ranks[key] = (position + 0.5) / len(ordered)
    return ranks


def dominant(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0] if values else ""


def weight(example: Example, rules: RulesFile) -> float:
    """Staleness: weight decays with age; a fresh human correction counts fully."""
    score = example.quality.get("timeliness", {}).get("score", 1.0)
    return 1.0 if example.source == "correction" and score > 0.5 else round(score, 6)
