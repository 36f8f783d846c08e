"""The canonical encoding and the hashes of messages, as specified by ``docs/hashing.md``.

The first half checks the test vectors in ``tests/vectors/`` twice: against an independent
implementation of the specification written here (it uses ``json`` and ``hashlib`` but nothing
from agentforum), and against the real classes. The second half states properties of hashing
with Hypothesis.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import subprocess
import sys
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from agentforum import (
    CallMessage,
    ErrorMessage,
    ForwardedMessage,
    FrozenDict,
    Message,
    decode_message,
    encode_message,
    hash_content,
)

VECTORS_DIR = pathlib.Path(__file__).parent / "vectors"
VECTOR_PATHS = sorted(VECTORS_DIR.glob("*.json"))

KINDS = ("message", "forward", "call", "error")
CLASSES: dict[str, type[Message]] = {
    "message": Message,
    "forward": ForwardedMessage,
    "call": CallMessage,
    "error": ErrorMessage,
}

# -------------------------------------------------------------------------------------------
# An independent implementation of docs/hashing.md (sections 2, 4 and 6).
# -------------------------------------------------------------------------------------------

FORMAT = "agentforum/2"
#: Section 6: the bytes that precede a content's UTF-8 bytes when it is hashed.
CONTENT_TAG = b"agentforum/2 content\x00"

#: Section 2: the keys of the document of each kind, in canonical order.
DOCUMENT_KEYS = {
    "message": ("content", "format", "kind", "metadata", "parent", "reply_to", "sender"),
    "forward": (
        "content",
        "format",
        "kind",
        "metadata",
        "original",
        "parent",
        "reply_to",
        "sender",
    ),
    "error": (
        "content",
        "error_type",
        "format",
        "kind",
        "metadata",
        "parent",
        "reply_to",
        "sender",
    ),
    "call": ("format", "kind", "kwargs", "metadata", "parent", "receiver", "reply_to"),
}

#: The fields a constructor takes, for each kind.
FIELD_NAMES = {
    kind: tuple(key for key in keys if key not in {"format", "kind"})
    for kind, keys in DOCUMENT_KEYS.items()
}

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def spec_content_hash(text: str) -> str:
    """Section 6: the hash of a content, the sha256 of the tag and the text's UTF-8 bytes."""
    return hashlib.sha256(CONTENT_TAG + text.encode("utf-8")).hexdigest()


def spec_document(kind: str, fields: Mapping[str, object]) -> dict[str, object]:
    """Section 2: the document of a message of ``kind`` built from its constructor fields.

    The content is named by its hash (section 6); the text itself is not in the document.
    """
    document = {"format": FORMAT, "kind": kind, **fields}
    if "content" in document:
        assert isinstance(document["content"], str)
        document["content"] = spec_content_hash(document["content"])
    assert tuple(sorted(document)) == DOCUMENT_KEYS[kind]
    return document


def _escape_code_point(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if ord(char) < 0x20:
        return f"\\u{ord(char):04x}"
    return char


def spec_string(text: str) -> str:
    """Section 4.3: a JSON string."""
    return '"' + "".join(_escape_code_point(char) for char in text) + '"'


def _shortest_digits(x: float) -> tuple[str, int]:
    """Section 4.6, step 1: the shortest round-tripping digits of ``x > 0``, and ``e``."""
    exact = Fraction(x)
    for length in range(1, 18):
        # The nearest decimal of ``length`` significant digits, and its two neighbours.
        mantissa, _, exponent = f"{x:.{length - 1}e}".partition("e")
        nearest = int(mantissa.replace(".", ""))
        scale = int(exponent) - (length - 1)
        candidates = [
            digits
            for digits in (nearest - 1, nearest, nearest + 1)
            if digits > 0 and float(f"{digits}e{scale}") == x
        ]
        if candidates:
            best = min(
                candidates,
                key=lambda digits: (abs(digits * Fraction(10) ** scale - exact), digits % 2),
            )
            text = str(best)
            return text.rstrip("0"), scale + len(text) - 1
    raise AssertionError(f"no round-tripping digits for {x!r}")  # pragma: no cover


def spec_float(x: float) -> str:
    """Section 4.6: a finite float."""
    assert math.isfinite(x)
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        digits, e = "0", 0
    else:
        digits, e = _shortest_digits(abs(x))
    n = len(digits)
    if -4 <= e < 16:
        if e < 0:
            body = "0." + "0" * (-e - 1) + digits
        elif n <= e + 1:
            body = digits + "0" * (e + 1 - n) + ".0"
        else:
            body = digits[: e + 1] + "." + digits[e + 1 :]
    else:
        mantissa = digits if n == 1 else f"{digits[0]}.{digits[1:]}"
        body = f"{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    return sign + body


def spec_json(value: object) -> str:
    """Sections 4.1 to 4.6: canonical JSON text, written by hand (``json`` is not used)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return spec_float(value)
    if isinstance(value, str):
        return spec_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(spec_json(item) for item in value) + "]"
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda key: [ord(char) for char in key])  # code point order
        return "{" + ",".join(f"{spec_string(key)}:{spec_json(value[key])}" for key in keys) + "}"
    raise AssertionError(f"not a JSON value: {value!r}")  # pragma: no cover


def spec_encoding(kind: str, fields: Mapping[str, object]) -> bytes:
    """The canonical encoding (sections 2 and 4), by hand."""
    return spec_json(spec_document(kind, fields)).encode("utf-8")


def reference_encoding(kind: str, fields: Mapping[str, object]) -> bytes:
    """The canonical encoding (sections 2 and 5), with Python's ``json``."""
    return json.dumps(
        spec_document(kind, fields),
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")


def spec_hash(encoding: bytes) -> str:
    """Section 6: the hash of an encoding."""
    return hashlib.sha256(encoding).hexdigest()


def build(kind: str, fields: Mapping[str, Any]) -> Message:
    """Construct the agentforum message of ``kind`` from its fields."""
    return CLASSES[kind](**fields)


# -------------------------------------------------------------------------------------------
# Test vectors.
# -------------------------------------------------------------------------------------------


def load_vector(path: pathlib.Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return vector


VECTORS = [pytest.param(load_vector(path), id=path.stem) for path in VECTOR_PATHS]


def test_vectors_are_present_and_cover_every_kind() -> None:
    """There are at least 8 well-formed vectors, and every message kind has one."""
    vectors = [load_vector(path) for path in VECTOR_PATHS]
    assert len(vectors) >= 8
    assert {vector["kind"] for vector in vectors} == set(KINDS)
    for vector in vectors:
        assert set(vector) == {"description", "kind", "fields", "content_hash", "encoding", "hash"}
        assert (vector["content_hash"] is None) == (vector["kind"] == "call")
        assert set(vector["fields"]) == set(FIELD_NAMES[vector["kind"]])
        assert len(vector["hash"]) == 64
        assert set(vector["hash"]) <= set("0123456789abcdef")
    hashes = [vector["hash"] for vector in vectors]
    assert len(set(hashes)) == len(hashes)


def test_vectors_link_to_each_other() -> None:
    """Some vector has both a parent and a reply_to, and every link names another vector."""
    vectors = [load_vector(path) for path in VECTOR_PATHS]
    hashes = {vector["hash"] for vector in vectors}
    links = [
        vector["fields"][name]
        for vector in vectors
        for name in ("parent", "reply_to", "original")
        if vector["fields"].get(name) is not None
    ]
    assert links
    assert set(links) <= hashes
    assert any(
        vector["fields"]["parent"] is not None and vector["fields"]["reply_to"] is not None
        for vector in vectors
    )


@pytest.mark.parametrize("vector", VECTORS)
def test_spec_reimplementation_reproduces_vector(vector: dict[str, Any]) -> None:
    """The specification alone (hand-written and via json) gives each vector's bytes and hash."""
    expected = vector["encoding"].encode("utf-8")
    by_hand = spec_encoding(vector["kind"], vector["fields"])
    assert by_hand == expected
    assert reference_encoding(vector["kind"], vector["fields"]) == expected
    assert spec_hash(by_hand) == vector["hash"]
    if vector["content_hash"] is not None:
        assert spec_content_hash(vector["fields"]["content"]) == vector["content_hash"]


@pytest.mark.parametrize("vector", VECTORS)
def test_classes_reproduce_vector(vector: dict[str, Any]) -> None:
    """agentforum's classes give each vector's hash and bytes, and decode it back."""
    message = build(vector["kind"], vector["fields"])
    encoding = vector["encoding"].encode("utf-8")
    assert type(message) is CLASSES[vector["kind"]]
    assert message.hash == vector["hash"]
    assert encode_message(message) == encoding
    content = vector["fields"].get("content")
    if vector["content_hash"] is not None:
        assert message.content_hash == hash_content(content) == vector["content_hash"]
    for data in (encoding, vector["encoding"]):
        decoded = decode_message(data, content)
        assert type(decoded) is type(message)
        assert decoded == message
        assert decoded.hash == vector["hash"]


def test_bool_int_and_float_vectors_differ() -> None:
    """true, 1 and 1.0 in metadata give three different encodings and hashes."""
    values = [True, 1, 1.0]
    messages = [Message(content="x", sender="user", metadata={"value": v}) for v in values]
    assert len({encode_message(message) for message in messages}) == 3
    assert len({message.hash for message in messages}) == 3
    assert [spec_json(v) for v in values] == ["true", "1", "1.0"]


# -------------------------------------------------------------------------------------------
# The specification's rules for floats and strings, against Python's json and repr.
# -------------------------------------------------------------------------------------------

FLOAT_EXAMPLES = [
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.0, "1.0"),
    (0.1, "0.1"),
    (0.0001, "0.0001"),
    (1e-05, "1e-05"),
    (2.5e-05, "2.5e-05"),
    (1e15, "1000000000000000.0"),
    (1e16, "1e+16"),
    (123456789.125, "123456789.125"),
    (1.5e300, "1.5e+300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (900000000000000.25, "900000000000000.2"),
    (900000000000000.75, "900000000000000.8"),
    (-1.2345678901234568e17, "-1.2345678901234568e+17"),
]


@pytest.mark.parametrize(("value", "text"), FLOAT_EXAMPLES)
def test_spec_float_examples(value: float, text: str) -> None:
    """The documented float examples (section 4.6) are what the algorithm and json write."""
    assert spec_float(value) == text
    assert json.dumps(value) == text


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False))
@example(2.0**-1022)
@example(2.0**1023)
@example(9007199254740993.0)
def test_spec_float_algorithm_is_python_repr(value: float) -> None:
    """Section 4.6's algorithm, run from the shortest digits, gives repr(float) exactly."""
    assert spec_float(value) == repr(value) == json.dumps(value)


def test_spec_string_escapes_every_ascii_and_control_character() -> None:
    """Section 4.3's escaping table matches json for U+0000..U+00A0 and special characters."""
    specials = "\u2028\u2029\ufeff\ufffe\uffff\U0001f600\U0010ffff/<>&'"
    for char in [chr(code) for code in range(0xA1)] + list(specials):
        assert spec_string(char) == json.dumps(char, ensure_ascii=False), repr(char)
    assert spec_string("\x1f") == '"\\u001f"'
    assert spec_string("\x7f") == '"\x7f"'


# -------------------------------------------------------------------------------------------
# Hypothesis strategies.
# -------------------------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
optional_hashes = st.none() | hashes
integers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)


@st.composite
def json_values(draw: st.DrawFn, depth: int = 2) -> object:
    """A JSON value: scalars, and lists and dicts nested up to ``depth`` levels."""
    shape = draw(st.integers(0, 3)) if depth > 0 else 0
    if shape == 2:
        return draw(st.lists(json_values(depth - 1), max_size=4))
    if shape == 3:
        return draw(json_objects(depth - 1))
    return draw(scalars)


@st.composite
def json_objects(draw: st.DrawFn, depth: int = 2) -> dict[str, object]:
    """A JSON object with str keys: what metadata and kwargs hold."""
    return draw(st.dictionaries(texts, json_values(depth), max_size=4))


FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "content": texts,
    "sender": texts,
    "receiver": texts,
    "error_type": texts,
    "metadata": json_objects(),
    "kwargs": json_objects(),
    "parent": optional_hashes,
    "reply_to": optional_hashes,
    "original": hashes,
}


@st.composite
def message_fields(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """The constructor fields of a message of ``kind``."""
    return {name: draw(FIELD_STRATEGIES[name]) for name in FIELD_NAMES[kind]}


@st.composite
def kinds_and_fields(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A message kind and the fields of a message of that kind."""
    kind = draw(st.sampled_from(KINDS))
    return kind, draw(message_fields(kind))


def tagged(value: object) -> object:
    """``value`` with its JSON type made explicit: True, 1 and 1.0 (and 0.0, -0.0) differ."""
    if value is None or isinstance(value, (bool, str)):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, (list, tuple)):
        return ("array", tuple(tagged(item) for item in value))
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((key, tagged(item)) for key, item in value.items())))
    raise AssertionError(f"not a JSON value: {value!r}")  # pragma: no cover


def reordered(value: object) -> object:
    """The same JSON value with every dict's insertion order reversed and lists made tuples."""
    if isinstance(value, Mapping):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, (list, tuple)):
        return tuple(reordered(item) for item in value)
    return value


def different(name: str, old: Any, candidate: Any) -> Any:
    """``candidate`` if it differs from ``old`` as a JSON value, else a value that does."""
    if tagged(candidate) != tagged(old):
        return candidate
    if name in {"metadata", "kwargs"}:
        return {"wrapped": old}
    if old is None:
        return "0" * 64
    if name in {"parent", "reply_to", "original"}:
        return old[:-1] + ("1" if old[-1] == "0" else "0")
    return old + "x"


# -------------------------------------------------------------------------------------------
# Properties.
# -------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(kinds_and_fields(), st.text(min_size=1, max_size=8), st.integers(1, 5000))
def test_document_does_not_grow_with_content(
    case: tuple[str, dict[str, Any]], unit: str, repeat: int
) -> None:
    """For arbitrary messages, the document names the content by its hash: its length is
    the same whatever the content's, and it is still the spec's bytes."""
    kind, fields = case
    assume("content" in fields)
    long = dict(fields, content=unit * repeat)
    short = dict(fields, content="")
    encoded = encode_message(build(kind, long))
    assert encoded == spec_encoding(kind, long)
    assert len(encoded) == len(encode_message(build(kind, short)))


@settings(max_examples=150)
@given(kinds_and_fields())
def test_spec_reimplementation_agrees_with_agentforum(case: tuple[str, dict[str, Any]]) -> None:
    """For arbitrary messages, the hand-written specification gives encode_message's bytes."""
    kind, fields = case
    message = build(kind, fields)
    encoding = spec_encoding(kind, fields)
    assert encode_message(message) == encoding
    assert reference_encoding(kind, fields) == encoding
    assert message.hash == spec_hash(encoding)


@settings(max_examples=150)
@given(kinds_and_fields())
def test_hash_is_pure_function_of_fields(case: tuple[str, dict[str, Any]]) -> None:
    """Rebuilding from the same fields (dict keys in another order, tuples) gives the same hash."""
    kind, fields = case
    first = build(kind, fields)
    again = build(kind, fields)
    shuffled = build(kind, {name: reordered(value) for name, value in reversed(fields.items())})
    frozen = build(
        kind,
        {
            name: FrozenDict(value) if name in {"metadata", "kwargs"} else value
            for name, value in fields.items()
        },
    )
    for other in (again, shuffled, frozen):
        assert other.hash == first.hash
        assert encode_message(other) == encode_message(first)
    assert first.hash == hashlib.sha256(encode_message(first)).hexdigest()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=75)
@given(data=st.data())
def test_changing_any_field_changes_hash(kind: str, data: st.DataObject) -> None:
    """For every field of every kind, a different value gives a different hash."""
    fields = data.draw(message_fields(kind), label="fields")
    original = build(kind, fields)
    for name in FIELD_NAMES[kind]:
        candidate = data.draw(FIELD_STRATEGIES[name], label=name)
        changed = build(kind, {**fields, name: different(name, fields[name], candidate)})
        assert changed.hash != original.hash, name
        assert changed != original


@settings(max_examples=150)
@given(kinds_and_fields())
def test_encode_decode_round_trips(case: tuple[str, dict[str, Any]]) -> None:
    """decode_message(encode_message(m)) is an equal message of the same type and hash."""
    kind, fields = case
    message = build(kind, fields)
    encoding = encode_message(message)
    content = None if kind == "call" else message.content
    for data in (encoding, encoding.decode("utf-8")):
        decoded = decode_message(data, content)
        assert type(decoded) is type(message)
        assert decoded == message
        assert decoded.hash == message.hash
        assert encode_message(decoded) == encoding
        assert tagged(decoded.metadata) == tagged(message.metadata)


@settings(max_examples=100)
@given(kinds_and_fields(), kinds_and_fields(), st.booleans())
def test_equality_is_hash_equality(
    first_case: tuple[str, dict[str, Any]],
    second_case: tuple[str, dict[str, Any]],
    copy: bool,
) -> None:
    """Two messages are equal (and hash alike in sets) exactly when their hashes are equal."""
    first = build(*first_case)
    second = build(*first_case) if copy else build(*second_case)
    same = first.hash == second.hash
    assert (first == second) is same
    assert (first != second) is not same
    assert len({first, second}) == (1 if same else 2)
    if copy:
        assert same
        assert hash(first) == hash(second)
    assert first == first
    assert first != first.hash
    assert first != "not a message"


# -------------------------------------------------------------------------------------------
# Hashes do not depend on the interpreter's hash seed.
# -------------------------------------------------------------------------------------------

SET_KEYS = [f"key-{index}-\u00e9{index * 7919 % 1000}" for index in range(200)]

_SUBPROCESS_CODE = """
import json
import sys

from agentforum import CallMessage, ErrorMessage, ForwardedMessage, Message

classes = {
    "message": Message,
    "forward": ForwardedMessage,
    "call": CallMessage,
    "error": ErrorMessage,
}
request = json.load(sys.stdin)
keys = request["set_keys"]
# Dicts built by iterating sets: their insertion order depends on PYTHONHASHSEED.
metadata = {key: len(key) for key in set(keys)}
nested = {key: {inner: [1, 2.5] for inner in set(keys[:20])} for key in set(keys[:30])}
messages = [classes[kind](**fields) for kind, fields in request["cases"]]
messages.append(Message(content="set order", sender="user", metadata=metadata))
messages.append(CallMessage(receiver="r", kwargs=nested, metadata=metadata))
json.dump({"hashes": [m.hash for m in messages], "order": list(metadata)}, sys.stdout)
"""


def _hashes_in_subprocess(seed: str, cases: list[Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_CODE],
        input=json.dumps({"set_keys": SET_KEYS, "cases": cases}),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
        check=True,
    )
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_hash_same_in_subprocess_with_other_hashseed() -> None:
    """Hashes are the same in interpreters with different PYTHONHASHSEED (dict/set order)."""
    cases: list[Any] = [
        [vector["kind"], vector["fields"]] for vector in map(load_vector, VECTOR_PATHS)
    ]
    cases.append(
        [
            "message",
            {
                "content": "many keys",
                "sender": "user",
                "metadata": {key: [key, index, index / 7] for index, key in enumerate(SET_KEYS)},
            },
        ]
    )
    expected = [build(kind, fields).hash for kind, fields in cases]
    expected.append(
        Message(
            content="set order",
            sender="user",
            metadata={key: len(key) for key in sorted(SET_KEYS)},
        ).hash
    )
    expected.append(
        CallMessage(
            receiver="r",
            kwargs={
                key: {inner: [1, 2.5] for inner in reversed(SET_KEYS[:20])} for key in SET_KEYS[:30]
            },
            metadata={key: len(key) for key in reversed(SET_KEYS)},
        ).hash
    )
    results = [_hashes_in_subprocess(seed, cases) for seed in ("0", "4242")]
    for result in results:
        assert result["hashes"] == expected
    # The seeds really did change the dicts' insertion order, so the test means something.
    assert results[0]["order"] != results[1]["order"]
