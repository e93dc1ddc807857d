"""User files (requests, allowlists) read exactly as written, with bounded cost.

YAML 1.1, as `yaml.safe_load` reads it, turns `010` into 8, `0x10` into 16, `12:30` into 750 and
`yes` into True: a record id or a label must never change on the way in, so every YAML scalar is
read as the text written (only a plain `~`/`null`/empty value is null, for the fields that may be
null) and the schema decides what a field may hold. JSON numbers keep their written text too.
Both formats refuse what would make one file mean two things (a key given twice: named by its line,
never printed, as a key may be a personal value such as a record id) or cost without
bound (aliases — "billion laughs" —, nesting deeper than `MAX_DEPTH`, files over `MAX_BYTES`).
Every refusal is one `UnlearnError` line naming the file.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import BaseConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from unlearning.errors import UnlearnError

MAX_BYTES = 1024 * 1024  # a request naming ~100,000 records fits; 100 MB files are refused unread
MAX_DEPTH = 32  # a request nests 3 levels; anything deeper is not a request
_STR, _SEQ, _MAP, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "seq", "map", "null"))


class _Refused(Exception):
    """A document the readers refuse; the message is completed with the file's name."""


def read_text(path: Path, what: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a user file, refused (unread past the cap) when it is larger than `max_bytes`."""
    path = Path(path)
    if not path.exists():
        raise UnlearnError(f"{what} '{path}' not found; check the path")
    if not path.is_file():  # a pipe would block the read, a device never end it
        raise UnlearnError(f"{what} '{path}' is not a regular file (a folder, a device or a pipe); give the path "
                           f"of the file itself")
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise UnlearnError(f"{what} '{path.name}' is larger than {max_bytes // 1024} KiB; "
                               f"split it into smaller files")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnlearnError(f"cannot read {what} '{path.name}' ({type(exc).__name__}); save it as UTF-8 text") from None


def load_document(path: Path, what: str) -> Any:
    """A user file parsed by its suffix (.json, .yaml/.yml; anything else: JSON when it opens
    like JSON and parses, else YAML)."""
    path = Path(path)
    # a byte-order mark (Windows editors save "UTF-8" with one) is no content: YAML skipped it, JSON
    # refused the file as "not valid JSON ... (decode using utf-8-sig)"; text corpora drop it too
    text = read_text(path, what).removeprefix("\ufeff")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return parse_json(text, f"{what} '{path.name}'")
    if suffix not in (".yaml", ".yml") and text.lstrip().startswith(("{", "[")):
        try:
            return parse_json(text, f"{what} '{path.name}'")
        except _NotJson:
            pass
    return parse_yaml(text, f"{what} '{path.name}'")


# No digits: no field name has one, and an API key (AKIA..., ghp_...), a password or a record id
# written as a key has, and would be echoed by the error meant to help fix a typo.
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z_-]{0,39}")


def unknown_fields_named(keys: list) -> str:
    """The unknown keys a user mistyped, each named when it is a plain name (`colour`, `detector`);
    one that is not — a card number, an e-mail, a phone pasted as a key — is counted, never printed:
    an error message must not echo the very value a request (or an allowlist) is about."""
    named = [str(k) for k in keys if isinstance(k, str) and PLAIN_NAME.fullmatch(k)]
    hidden = len(keys) - len(named)
    more = "more " if named else ""
    return ", ".join([*named, *([f"{hidden} {more}not shown (not a plain name: a value written as a key?)"]
                                 if hidden else [])])


def refuse_repeated_columns(header: list, file_name: str) -> None:
    """A CSV header as written must name each column once: pandas reads a repeated name as `a` and
    `a.1`, so a request naming `a` would reach only the first copy of the column."""
    names = ["" if name is None or name != name else str(name) for name in header]  # NaN: a column with no name
    repeated = list(dict.fromkeys(name for n, name in enumerate(names) if name in names[:n]))
    if repeated:  # by position, not name: a file without a header row has a record there, maybe a person's
        shown = "; ".join("columns " + ", ".join(str(n + 1) for n, name in enumerate(names) if name == twice)
                          for twice in repeated[:5])
        raise UnlearnError(f"'{file_name}' gives one column name more than once ({shown}); give every column its "
                           f"own name, in a header row")


# --- JSON ---------------------------------------------------------------------------------------

class _NotJson(UnlearnError):
    """Invalid JSON syntax (as opposed to valid JSON that is refused)."""


# The closing quote is optional: an unterminated string then runs to the end (json.loads refuses
# it anyway) instead of failing and being retried from every quote after it (quadratic).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?')


def parse_json(text: str, origin: str) -> Any:
    """JSON with numbers kept as their text, NaN/Infinity and duplicate keys refused."""
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise UnlearnError(f"{origin} nests {depth} levels deep (at most {MAX_DEPTH}); flatten it")
    try:
        return json.loads(text, parse_int=str, parse_float=str, parse_constant=_no_constant,
                          object_pairs_hook=unique_json_keys)
    except RepeatedKey:
        place = repeated_key_place(text)
        raise UnlearnError(f"{origin} gives a key twice in one object{f' ({place})' if place else ''}; "
                           f"keep one") from None
    except _Refused as exc:
        raise UnlearnError(f"{origin} {exc}") from None
    except json.JSONDecodeError as exc:
        raise _NotJson(f"{origin} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                       f"fix the syntax") from None


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (counted without recursion)."""
    brackets = re.findall(r"[\[\]{}]", _JSON_STRING.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _no_constant(name: str) -> Any:
    raise _Refused(f"holds {name}, which is not a JSON value; write a string or a number")


class RepeatedKey(_Refused):
    """A JSON object naming a key twice; the message names its place, never the key: a key can be
    a personal value (a record id in `fix_labels`)."""


def unique_json_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json.loads's object_pairs_hook refusing a key given twice (RepeatedKey, which names no key):
    json.loads would keep only the last value unseen (request files here, JSONL text records too)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKey()
        out[key] = value
    return out


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}:]')


def repeated_key_place(text: str) -> str:
    """"line L, column C" of the first key repeated in its object (json.loads's hook is not told
    where a pair was), found in one pass over the strings and brackets; "" if none is found."""
    objects: list[set | None] = []  # per open bracket: the keys of an object so far, None for a list
    previous = None
    for token in _JSON_TOKEN.finditer(text):
        mark = token.group()
        if mark in ("{", "["):
            objects.append(set() if mark == "{" else None)
        elif mark in ("}", "]"):
            if objects:
                objects.pop()
        elif mark == ":" and previous is not None and objects and objects[-1] is not None:
            key = json.loads(previous.group())  # as json.loads compares them: "\u0061" is "a"
            if key in objects[-1]:
                start = previous.start()
                return f"line {text.count(chr(10), 0, start) + 1}, column {start - text.rfind(chr(10), 0, start)}"
            objects[-1].add(key)
        previous = token if mark.startswith('"') else None
    return ""


# --- YAML ---------------------------------------------------------------------------------------

class _TextResolver(BaseResolver):
    """Plain scalars are text, except the null forms; collections keep their structure."""


_TextResolver.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


class _Composer(Composer):
    """Refuses aliases and anchors (one node referenced many times: exponential documents) and
    nesting deeper than MAX_DEPTH before it is composed (composition is recursive)."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if self.check_event(AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"uses a YAML anchor or alias (line {event.start_mark.line + 1}); write the values out")
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nests more than {MAX_DEPTH} levels deep (line {event.start_mark.line + 1}); "
                           f"flatten it")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Constructor(BaseConstructor):
    """Text, lists, mappings and null only; a key given twice is refused with its line."""

    def construct_object(self, node, deep=False):
        if node.tag == _NULL and isinstance(node, ScalarNode):
            return None
        if node.tag not in (_STR, _SEQ, _MAP):
            raise _Refused(f"uses the YAML tag {node.tag} (line {node.start_mark.line + 1}); remove it")
        return super().construct_object(node, deep=True)

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, MappingNode):
            return super().construct_mapping(node, deep)
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                raise _Refused(f"has a key that is not text (line {key_node.start_mark.line + 1})")
            key = self.construct_object(key_node)
            if key in out:
                # by line, not name: a key can be a personal value (a record id in `fix_labels`)
                raise _Refused(f"gives a key twice in one mapping (line {key_node.start_mark.line + 1}); keep one")
            out[key] = self.construct_object(value_node)
        return out


_Constructor.add_constructor(_STR, lambda self, node: self.construct_scalar(node))
_Constructor.add_constructor(_SEQ, lambda self, node: self.construct_sequence(node, deep=True))
_Constructor.add_constructor(_MAP, lambda self, node: self.construct_mapping(node))


class _TextLoader(Reader, Scanner, Parser, _Composer, _Constructor, _TextResolver):
    def __init__(self, stream):
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _Composer.__init__(self)
        _Constructor.__init__(self)
        _TextResolver.__init__(self)


def parse_yaml(text: str, origin: str) -> Any:
    """YAML with every scalar as its text (see the module doc); one-line errors."""
    try:
        loader = _TextLoader(text)  # the reader refuses control characters here, before any parsing
    except ReaderError as exc:
        raise UnlearnError(f"{origin} holds the control character U+{exc.character:04X} (character "
                           f"{exc.position + 1}); remove it, or write it as an escape in a quoted string") from None
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise UnlearnError(f"{origin} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        reason = f": {problem}" if problem else ""
        raise UnlearnError(f"{origin} is not valid YAML{where}{reason}; fix the syntax") from None
    finally:
        loader.dispose()
