"""Property tests of redaction: secrets never survive, ordinary text is untouched."""

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.config import PII_DETECTORS, SECRET_DETECTORS
from flywheel.errors import ConfigError
from flywheel.ingest.redact import FieldTooLong, Redactor, luhn_valid

SECRETS = Redactor(SECRET_DETECTORS)
EVERYTHING = Redactor(SECRET_DETECTORS + PII_DETECTORS)


def _luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError


cards = st.text("0123456789", min_size=14, max_size=14).map(lambda p: _luhn_complete("4" + p))
words = st.text(
    st.characters(whitelist_categories=("Ll", "Lu"), max_codepoint=0x24F), min_size=0, max_size=30
)


@given(before=words, after=words, card=cards, sep=st.sampled_from(["", " ", "-"]))
def test_a_valid_card_number_never_survives(before, after, card, sep):
    spaced = sep.join(card[i : i + 4] for i in range(0, 16, 4))
    text, n = SECRETS.text(f"{before} {spaced} {after}")
    assert card not in text.replace(" ", "").replace("-", "")
    assert "[REDACTED:credit_card]" in text
    assert n == 1


def test_digit_runs_that_fail_luhn_are_kept():
    text, n = SECRETS.text("order 4111111111111112 shipped")
    assert (text, n) == ("order 4111111111111112 shipped", 0)


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=200))
def test_text_without_secrets_is_unchanged(text):
    out, n = SECRETS.text(text)
    if n == 0:
        assert out == text.replace("\x00", "\ufffd")


@given(
    key=st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=24, max_size=60)
)
@settings(max_examples=50)
def test_api_keys_of_known_vendors_are_redacted(key):
    for secret in (f"sk-{key}", f"ghp_{key}{key}", f"sk-ant-{key}"):
        out, _ = SECRETS.value({"headers": [f"key={secret};"]})
        assert secret not in str(out)


def test_pii_detectors_are_opt_in():
    text = "mail ada@example.org or call +44 20 7946 0958 from 192.168.1.20"
    assert SECRETS.text(text) == (text, 0)
    out, n = EVERYTHING.text(text)
    assert out == "mail [REDACTED:email] or call [REDACTED:phone] from [REDACTED:ip_address]"
    assert n == 3


def test_jwt_and_private_key_blocks():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    out, n = SECRETS.text(f"token {jwt} and\n{pem}\nend")
    assert out == "token [REDACTED:jwt] and\n[REDACTED:private_key]\nend"
    assert n == 2


def test_custom_patterns_and_their_names():
    redactor = Redactor([], {"employee_id": r"EMP-\d{6}"})
    assert redactor.text("ask EMP-123456 now") == ("ask [REDACTED:employee_id] now", 1)
    with pytest.raises(ConfigError, match="invalid regex"):
        Redactor([], {"broken": "("})
    with pytest.raises(ConfigError, match="lower_snake_case"):
        Redactor([], {"Bad Name": "x"})
    with pytest.raises(ConfigError, match="unknown redaction detector"):
        Redactor(["telepathy"])


def test_keys_of_objects_are_redacted_too():
    out, n = SECRETS.value({"sk-abcdefghijklmnopqrstuvwx": 1})
    assert out == {"[REDACTED:api_key]": 1} and n == 1


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_structure_is_preserved(value):
    out, _ = SECRETS.value(value)
    shape = lambda v: (type(v).__name__, len(v)) if isinstance(v, list | dict) else type(v).__name__  # noqa: E731
    assert shape(out) == shape(value)


def test_too_long_string_names_its_path():
    redactor = Redactor([], max_chars=10)
    with pytest.raises(FieldTooLong, match=re.escape("output.rows[1] is 11 characters")):
        redactor.value({"rows": ["ok", "x" * 11]}, "output")


def test_card_like_digits_inside_an_id_are_left_alone():
    number = _luhn_complete("077960980201")
    assert SECRETS.text(f"card {number} here")[1] == 1
    text = f"task 01a20ecb-8e{number[:2]}-{number[2:6]}-{number[6:10]}-{number[10:]}c3af6def9"
    assert SECRETS.text(text) == (text, 0)


secretish = st.one_of(
    cards,
    st.from_regex(r"sk-[A-Za-z0-9]{24}", fullmatch=True),
    st.from_regex(r"AKIA[0-9A-Z]{16}", fullmatch=True),
    st.from_regex(r"[Bb][Ee][Aa][Rr][Ee][Rr] [A-Za-z0-9]{20}", fullmatch=True),
    st.from_regex(r"[a-z]{3,8}@[a-z]{3,8}\.(com|org)", fullmatch=True),
    st.from_regex(r"\+?\d{2} \d{3} \d{4} \d{4}", fullmatch=True),
    st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", fullmatch=True),
    st.text(max_size=40),
)


SEPARATORS = [" ", "\n", "", "\t", "\"'", "\x1f", "\\", "é"]


@given(parts=st.lists(secretish, max_size=4), sep=st.sampled_from(SEPARATORS))
@settings(max_examples=500)
def test_the_batch_level_shortcut_never_skips_something_to_redact(parts, sep):
    import orjson

    text = sep.join(parts)
    out, n = EVERYTHING.text(text)
    if n or out != text:
        assert EVERYTHING.needs_walk(orjson.dumps({"events": [{"input": text}]}))


# Inputs that took the earlier patterns quadratic time: each start inside a long
# run scanned the rest of the run again. At this size that was minutes; read in
# one pass it is a fraction of a second (timed in bench/hardening.py, not here).
ADVERSARIAL = {
    "private_key_headers": "-----BEGIN PRIVATE KEY-----" * 8_000,
    "private_key_headers_and_other_footers": "-----BEGIN PRIVATE KEY-----x-----END CERTIFICATE-----" * 4_000,
    "email_local_parts": "a." * 100_000,
    "email_domains": "x@" + "b." * 100_000 + "1",
    "jwt_segments": "-eyJ" * 50_000,
    "bearer_words": "bearer " * 30_000,
    "api_key_prefixes": "ghp_" * 50_000,
    "digits": "1 " * 100_000,
    "phone_pieces": "+1 (555) 123-" * 15_000,
    "ip_pieces": "1.1.1." * 30_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_input_is_read_in_one_pass_and_a_secret_after_it_found(name):
    text = ADVERSARIAL[name] + " then " + "sk-" + "a" * 30
    out, n = EVERYTHING.text(text)
    assert out.endswith(" then [REDACTED:api_key]")
    if name != "digits":  # a run of single digits holds card-like groups, none passing Luhn
        assert out == ADVERSARIAL[name] + " then [REDACTED:api_key]"
        assert n == 1


def test_a_private_key_block_runs_from_its_header_to_the_next_footer():
    block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
    text = f"cut -----BEGIN EC PRIVATE KEY-----\nBBBB then {block} and -----BEGIN PRIVATE KEY----- alone"
    out, n = SECRETS.text(text)
    assert out == "cut [REDACTED:private_key] and -----BEGIN PRIVATE KEY----- alone"
    assert n == 1


def test_an_email_is_found_from_the_start_of_its_run():
    out, _ = EVERYTHING.text("write to ada.lovelace@example.org, or -bob@example.org")
    assert out == "write to [REDACTED:email], or [REDACTED:email]"


def test_a_jwt_glued_to_a_word_is_left_alone():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert SECRETS.text(f"x{jwt}")[1] == 0
    assert SECRETS.text(f"token={jwt}") == ("token=[REDACTED:jwt]", 1)


def _escape_ascii(text: str, every: int) -> str:
    """``text`` as a JSON string body, every ``every``-th ASCII letter or digit
    written as a \\u00XX escape (what some encoders do)."""
    return "".join(
        f"\\u{ord(ch):04x}"
        if ch.isascii() and ch.isalnum() and i % every == 0
        else orjson.dumps(ch).decode()[1:-1]
        for i, ch in enumerate(text)
    )


@given(parts=st.lists(secretish, max_size=4), every=st.integers(1, 5))
@settings(max_examples=300)
def test_the_batch_level_shortcut_sees_through_json_escapes(parts, every):
    text = " ".join(parts)
    out, n = EVERYTHING.text(text)
    if n or out != text:
        body = b'{"events": [{"input": "' + _escape_ascii(text, every).encode() + b'"}]}'
        assert orjson.loads(body)["events"][0]["input"] == text
        assert EVERYTHING.needs_walk(body)


def test_one_redactor_counts_each_call_apart_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    texts = [" ".join(["sk-" + "a" * 30] * k) for k in range(1, 40)]
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda t: SECRETS.value({"t": t})[1], texts * 20))
    assert counts == [k for k in range(1, 40)] * 20


@given(parts=st.lists(secretish, max_size=4), sep=st.sampled_from(SEPARATORS))
@settings(max_examples=200)
def test_a_long_text_is_searched_with_the_same_result(parts, sep):
    """Past 4,096 characters only the detectors whose trigger a text holds run."""
    text = sep.join(parts)
    pad = " " * 5000
    out, n = EVERYTHING.text(text)
    assert EVERYTHING.text(pad + text + pad) == (pad + out + pad, n)
