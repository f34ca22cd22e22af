"""The curation rules file: which tasks become which examples.

A YAML (or TOML) file, validated before anything runs; a wrong key or value
is an error naming the line and what is allowed. It is stored verbatim with
every dataset it produced. Example::

    rules:
      - name: human corrections
        when: corrected
        action: train_positive
      - name: doubtful
        when: {any: [negative_feedback, tool_error, {confidence_below: 0.5}]}
        action: review
      - name: clean successes
        when: {all: [clean_success, {not: {retries: 1}}]}
        action: train_positive
    quality: {accuracy: 0.5, completeness: 0.5, relevance: 0.5, timeliness: 0.2, borderline: 0.1}
    dedup: {near_threshold: 0.9}
    splits: {eval: 0.2, few_shot: 0.1, seed: 0}
    staleness: {half_life_days: 30, drop_after_days: 365}
    review_priority: {uncertainty: 1.0, disagreement: 1.0, coverage: 1.0, novelty: 0.2}
    drop_system_messages: false

Rules are tried in order; the first whose condition holds decides a task's
action (``train_positive``, ``train_negative``, ``review``, ``drop``). A task no
rule matches is not used. Conditions are a signal name, ``{signal: param}``,
or ``all`` / ``any`` / ``not`` of conditions.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flywheel.errors import InvalidInput

__all__ = [
    "ACTIONS",
    "CONFIRMED_RULES",
    "DEFAULT_RULES",
    "SIGNALS",
    "ReviewPriority",
    "RulesFile",
    "load_rules",
    "parse_rules",
]

ACTIONS = ("train_positive", "train_negative", "review", "drop")

#: Every signal: its parameter's kind and what it means (the documentation).
SIGNALS: dict[str, tuple[str, str]] = {
    "retries": ("int", "a tool was called again after it failed more than N times (default 0)"),
    "fallback_tool_used": ("none", "the agent fell back to another tool"),
    "human_edit_within": ("duration", "a user edited the output within this time of the task (default 24h)"),
    "confidence_below": ("fraction", "the agent's confidence was below this (default 0.5)"),
    "negative_feedback": ("none", "thumbs down, a rating of 1-2, a retry or abandonment"),
    "positive_feedback": ("none", "thumbs up or a rating of 4-5"),
    "tool_error": ("none", "a tool call returned an error"),
    "slow": (
        "latency",
        "the task took longer than this: p95 / p99 of the workload or milliseconds (default p95)",
    ),
    "corrected": ("none", "a human corrected the output or the tool calls"),
    "clean_success": ("none", "succeeded with no tool error and no negative feedback"),
    "failed": ("none", "the task's outcome is a failure"),
}

Condition = Any  # str | {signal: param} | {"all"|"any": [Condition]} | {"not": Condition}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    when: Condition
    action: Literal["train_positive", "train_negative", "review", "drop"]

    @field_validator("when")
    @classmethod
    def _valid_condition(cls, value: Any) -> Any:
        _check_condition(value)
        return value


class Quality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accuracy: float = Field(0.5, ge=0, le=1)
    completeness: float = Field(0.5, ge=0, le=1)
    relevance: float = Field(0.5, ge=0, le=1)
    timeliness: float = Field(0.1, ge=0, le=1)
    borderline: float = Field(
        0.1, ge=0, le=0.5, description="a score this close under its threshold goes to review"
    )


class Dedup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    near_threshold: float = Field(0.9, gt=0, le=1)
    num_perm: int = Field(64, ge=16, le=512)

    @model_validator(mode="after")
    def _feasible(self) -> Dedup:
        from datasketch import MinHashLSH

        try:
            MinHashLSH(threshold=self.near_threshold, num_perm=self.num_perm)
        except ValueError as exc:
            raise ValueError(
                f"near_threshold {self.near_threshold} with num_perm {self.num_perm} is not usable ({exc}); "
                "raise num_perm or lower near_threshold"
            ) from None
        return self


class Splits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eval: float = Field(0.2, ge=0, lt=1)
    few_shot: float = Field(0.1, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _room_for_training(self) -> Splits:
        if self.eval + self.few_shot >= 1:
            raise ValueError(
                f"eval ({self.eval}) + few_shot ({self.few_shot}) must leave room for train (< 1)"
            )
        return self


class Staleness(BaseModel):
    model_config = ConfigDict(extra="forbid")
    half_life_days: float = Field(30, gt=0)
    drop_after_days: float | None = Field(365, gt=0)


class JudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="openai:MODEL[@BASE_URL] (any OpenAI-compatible endpoint)")
    disagreement: float = Field(
        0.5, gt=0, le=1, description="a larger gap to our own scores sends the example to review"
    )


class ReviewPriority(BaseModel):
    """Weights of a review item's priority: the expected value of labelling it
    (``flywheel.curate.priority``; each term is in [0, 1])."""

    model_config = ConfigDict(extra="forbid")
    uncertainty: float = Field(
        1.0, ge=0, description="low task confidence; a quality score just under its threshold"
    )
    disagreement: float = Field(
        1.0, ge=0, description="the user's reaction against the claimed outcome, a correction, the judge"
    )
    coverage: float = Field(1.0, ge=0, description="tools and intents the evaluation set holds few items of")
    novelty: float = Field(0.2, ge=0, description="tools rare in this run's examples")


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: Annotated[list[Rule], Field(min_length=1)]
    judge: JudgeSettings | None = None
    review_priority: ReviewPriority = Field(default_factory=ReviewPriority)
    quality: Quality = Field(default_factory=Quality)
    dedup: Dedup = Field(default_factory=Dedup)
    splits: Splits = Field(default_factory=Splits)
    staleness: Staleness = Field(default_factory=Staleness)
    drop_system_messages: bool = Field(
        False,
        description="leave system prompts out of the examples (kept by default: they are part of the input)",
    )
    source: str = Field("", exclude=True)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


def _duration_hours(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if (
        isinstance(value, str)
        and len(value) > 1
        and value[-1] in "mhd"
        and value[:-1].replace(".", "", 1).isdigit()
    ):
        number = float(value[:-1])
        hours = {"m": number / 60, "h": number, "d": number * 24}[value[-1]]
        if hours > 0:
            return hours
    raise ValueError(f"{value!r} is not a duration: use a number of hours or e.g. 30m, 24h, 7d")


def _check_param(signal: str, param: Any) -> None:
    kind = SIGNALS[signal][0]
    if kind == "none":
        if param not in (None, True):
            raise ValueError(f"signal {signal!r} takes no parameter (got {param!r})")
    elif kind == "int":
        if not isinstance(param, int) or isinstance(param, bool) or param < 0:
            raise ValueError(f"{signal}: expected a whole number >= 0, got {param!r}")
    elif kind == "fraction":
        if not isinstance(param, int | float) or isinstance(param, bool) or not 0 < param <= 1:
            raise ValueError(
                f"{signal}: expected a number in (0, 1], got {param!r} (an impossible threshold)"
            )
    elif kind == "duration":
        _duration_hours(param)
    elif kind == "latency":
        percentile = param in ("p50", "p90", "p95", "p99")
        milliseconds = isinstance(param, int | float) and not isinstance(param, bool) and param > 0
        if not (percentile or milliseconds):
            raise ValueError(f"{signal}: expected p50, p90, p95, p99 or milliseconds > 0, got {param!r}")


def _check_condition(condition: Any) -> None:
    if isinstance(condition, str):
        if condition not in SIGNALS:
            raise ValueError(f"unknown signal {condition!r}; known signals: {', '.join(SIGNALS)}")
        return
    if isinstance(condition, dict) and len(condition) == 1:
        key, value = next(iter(condition.items()))
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{key!r} needs a non-empty list of conditions")
            for item in value:
                _check_condition(item)
            return
        if key == "not":
            _check_condition(value)
            return
        if key in SIGNALS:
            _check_param(key, value)
            return
        raise ValueError(f"unknown signal or combinator {key!r}; known: all, any, not, {', '.join(SIGNALS)}")
    raise ValueError(
        f"a condition is a signal name, {{signal: parameter}}, or all/any/not; got {condition!r}"
    )


def _line_of(root: Any, path: tuple[Any, ...]) -> int | None:
    """The (1-based) line of ``path`` in a composed YAML document."""
    node, line = root, None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_rules(text: str, *, name: str = "rules", toml: bool = False) -> RulesFile:
    """Validate a rules document; errors name the line and the allowed values."""
    try:
        data = tomllib.loads(text) if toml else yaml.safe_load(text)
        root = None if toml else yaml.compose(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"{name}: not valid {'TOML' if toml else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{name}: the rules file must be a mapping with a 'rules' list")
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(root, loc) if root is not None else None
            where = f"line {line}" if line else ".".join(map(str, loc)) or "(top)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            elif error["type"] == "literal_error":
                message = f"{error['input']!r} is not allowed; choose one of {', '.join(ACTIONS)}"
            problems.append(f"{name}, {where} ({'.'.join(map(str, loc))}): {message}")
        raise InvalidInput("; ".join(problems), hint="see the rules reference in docs/curate.md") from None
    rules.source = text
    return rules


def load_rules(path: Path) -> RulesFile:
    if not path.is_file():
        raise InvalidInput(f"no rules file at {path}")
    return parse_rules(path.read_text(encoding="utf-8"), name=str(path), toml=path.suffix == ".toml")


DEFAULT_RULES = """\
# data-flywheel default curation rules (see docs/curate.md)
rules:
  - name: human corrections
    when: corrected
    action: train_positive
  - name: doubtful outcomes
    when: {any: [negative_feedback, {confidence_below: 0.3}, {human_edit_within: 24h}]}
    action: review
  - name: tool errors and retries
    when: {any: [tool_error, {retries: 0}, fallback_tool_used]}
    action: review
  - name: clean successes
    when: {all: [clean_success, positive_feedback]}
    action: train_positive
  - name: quiet successes
    when: {all: [clean_success, {not: {confidence_below: 0.5}}]}
    action: train_positive
  - name: slow tasks
    when: {slow: p99}
    action: drop
quality: {accuracy: 0.5, completeness: 0.5, relevance: 0.5, timeliness: 0.1, borderline: 0.1}
dedup: {near_threshold: 0.9, num_perm: 64}
splits: {eval: 0.2, few_shot: 0.1, seed: 0}
staleness: {half_life_days: 30, drop_after_days: 365}
"""

_QUIET_SUCCESSES = """  - name: quiet successes
    when: {all: [clean_success, {not: {confidence_below: 0.5}}]}
    action: train_positive
"""
assert _QUIET_SUCCESSES in DEFAULT_RULES
#: The built-in rules without "quiet successes": for an agent that is mostly
#: wrong, answers no user confirmed are not labels (neither to train on nor to
#: hold out); corrections and approved answers remain.
CONFIRMED_RULES = DEFAULT_RULES.replace(_QUIET_SUCCESSES, "")
