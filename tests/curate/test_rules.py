import pytest

from flywheel.curate.rules import DEFAULT_RULES, SIGNALS, parse_rules
from flywheel.errors import InvalidInput


def test_default_rules_are_valid_and_hashed():
    rules = parse_rules(DEFAULT_RULES)
    assert rules.rules[0].action == "train_positive"
    assert len(rules.hash) == 64 and rules.source == DEFAULT_RULES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - name: a\n    when: corected\n    action: review\n",
            "line 3 (rules.0.when): unknown signal 'corected'",
        ),
        (
            "rules:\n  - name: a\n    when: corrected\n    action: keep\n",
            "line 4 (rules.0.action): 'keep' is not allowed; choose one of",
        ),
        (
            "rules:\n  - name: a\n    when: {confidence_below: 7}\n    action: review\n",
            "an impossible threshold",
        ),
        (
            "rules:\n  - name: a\n    when: corrected\n    action: review\n    wen: x\n",
            "line 5 (rules.0.wen): unknown key 'wen'",
        ),
        (
            "rules:\n  - name: a\n    when: corrected\n    action: review\n"
            "splits: {eval: 0.7, few_shot: 0.5}\n",
            "must leave room for train",
        ),
        ("rules:\n  - name: a\n    when: {human_edit_within: soon}\n    action: review\n", "not a duration"),
        ("rules:\n  - name: a\n    when: {any: []}\n    action: review\n", "needs a non-empty list"),
        ("rules: [\n", "not valid YAML"),
        ("rules: []\n", "rules"),
    ],
)
def test_mistakes_are_named_with_their_line(text, expected):
    with pytest.raises(InvalidInput) as info:
        parse_rules(text, name="my-rules.yaml")
    assert expected in str(info.value)


def test_toml_works_too():
    text = '[[rules]]\nname = "fixes"\nwhen = "corrected"\naction = "train_positive"\n'
    assert parse_rules(text, toml=True).rules[0].name == "fixes"


def test_every_signal_is_documented():
    assert all(len(description) > 10 for _, description in SIGNALS.values())
