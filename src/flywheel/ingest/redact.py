"""Redaction of secrets and PII before anything is stored.

One compiled alternation of named detectors (plus the user's own patterns)
runs over every string of an event, keys of objects included. Each match
becomes ``[REDACTED:<detector>]``; card numbers must pass the Luhn check.
The same walk enforces the longest accepted string and replaces NUL
characters, which PostgreSQL cannot store, with U+FFFD.

The built-in detectors take time linear in the length of the text, whatever
the text (a body of repeated ``-----BEGIN PRIVATE KEY-----`` or ``a.a.a.a``
included): a pattern whose unbounded run can fail after it (an e-mail's
local part, a JWT's first segment) starts only where that run starts, never
inside it, so that no character is scanned again from every position before
it; private-key blocks are found by a scan that pairs each header with the
next footer once. The user's own patterns (``FLYWHEEL_REDACT_PATTERNS``) run
as written on Python's backtracking engine: keep them free of nested or
overlapping quantifiers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flywheel.errors import ConfigError

__all__ = ["DETECTORS", "FieldTooLong", "Redactor", "luhn_valid"]

#: The private-key detector is the pair below (a header, then the next footer),
#: found by ``_private_keys``; this pattern says what it matches.
DETECTORS: dict[str, str] = {
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    # Starts where its run starts: a run of eyJ-eyJ-... without dots fails once, not once per eyJ.
    "jwt": (r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}"),
    "bearer_token": r"(?i:\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*",
    # Nothing may fail after the unbounded runs: a run either matches whole or is short.
    "api_key": (
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
        r"|fw_[A-Za-z0-9_-]{40,}|sk_live_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{30,})"
    ),
    "credit_card": r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])",
    # The local part starts where its run starts: a.a.a.a... without an @ fails once.
    "email": (r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "phone": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])"
    ),
    "ip_address": (
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?![\d.])|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"
    ),
}

_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", re.ASCII)
_KEY_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----", re.ASCII)
_PRIVATE_KEY = "[REDACTED:private_key]"


def _private_keys(value: str) -> tuple[str, int]:
    """Each header with the first footer after it, redacted (what the pattern in
    ``DETECTORS`` matches, leftmost first), in one pass: when a header has no
    footer after it, no later header has one either."""
    pieces: list[str] = []
    pos = 0
    while (begin := _KEY_BEGIN.search(value, pos)) is not None:
        end = _KEY_END.search(value, begin.end())
        if end is None:
            break
        pieces += (value[pos : begin.start()], _PRIVATE_KEY)
        pos = end.end()
    if not pieces:
        return value, 0
    pieces.append(value[pos:])
    return "".join(pieces), len(pieces) // 2


# For each detector, literals (or a cheap pattern) that every text it can match
# contains. Searching a whole serialised batch for them tells, at C speed, that
# there is nothing to redact, so the field-by-field walk is skipped.
_DIGIT_RUN = re.compile(rb"\d(?:[ -]?\d){12}")
_WORDISH = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_ESCAPE = re.compile(rb"\\(?:[nrtbf]|u[0-9a-fA-F]{4})$")
#: A JSON escape of NUL or of a printable ASCII character: it may spell a trigger.
_ASCII_ESCAPE = re.compile(rb"\\u00(?:00|[2-7][0-9a-fA-F])")


def _card_candidate(blob: bytes) -> bool:
    """Whether ``blob`` may hold a card number the detector would take: a run of 13
    digits not glued to a word (a hex id is), or glued only to a JSON escape."""
    pos = 0
    while (match := _DIGIT_RUN.search(blob, pos)) is not None:
        start = match.start()
        before = blob[start - 1] if start else None
        if before is None or before not in _WORDISH or _ESCAPE.search(blob, max(0, start - 6), start):
            return True
        # Inside this run only a start right after a space can be valid.
        space = blob.find(b" ", start, match.end())
        pos = space + 1 if space != -1 else match.end()
    return False


Trigger = tuple[bytes, ...] | re.Pattern[bytes] | Callable[[bytes], bool]

TRIGGERS: dict[str, Trigger] = {
    "private_key": (b"-----BEGIN ",),
    "jwt": (b"eyJ",),
    "bearer_token": lambda blob: b"bearer" in blob.lower(),
    "api_key": (
        b"sk-",
        b"AKIA",
        b"ghp_",
        b"gho_",
        b"ghu_",
        b"ghs_",
        b"ghr_",
        b"github_pat_",
        b"xox",
        b"AIza",
        b"fw_",
        b"sk_live_",
        b"hf_",
    ),  # fmt: skip
    "credit_card": lambda blob: _card_candidate(blob),
    "email": (b"@",),
    "phone": re.compile(rb"\d{3,4}[ .-]\d{3,4}"),
    "ip_address": re.compile(rb"\d\.\d{1,3}\.\d|:[0-9A-Fa-f]{1,4}:"),
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

#: From this length on, a text is searched only with the detectors whose trigger it holds.
_LONG_TEXT = 4096


def _triggered(trigger: Trigger, blob: bytes) -> bool:
    if isinstance(trigger, tuple):
        return any(literal in blob for literal in trigger)
    if isinstance(trigger, re.Pattern):
        return trigger.search(blob) is not None
    return trigger(blob)


class FieldTooLong(ValueError):
    def __init__(self, path: str, length: int, limit: int) -> None:
        super().__init__(f"{path} is {length} characters long; the limit is {limit}")
        self.path = path
        self.length = length


def luhn_valid(number: str) -> bool:
    digits = [int(ch) for ch in number if ch.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


class Redactor:
    """Redacts the detectors named in ``detectors`` and the extra ``patterns``.

    Safe to share between threads: a call keeps its count to itself."""

    def __init__(
        self,
        detectors: Iterable[str],
        patterns: Mapping[str, str] | None = None,
        *,
        max_chars: int = 1_000_000,
    ) -> None:
        self._triggers: list[Trigger] = []
        self._private_keys = False
        #: the built-in detectors of the alternation, in order, and the user's patterns
        self._builtins: list[tuple[str, str]] = []
        self._custom: list[str] = []
        for name in detectors:
            if name not in DETECTORS:
                raise ConfigError(f"unknown redaction detector {name!r}; known: {sorted(DETECTORS)}")
            self._triggers.append(TRIGGERS[name])
            if name == "private_key":
                self._private_keys = True
                continue
            # ASCII classes: what the byte-level triggers see, and what these formats use.
            self._builtins.append((name, f"(?P<{name}>(?a:{DETECTORS[name]}))"))
        # The user's own patterns have no known trigger: with any, every event is walked.
        self._always_walk = bool(patterns)
        for name, pattern in (patterns or {}).items():
            if not _NAME.match(name) or name in DETECTORS:
                raise ConfigError(f"redaction rule name {name!r} must be lower_snake_case and not a built-in")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"redaction rule {name!r}: invalid regex: {exc}") from exc
            self._custom.append(f"(?P<{name}>{pattern})")
        self._pattern = self._alternation(frozenset(name for name, _ in self._builtins))
        self._subsets: dict[frozenset[str], re.Pattern[str] | None] = {}
        self.max_chars = max_chars

    def _alternation(self, names: frozenset[str]) -> re.Pattern[str] | None:
        parts = [part for name, part in self._builtins if name in names] + self._custom
        return re.compile("|".join(parts)) if parts else None

    def _pattern_for(self, value: str) -> re.Pattern[str] | None:
        """The alternation of the detectors that can match ``value``: for a long text,
        only those whose trigger it holds (the same matches, leftmost first, as
        the whole alternation, which tries every detector at every position)."""
        if len(value) < _LONG_TEXT:
            return self._pattern
        blob = value.encode("utf-8", "surrogatepass")
        names = frozenset(name for name, _ in self._builtins if _triggered(TRIGGERS[name], blob))
        if names not in self._subsets:
            self._subsets[names] = self._alternation(names)
        return self._subsets[names]

    def needs_walk(self, serialised: bytes) -> bool:
        """False when ``serialised`` (JSON) certainly holds nothing to redact, no NUL
        and no string over the length limit; True when it may.

        The triggers read the bytes as they are; a JSON escape of an ASCII
        character (``s\\u006b-``, ``B\\u0065arer``) hides a trigger from them, so
        a body holding one is walked (its strings decoded) whatever else it holds."""
        if self._always_walk or len(serialised) > self.max_chars or _ASCII_ESCAPE.search(serialised):
            return True
        return any(_triggered(trigger, serialised) for trigger in self._triggers)

    def text(self, value: str) -> tuple[str, int]:
        """Redact one string; returns it and the number of redactions."""
        count = [0]
        return self._text(value, "value", count), count[0]

    def _text(self, value: str, path: str, count: list[int]) -> str:
        if len(value) > self.max_chars:
            raise FieldTooLong(path, len(value), self.max_chars)
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if self._private_keys and "-----BEGIN " in value:
            value, n = _private_keys(value)
            count[0] += n
        pattern = self._pattern_for(value)
        if pattern is not None and pattern.search(value):

            def replace(match: re.Match[str]) -> str:
                name = match.lastgroup or "secret"
                if name == "credit_card" and not luhn_valid(match.group()):
                    return match.group()
                count[0] += 1
                return f"[REDACTED:{name}]"

            value = pattern.sub(replace, value)
        return value

    def value(self, value: Any, path: str = "value") -> tuple[Any, int]:
        """Redact every string inside a JSON-like value; returns it and the count.

        Raises ``FieldTooLong`` naming the path of a string over the limit.
        """
        count = [0]
        try:
            return self._walk(value, count), count[0]
        except FieldTooLong as exc:
            raise FieldTooLong(path + exc.path, exc.length, self.max_chars) from None

    def _walk(self, value: Any, count: list[int]) -> Any:
        # Paths are built only on the way out of an error, never on the happy path.
        if isinstance(value, str):
            return self._text(value, "", count)
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                try:
                    out[self._text(k, "", count) if isinstance(k, str) else k] = self._walk(v, count)
                except FieldTooLong as exc:
                    raise FieldTooLong(f".{k}{exc.path}", exc.length, self.max_chars) from None
            return out
        if isinstance(value, list):
            out_list = []
            for i, v in enumerate(value):
                try:
                    out_list.append(self._walk(v, count))
                except FieldTooLong as exc:
                    raise FieldTooLong(f"[{i}]{exc.path}", exc.length, self.max_chars) from None
            return out_list
        return value
