"""Constructing, freezing, validating and decoding messages through the public API."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest

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

HASH_A = "a" * 64
HASH_B = "0123456789abcdef" * 4

LONE_SURROGATES = ["\ud800", "x\udfffy", "\udc00\ud800"]
MALFORMED_HASHES = [
    "",
    "abc",
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    HASH_A + "\n",
    " " + HASH_A[1:],
    "0x" + "a" * 62,
]


class Color(str, enum.Enum):
    """A str-based enum (like ``enum.StrEnum``, which Python 3.10 lacks)."""

    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    """A float subclass."""


def _message(**fields: Any) -> Message:
    return Message(**{"content": "hello", "sender": "user", **fields})


def _all_kinds(**fields: Any) -> list[Message]:
    """One message of every kind, each built with ``fields`` on top of valid defaults."""
    return [
        Message(**{"content": "c", "sender": "s", **fields}),
        ForwardedMessage(**{"content": "c", "sender": "s", "original": HASH_A, **fields}),
        CallMessage(**{"receiver": "r", **fields}),
        ErrorMessage(**{"content": "c", "sender": "s", "error_type": "ValueError", **fields}),
    ]


# -------------------------------------------------------------------------------------------
# Construction and field types.
# -------------------------------------------------------------------------------------------


def test_message_stores_its_fields_and_defaults() -> None:
    """A message keeps its fields; metadata defaults to an empty FrozenDict, links to None."""
    message = Message(content="hi", sender="user")
    assert message.content == "hi"
    assert message.sender == "user"
    assert message.metadata == {}
    assert isinstance(message.metadata, FrozenDict)
    assert message.parent is None
    assert message.reply_to is None
    linked = Message(content="hi", sender="user", parent=HASH_A, reply_to=HASH_B)
    assert (linked.parent, linked.reply_to) == (HASH_A, HASH_B)


def test_hash_is_sha256_of_the_encoding() -> None:
    """message.hash is the lowercase hex sha256 of encode_message(message)."""
    for message in _all_kinds(metadata={"k": [1, 2.5, None]}):
        assert re.fullmatch(r"[0-9a-f]{64}", message.hash)
        assert message.hash == hashlib.sha256(encode_message(message)).hexdigest()


def test_positional_arguments_are_rejected() -> None:
    """Every field is keyword-only."""
    with pytest.raises(TypeError):
        Message("hello", "user")  # type: ignore[misc]


@pytest.mark.parametrize("field", ["content", "sender"])
@pytest.mark.parametrize("value", [1, None, b"bytes", ["text"]])
def test_non_str_content_or_sender_is_type_error(field: str, value: object) -> None:
    """content and sender must be str: anything else raises TypeError naming the field."""
    with pytest.raises(TypeError, match=rf"^{field} must be a str"):
        _message(**{field: value})


def test_non_str_receiver_and_error_type_are_type_errors() -> None:
    """CallMessage.receiver and ErrorMessage.error_type must be str."""
    with pytest.raises(TypeError, match=r"^receiver must be a str, not int"):
        CallMessage(receiver=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^error_type must be a str, not NoneType"):
        ErrorMessage(content="c", sender="s", error_type=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("metadata", [[("a", 1)], "a=1", None, 3, {"a"}])
def test_metadata_not_a_mapping_is_type_error(metadata: object) -> None:
    """metadata must be a mapping."""
    with pytest.raises(TypeError, match=r"^metadata must be a mapping with str keys"):
        _message(metadata=metadata)


def test_kwargs_not_a_mapping_is_type_error() -> None:
    """CallMessage.kwargs must be a mapping."""
    with pytest.raises(TypeError, match=r"^kwargs must be a mapping with str keys, not list"):
        CallMessage(receiver="r", kwargs=[1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [object(), {1, 2}, frozenset(), b"x", bytearray(), 1j, Decimal("1.5"), print]
)
def test_non_json_value_deep_in_metadata_names_its_path(bad: object) -> None:
    """A non-JSON value nested in metadata raises TypeError naming the exact key path."""
    with pytest.raises(TypeError, match=re.escape("metadata['a'][1]['b'] is of type")):
        _message(metadata={"a": [0, {"b": bad}]})


def test_non_json_value_at_top_of_metadata_names_its_key() -> None:
    """A non-JSON value directly in metadata names metadata['key']."""
    with pytest.raises(TypeError, match=re.escape("metadata['when'] is of type object")):
        _message(metadata={"when": object()})


@pytest.mark.parametrize(
    ("metadata", "path"),
    [
        ({1: "x"}, "metadata has a key 1 of type int"),
        ({"a": {None: 1}}, "metadata['a'] has a key None of type NoneType"),
        ({"a": [{b"k": 1}]}, "metadata['a'][0] has a key b'k' of type bytes"),
        ({"a": {("t",): 1}}, "metadata['a'] has a key ('t',) of type tuple"),
    ],
)
def test_non_str_mapping_key_names_its_path(metadata: dict[Any, Any], path: str) -> None:
    """A mapping key that is not a str raises TypeError naming where the mapping is."""
    with pytest.raises(TypeError, match=re.escape(path)):
        _message(metadata=metadata)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_is_value_error_with_path(value: float) -> None:
    """NaN and infinities are rejected with ValueError naming the key path."""
    with pytest.raises(ValueError, match=re.escape("metadata['a'][0]['b'] is")):
        _message(metadata={"a": [{"b": value}]})
    with pytest.raises(ValueError, match=re.escape("kwargs['x'] is")):
        CallMessage(receiver="r", kwargs={"x": value})


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_lone_surrogate_in_content_or_sender_is_value_error(text: str) -> None:
    """A str holding a lone surrogate cannot be UTF-8 encoded: ValueError at construction."""
    with pytest.raises(ValueError, match=r"^content is not valid Unicode text"):
        _message(content=text)
    with pytest.raises(ValueError, match=r"^sender is not valid Unicode text"):
        _message(sender=text)
    with pytest.raises(ValueError, match=r"^receiver is not valid Unicode text"):
        CallMessage(receiver=text)
    with pytest.raises(ValueError, match=r"^error_type is not valid Unicode text"):
        ErrorMessage(content="c", sender="s", error_type=text)


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_lone_surrogate_in_metadata_is_value_error(text: str) -> None:
    """Lone surrogates in metadata strings (values or keys) and kwargs raise ValueError."""
    with pytest.raises(ValueError, match=re.escape("metadata['a'][0] is not valid Unicode")):
        _message(metadata={"a": [text]})
    with pytest.raises(ValueError, match="is not valid Unicode text"):
        _message(metadata={"a": {text: 1}})
    with pytest.raises(ValueError, match=re.escape("kwargs['x'] is not valid Unicode")):
        CallMessage(receiver="r", kwargs={"x": text})


def test_valid_unicode_is_accepted() -> None:
    """Astral characters, U+2028, controls and combining marks are valid text."""
    text = "\U0001f600 \u2028 \x00 e\u0301 \uffff"
    message = _message(content=text, sender=text, metadata={text: text})
    assert message.content == text
    assert message.metadata[text] == text


@pytest.mark.parametrize("field", ["parent", "reply_to"])
@pytest.mark.parametrize("value", MALFORMED_HASHES)
def test_malformed_link_is_value_error(field: str, value: str) -> None:
    """parent and reply_to must be None or 64 lowercase hex characters."""
    with pytest.raises(ValueError, match=rf"^{field} must be a full message hash"):
        _message(**{field: value})


@pytest.mark.parametrize("field", ["parent", "reply_to"])
def test_non_str_link_is_type_error(field: str) -> None:
    """parent and reply_to of a non-str type raise TypeError."""
    with pytest.raises(TypeError, match=rf"^{field} must be a message hash \(str\) or None"):
        _message(**{field: 12345})


@pytest.mark.parametrize("value", MALFORMED_HASHES)
def test_malformed_original_is_value_error(value: str) -> None:
    """ForwardedMessage.original must be a full message hash."""
    with pytest.raises(ValueError, match=r"^original must be a full message hash"):
        ForwardedMessage(content="c", sender="s", original=value)


def test_forwarded_message_requires_an_original() -> None:
    """ForwardedMessage.original is required and cannot be None."""
    with pytest.raises(TypeError, match="original"):
        ForwardedMessage(content="c", sender="s")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^original must be a message hash \(str\), not None"):
        ForwardedMessage(content="c", sender="s", original=None)  # type: ignore[arg-type]


def test_call_kwargs_errors_name_the_kwargs_path() -> None:
    """Errors inside CallMessage.kwargs name the path as kwargs[...]."""
    with pytest.raises(TypeError, match=re.escape("kwargs['x'] is of type object")):
        CallMessage(receiver="r", kwargs={"x": object()})
    with pytest.raises(TypeError, match=re.escape("kwargs['x'][2] is of type set")):
        CallMessage(receiver="r", kwargs={"x": [1, 2, {3}]})
    with pytest.raises(TypeError, match=re.escape("kwargs['x'] has a key 1 of type int")):
        CallMessage(receiver="r", kwargs={"x": {1: 2}})


# -------------------------------------------------------------------------------------------
# Frozen values.
# -------------------------------------------------------------------------------------------


def test_lists_become_tuples_and_dicts_become_frozendicts() -> None:
    """Nested lists are stored as tuples and nested mappings as FrozenDict, recursively."""
    message = _message(metadata={"a": [1, {"b": [2, [3]]}], "c": {"d": {}}})
    a = message.metadata["a"]
    assert a == (1, {"b": (2, (3,))})
    assert isinstance(a, tuple)
    assert isinstance(a[1], FrozenDict)
    assert isinstance(a[1]["b"], tuple)
    assert isinstance(message.metadata["c"], FrozenDict)
    assert isinstance(message.metadata["c"]["d"], FrozenDict)
    call = CallMessage(receiver="r", kwargs={"x": [{"y": []}]})
    assert isinstance(call.kwargs, FrozenDict)
    assert call.kwargs["x"] == ({"y": ()},)
    assert isinstance(call.kwargs["x"][0], FrozenDict)


def test_scalars_keep_their_exact_type() -> None:
    """bool, int, float, None and str are stored as given: True stays True, 1.0 stays a float."""
    message = _message(metadata={"t": True, "i": 1, "f": 1.0, "n": None, "s": "x", "z": -0.0})
    assert message.metadata["t"] is True
    assert type(message.metadata["i"]) is int
    assert type(message.metadata["f"]) is float
    assert message.metadata["n"] is None
    assert str(message.metadata["z"]) == "-0.0"


def test_mutating_the_input_does_not_change_the_message() -> None:
    """The message freezes a copy: later changes to the caller's dicts and lists are not seen."""
    inner = [1, 2]
    source: dict[str, Any] = {"a": inner, "b": {"c": 1}}
    message = _message(metadata=source)
    before = message.hash
    inner.append(3)
    source["b"]["c"] = 2
    source["new"] = 1
    assert message.metadata == {"a": (1, 2), "b": {"c": 1}}
    assert _message(metadata={"a": [1, 2], "b": {"c": 1}}).hash == before


def test_frozendict_is_immutable() -> None:
    """FrozenDict has no mutating operations: item and attribute assignment both fail."""
    frozen = FrozenDict({"a": [1], "b": {"c": 2}})
    with pytest.raises(TypeError):
        frozen["a"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        del frozen["a"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="FrozenDict is immutable"):
        frozen.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        frozen.update({"x": 1})  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        frozen.pop("a")  # type: ignore[attr-defined]
    assert frozen == {"a": (1,), "b": {"c": 2}}


def test_frozendict_is_hashable_and_compares_as_a_mapping() -> None:
    """Equal FrozenDicts (in any key order) hash alike, compare equal to dicts, and are keys."""
    first = FrozenDict({"a": [1, {"b": 2}], "c": None})
    second = FrozenDict({"c": None, "a": (1, FrozenDict({"b": 2}))})
    assert first == second
    assert hash(first) == hash(second)
    assert first == {"c": None, "a": (1, {"b": 2})}
    assert {first: "value"}[second] == "value"
    assert isinstance(first, Mapping)
    assert sorted(first) == ["a", "c"]
    assert len(first) == 2
    assert FrozenDict() == {}


def test_frozendict_constructor_validates_its_values() -> None:
    """FrozenDict(...) applies the same rules as metadata."""
    with pytest.raises(TypeError, match="has a key 1 of type int"):
        FrozenDict({"a": {1: 2}})
    with pytest.raises(ValueError, match="is nan"):
        FrozenDict({"a": float("nan")})
    with pytest.raises(TypeError, match="is of type object"):
        FrozenDict({"a": [object()]})


@pytest.mark.parametrize("message", _all_kinds(metadata={"a": 1}), ids=lambda m: type(m).__name__)
def test_messages_are_frozen(message: Message) -> None:
    """Assigning or deleting any attribute of any message kind raises FrozenInstanceError."""
    for field in attrs.fields(type(message)):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(message, field.name, "x")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            delattr(message, field.name)


def test_evolve_gives_a_new_message_with_a_new_hash() -> None:
    """attrs.evolve builds a new, validated message; the original and its hash are unchanged."""
    message = _message(metadata={"a": 1})
    before = message.hash
    evolved = attrs.evolve(message, content="changed", metadata={"a": [2]})
    assert evolved.hash != before
    assert message.hash == before
    assert message.content == "hello"
    assert evolved.metadata["a"] == (2,)
    assert attrs.evolve(message).hash == before
    with pytest.raises(ValueError, match=r"^parent must be a full message hash"):
        attrs.evolve(message, parent="nope")


def test_call_message_content_and_sender_are_empty_and_cannot_be_passed() -> None:
    """CallMessage.content and .sender are always "" and are not constructor arguments."""
    call = CallMessage(receiver="r", kwargs={"x": 1})
    assert call.content == ""
    assert call.sender == ""
    with pytest.raises(TypeError, match="content"):
        CallMessage(receiver="r", content="c")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="sender"):
        CallMessage(receiver="r", sender="s")  # type: ignore[call-arg]
    assert CallMessage(receiver="r", kwargs={"x": 1}) == call


def test_enum_values_are_stored_as_plain_values() -> None:
    """IntEnum, str-based enum and float-subclass values and keys are stored as plain values."""
    message = _message(metadata={"level": Level.HIGH, "color": Color.RED, Color.RED: Ratio(0.5)})
    plain = _message(metadata={"level": 3, "color": "red", "red": 0.5})
    assert type(message.metadata["level"]) is int
    assert type(message.metadata["color"]) is str
    assert all(type(key) is str for key in message.metadata)
    assert type(message.metadata["red"]) is float
    assert message.hash == plain.hash
    call = CallMessage(receiver="r", kwargs={"x": [Level.HIGH, Color.RED]})
    assert [type(value) for value in call.kwargs["x"]] == [int, str]  # type: ignore[union-attr]


def test_messages_of_different_kinds_are_not_equal() -> None:
    """The kind is part of the hash: the same fields in two kinds give unequal messages."""
    plain = Message(content="c", sender="s")
    error = ErrorMessage(content="c", sender="s", error_type="")
    forward = ForwardedMessage(content="c", sender="s", original=plain.hash)
    assert len({plain.hash, error.hash, forward.hash}) == 3
    assert plain != error
    assert plain != forward


# -------------------------------------------------------------------------------------------
# Decoding.
# -------------------------------------------------------------------------------------------


#: The content of the documents below.
TEXT = "hello"


def _document(**changes: Any) -> dict[str, Any]:
    """A valid 'message' document of :data:`TEXT`, with ``changes`` applied (a value of ...
    deletes a key)."""
    document: dict[str, Any] = {
        "format": "agentforum/2",
        "kind": "message",
        "content": hash_content(TEXT),
        "sender": "user",
        "metadata": {},
        "parent": None,
        "reply_to": None,
    }
    document.update(changes)
    return {key: value for key, value in document.items() if value is not ...}


def test_decode_accepts_the_canonical_document() -> None:
    """The canonical encoding (str or bytes), with its content, decodes to its message."""
    expected = _message(metadata={"k": [1, 1.0, True]})
    data = encode_message(expected)
    assert decode_message(data, expected.content) == expected
    assert decode_message(data.decode("utf-8"), expected.content) == expected
    call = CallMessage(receiver="r", kwargs={"a": 1})
    assert decode_message(encode_message(call)) == call


def test_decode_needs_the_content_the_document_names() -> None:
    """A document's content must be given, and be the one it names; a call takes none."""
    data = json.dumps(_document(), sort_keys=True, separators=(",", ":"))
    assert decode_message(data, TEXT).content == TEXT
    with pytest.raises(ValueError, match=r"^a 'message' message needs its content"):
        decode_message(data)
    with pytest.raises(ValueError, match=r"does not hash to the content hash"):
        decode_message(data, TEXT + "!")
    call = encode_message(CallMessage(receiver="r"))
    with pytest.raises(ValueError, match=r"^a 'call' message has no content"):
        decode_message(call, "")


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda doc: json.dumps(doc), id="spaces"),
        pytest.param(lambda doc: json.dumps(doc, sort_keys=True, indent=1), id="indented"),
        pytest.param(
            lambda doc: json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")),
            id="key-order",
        ),
        pytest.param(
            lambda doc: json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True),
            id="ascii-escapes",
        ),
        pytest.param(
            lambda doc: "\ufeff" + json.dumps(doc, sort_keys=True, separators=(",", ":")),
            id="bom",
        ),
    ],
)
def test_decode_rejects_non_canonical_text(variant: Callable[[dict[str, Any]], str]) -> None:
    """Valid JSON of a message that is not its canonical text raises ValueError."""
    document = _document(sender="caf\u00e9", metadata={"k": [1, 1.0, True], "a": None})
    with pytest.raises(ValueError, match=r"canonical|not an encoded message"):
        decode_message(variant(document), TEXT)


@pytest.mark.parametrize("data", [b"\xff\xfe\xfa", b"{", "", "{'a': 1}", b"not json", "[1,]"])
def test_decode_rejects_non_json(data: bytes | str) -> None:
    """Data that is not JSON (or not UTF-8) raises ValueError."""
    with pytest.raises(ValueError, match=r"^not an encoded message: "):
        decode_message(data, TEXT)


@pytest.mark.parametrize("data", ["[]", "1", "null", '"message"', "true", "[{}]"])
def test_decode_rejects_non_object(data: str) -> None:
    """A JSON text whose top level is not an object raises ValueError."""
    with pytest.raises(ValueError, match="top level is not a JSON object"):
        decode_message(data, TEXT)


@pytest.mark.parametrize("value", ["agentforum", "agentforum-export/2", "", 1, None, ...])
def test_decode_rejects_wrong_format(value: object) -> None:
    """A document whose format is not 'agentforum/2' (or which lacks one) raises ValueError."""
    with pytest.raises(ValueError, match=r"^not an encoded message of format 'agentforum/2'"):
        decode_message(json.dumps(_document(format=value)), TEXT)


@pytest.mark.parametrize("value", ["agentforum/1", "agentforum/3", "agentforum/0"])
def test_decode_names_another_format_of_agentforum(value: str) -> None:
    """A document of another agentforum format is refused naming it and the one read."""
    with pytest.raises(
        ValueError,
        match=rf"^a message of format '{value}': this agentforum reads 'agentforum/2' only",
    ):
        decode_message(json.dumps(_document(format=value)), TEXT)


@pytest.mark.parametrize("value", ["nope", "Message", "MESSAGE", "", 1, None, ["message"], ...])
def test_decode_rejects_unknown_kind(value: object) -> None:
    """A document of an unknown kind (or with no kind) raises ValueError."""
    with pytest.raises(ValueError, match=r"^unknown message kind"):
        decode_message(json.dumps(_document(kind=value)), TEXT)


@pytest.mark.parametrize("field", ["content", "sender", "metadata", "parent", "reply_to"])
def test_decode_rejects_missing_field(field: str) -> None:
    """A document lacking any field of its kind raises ValueError."""
    with pytest.raises(ValueError, match=r"^a 'message' message has the fields"):
        decode_message(json.dumps(_document(**{field: ...})), TEXT)


@pytest.mark.parametrize(
    "document",
    [
        _document(extra=1),
        _document(original=HASH_A),
        _document(error_type="ValueError"),
        _document(kind="call", receiver="r", kwargs={}),
        _document(kind="forward"),
    ],
    ids=["extra", "original-on-message", "error_type-on-message", "call-with-content", "forward"],
)
def test_decode_rejects_extra_or_missing_fields_for_the_kind(document: dict[str, Any]) -> None:
    """A document with a field its kind lacks (or without one it needs) raises ValueError."""
    with pytest.raises(ValueError, match="message has the fields"):
        decode_message(json.dumps(document), TEXT)


_HELLO = hash_content(TEXT)


@pytest.mark.parametrize(
    "data",
    [
        '{"format":"agentforum/2","format":"agentforum/2","kind":"message",'
        f'"content":"{_HELLO}","sender":"s","metadata":{{}},"parent":null,"reply_to":null}}',
        '{"format":"agentforum/2","kind":"message",'
        f'"content":"{_HELLO}","content":"{_HELLO}",'
        '"sender":"s","metadata":{},"parent":null,"reply_to":null}',
        f'{{"format":"agentforum/2","kind":"message","content":"{_HELLO}",'
        '"sender":"s","metadata":{"a":{"b":1,"b":1}},"parent":null,"reply_to":null}',
    ],
    ids=["format", "content", "nested-metadata"],
)
def test_decode_rejects_duplicate_keys(data: str) -> None:
    """A repeated key in any object of the document raises ValueError."""
    with pytest.raises(ValueError, match=r"^duplicate key .* in an encoded message"):
        decode_message(data, TEXT)


def test_decode_validates_field_values() -> None:
    """Decoded fields go through the constructors' validation (TypeError / ValueError)."""
    with pytest.raises(TypeError, match=r"^sender must be a str"):
        decode_message(json.dumps(_document(sender=1)), TEXT)
    with pytest.raises(TypeError, match=r"^metadata must be a mapping"):
        decode_message(json.dumps(_document(metadata=[1])), TEXT)
    with pytest.raises(ValueError, match=r"^parent must be a full message hash"):
        decode_message(json.dumps(_document(parent="abc")), TEXT)
    with pytest.raises(ValueError, match=re.escape("metadata['x'] is nan")):
        decode_message(json.dumps(_document(metadata={"x": float("nan")})), TEXT)
    with pytest.raises(ValueError, match=r"^the content is not valid Unicode text"):
        decode_message(json.dumps(_document(content=HASH_A)), "\ud800")
