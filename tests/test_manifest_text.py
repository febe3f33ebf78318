"""The manifest's text layout and the path redaction of de-identifying builds, against plain json.

Both were rewritten for speed (json's C encoder instead of its indenting Python encoder; one
replacement pass on an entry's JSON text instead of a walk over every string): these tests pin
that the result is what the straightforward version gives, on arbitrary JSON-like values.
"""

from __future__ import annotations

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from medflow.engine.manifest import manifest_text
from medflow.engine.privacy import PathRedactor

# Text with the characters JSON escapes (quote, backslash, control characters) and non-ASCII.
TEXT = st.text(alphabet=st.sampled_from(list(string.ascii_letters + "/._-^ \"\\\n\tÉé李") + ["\x00"]), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(TEXT, JSON, max_size=6))
@settings(max_examples=300, deadline=None)
def test_manifest_text_is_the_same_json_with_sorted_keys(manifest):
    text = manifest_text(manifest)
    assert json.loads(text) == manifest
    # same key order as json.dumps(sort_keys=True): stable bytes for the same manifest
    assert list(json.loads(text)) == sorted(manifest)
    assert manifest_text(json.loads(text)) == text


def test_manifest_text_puts_each_item_on_its_own_line():
    manifest = {"items": [{"id": "a", "outputs": [{"path": "x.npy"}]}, {"id": "b"}], "run": {"workers": 1}}
    lines = manifest_text(manifest).splitlines()
    assert ' {"id": "a", "outputs": [{"path": "x.npy"}]},' in [line[1:] for line in lines]
    assert '  "workers": 1' in lines


def _reference(redactor: PathRedactor, value, paths):
    """What the redaction must equal: every string and key replaced one by one."""
    if isinstance(value, str):
        return redactor.text(value, paths)
    if isinstance(value, list | tuple):
        return [_reference(redactor, v, paths) for v in value]
    if isinstance(value, dict):
        return {redactor.text(k, paths): _reference(redactor, v, paths) for k, v in value.items()}
    return value


@given(JSON, st.lists(TEXT.filter(bool), max_size=3), TEXT)
@settings(max_examples=400, deadline=None)
def test_redaction_on_json_text_equals_string_by_string(value, paths, root):
    redactor = PathRedactor(root)  # type: ignore[arg-type]
    assert redactor.tree(value, paths) == _reference(redactor, value, paths)


def test_redaction_replaces_paths_with_quotes_and_backslashes_in_keys_and_values():
    rel = 'Doe "John"\\MRN 123/ct 1.dcm'
    redactor = PathRedactor("/exports/Doe^John")  # type: ignore[arg-type]
    entry = {"id": "x", "inputs": [{"path": rel}], "error": f"/exports/Doe^John/{rel}: truncated", rel: 1}
    redacted = json.dumps(redactor.tree(entry, [rel]), ensure_ascii=False)
    assert "Doe" not in redacted and "MRN" not in redacted
    assert redacted.count("<file:") == 3 and "<source>/<file:" in redacted


@given(manifest=st.dictionaries(TEXT, JSON, max_size=6))
@settings(max_examples=100, deadline=None)
def test_the_written_manifest_is_its_text_whatever_the_write_pieces(manifest, tmp_path_factory):
    """write_manifest streams the text in pieces (no whole copy of a big manifest in memory):
    the file's bytes must be manifest_text's, however the pieces fall."""
    from medflow.engine import manifest as module
    from medflow.hashing import digest_bytes

    folder = tmp_path_factory.mktemp("m")
    previous = module._WRITE_CHUNK
    try:
        for piece in (1, 7, previous):
            module._WRITE_CHUNK = piece
            digest = module.write_manifest(folder, manifest)
            written = (folder / module.MANIFEST_NAME).read_bytes()
            assert written == manifest_text(manifest).encode("utf-8")
            assert digest == digest_bytes(written)
    finally:
        module._WRITE_CHUNK = previous
