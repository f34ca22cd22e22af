"""The price table: longest-prefix matching on names as traffic spells them, and the
user's price file, checked with errors that say where and what."""

import pytest

from flywheel.errors import ConfigError
from flywheel.models.pricing import DEFAULT_PRICES, PriceTable, load_prices


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20241022", "claude-3-5-sonnet"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("models/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b"),
        ("mistral-large-latest", "mistral-large"),
        ("o3-mini-2025-01-31", "o3-mini"),
    ],
)
def test_names_as_providers_spell_them_find_their_entry(model, entry):
    assert PriceTable().rate(model) == DEFAULT_PRICES[entry]


@pytest.mark.parametrize(
    "model", ["gpt-4.5-preview", "gpt-4ox", "o1x", "gemma-3-270m", "ft:gpt-4o-mini:acme::x1", ""]
)
def test_a_prefix_ends_at_a_word_boundary_and_unknown_models_have_no_price(model):
    assert PriceTable().rate(model) is None
    assert PriceTable().cost(model, 100, 100) is None


def test_the_lookup_is_remembered_and_bounded(monkeypatch):
    table = PriceTable({"m": (1.0, 2.0)})
    assert table.cost("m-1", 1_000_000, 1_000_000) == 3.0
    table.prices["m"] = (5.0, 5.0)  # the remembered rate is used, not looked up again
    assert table.cost("m-1", 1_000_000, 0) == 1.0
    monkeypatch.setattr("flywheel.models.pricing._CACHE_LIMIT", 3)
    for i in range(10):
        table.rate(f"x-{i}")
    assert len(table._rates) <= 3


def test_a_price_file_overrides_and_extends_the_built_in_table(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("gpt-4o-mini: {input: 1, output: 2}\nMy-Model: [0.5, 0.25]\n")
    table = PriceTable.from_file(path)
    assert table.rate("gpt-4o-mini-2024-07-18") == (1.0, 2.0)
    assert table.rate("my-model-v2") == (0.5, 0.25)
    assert table.rate("gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    assert PriceTable.from_file(None).prices == DEFAULT_PRICES


def test_a_json_price_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"acme-1": {"input": 0.1, "output": 0.2}, "acme-2": [3, 4]}')
    assert load_prices(path) == {"acme-1": (0.1, 0.2), "acme-2": (3.0, 4.0)}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"gpt-4o": {"input": -1, "output": 2}}', ["'gpt-4o'", "input price -1", "non-negative"]),
        ('{"gpt-4o": {"input": "cheap", "output": 2}}', ["'gpt-4o'", "input price 'cheap' is not a number"]),
        ('{"gpt-4o": [1, true]}', ["'gpt-4o'", "output price True is not a number"]),
        ('{"gpt-4o": [1, 2, 3]}', ["'gpt-4o'", '{"input": I, "output": O} or [I, O]']),
        ('{"gpt-4o": {"input": 1}}', ["'gpt-4o'", "no output price"]),
        ('{"gpt-4o": {"inptu": 1, "output": 2}}', ["'gpt-4o'", "unknown key(s) ['inptu']"]),
        ('["gpt-4o", 1, 2]', ["must map model names to prices"]),
        ("{not json", ["is not valid JSON or YAML"]),
    ],
)
def test_a_bad_price_file_says_which_file_which_model_and_what(tmp_path, text, says):
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_prices(path)
    message = str(info.value)
    assert str(path) in message and "FLYWHEEL_PRICES" in message
    for part in says:
        assert part in message


def test_a_missing_price_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"prices\.yaml \(FLYWHEEL_PRICES\) cannot be read: No such file"):
        PriceTable.from_file(tmp_path / "prices.yaml")
