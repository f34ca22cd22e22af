import pytest

from flywheel.errors import InvalidInput, NotFound
from flywheel.store import tables as t
from flywheel.store.artefacts import artefact_path, get_artefact, put_artefact


def test_artefacts_are_kept_once_by_content_and_read_back_checked(store, tmp_path):
    data = bytes(range(256)) * 1000
    ref = put_artefact(store, "lora-adapter", data, {"rank": 8})
    assert ref.startswith("sha256:") and put_artefact(store, "lora-adapter", data, {"rank": 8}) == ref
    with store.engine.connect() as conn:
        assert len(conn.execute(t.artefacts.select()).all()) == 1
    meta, back = get_artefact(store, ref)
    assert back == data and meta == {"kind": "lora-adapter", "rank": 8}
    path = artefact_path(store, ref, tmp_path / "cache", ".gguf")
    assert path.read_bytes() == data and path.name.endswith(".gguf")
    assert artefact_path(store, ref, tmp_path / "cache", ".gguf") == path  # cached


def test_unknown_malformed_and_corrupt_references_are_clear_errors(store):
    with pytest.raises(NotFound, match="not in the store"):
        get_artefact(store, "sha256:" + "1" * 64)
    with pytest.raises(InvalidInput, match="not an artefact reference"):
        get_artefact(store, "/tmp/adapter.gguf")
    ref = put_artefact(store, "x", b"good bytes")
    with store._writing() as conn:
        conn.execute(t.artefacts.update().values(data=b"evil bytes"))
    with pytest.raises(InvalidInput, match="corrupt"):
        get_artefact(store, ref)
