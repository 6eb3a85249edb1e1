"""Secret references (`secret://NAME` or a Secret Manager resource name), resolved only inside pipeline steps."""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from relay.config import setting
from relay.errors import RelayError

PREFIX = "secret://"
_SHORT = re.compile(r"^[A-Za-z0-9_-]{1,255}\Z")
_RESOURCE = re.compile(
    r"^projects/(?P<project>[^/]+)/secrets/(?P<secret>[A-Za-z0-9_-]+)(/versions/(?P<version>\w+))?\Z"
)
REDACTED = "[redacted]"


class SecretNotFoundError(RelayError):
    """A secret reference could not be resolved; the message names the reference, never a value."""


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def well_formed(reference: str) -> bool:
    name = reference.removeprefix(PREFIX)
    return bool(_SHORT.match(name) or _RESOURCE.match(name))


def reference_paths(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, reference) for every secret reference inside a JSON-like value, depth first."""
    if is_reference(value):
        yield path, str(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from reference_paths(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from reference_paths(inner, f"{path}[{i}]")


def references(value: object) -> Iterator[str]:
    """Every secret reference inside a parameter value, depth first."""
    return (reference for _, reference in reference_paths(value))


class SecretResolver(Protocol):
    def resolve(self, reference: str) -> str:
        """The secret's value; SecretNotFoundError naming `reference` when there is none."""
        ...


@dataclass(frozen=True)
class LocalSecrets:
    """`secret://NAME` from `RELAY_SECRET_<NAME>` (upper case, - as _) or the file NAME in a secrets folder."""

    env: Mapping[str, str]
    folder: Path | None = None

    def resolve(self, reference: str) -> str:
        name = _short_name(reference)
        variable = "RELAY_SECRET_" + name.upper().replace("-", "_")
        if variable in self.env:
            return self.env[variable]
        if self.folder is not None and (self.folder / name).is_file():
            return (self.folder / name).read_text().rstrip("\n")
        where = f"{variable} or {self.folder / name}" if self.folder else variable
        raise SecretNotFoundError(f"{reference}: no such secret (looked in {where})")


class SecretManagerSecrets:
    """Secret Manager, `secret://NAME` in `project` at its latest version, or a full resource name as given."""

    def __init__(self, project: str, client: Any = None) -> None:
        self._project = project
        self._client = client

    def resolve(self, reference: str) -> str:
        # Here, not at the top: only steps resolve secrets; the function's cold start never loads the client.
        from google.api_core import exceptions
        from google.cloud import secretmanager

        if self._client is None:
            self._client = secretmanager.SecretManagerServiceClient()
        try:
            response = self._client.access_secret_version(name=_resource_name(reference, self._project))
        except exceptions.GoogleAPIError as exc:
            raise SecretNotFoundError(f"{reference}: Secret Manager answered {type(exc).__name__}") from None
        return str(response.payload.data.decode("utf-8"))


def resolver_from_env(env: Mapping[str, str]) -> SecretResolver:
    """Secret Manager when RELAY_SECRETS=secret-manager (on Google Cloud), else env variables and a folder."""
    if setting(env, "SECRETS", "local") == "secret-manager":
        return SecretManagerSecrets(setting(env, "SECRETS_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT", ""))
    folder = setting(env, "SECRETS_DIR")
    return LocalSecrets(env=dict(env), folder=Path(folder) if folder else None)


def resolve_all(value: Any, resolver: SecretResolver) -> tuple[Any, tuple[str, ...]]:
    """`value` with every reference replaced by its secret, and the secrets themselves (for redaction)."""
    found: dict[str, str] = {}

    def walk(item: Any) -> Any:
        if is_reference(item):
            if item not in found:
                found[item] = resolver.resolve(item)
            return found[item]
        if isinstance(item, Mapping):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        return item

    return walk(value), tuple(found.values())


# A value this long is scrubbed wherever it appears, in every form below. A shorter one (a PIN, a test value) would
# match inside unrelated words and numbers, so it is scrubbed only where it stands alone (no letter or digit
# touching it), in its plain and escaped forms, and its derived forms are not sought: use longer secrets.
MIN_SCRUBBED = 6
_LONGEST_FUZZY = 256  # longer forms make slow patterns; what is longer is no token a server echoes whole
_WORD = "A-Za-z0-9"


class Redactor:
    """Scrubs secret values out of any text before it is logged, recorded or raised.

    A careless server hands a token back in some other shape, so each value is sought in the forms it travels in:
    as given and stripped, the credentials after an auth scheme (`Bearer X`, `Basic B64`, then B64's `user:key` and
    `key`), the string fields of a JSON key file, the long parts of a URL, and the base64 and hex of each of those
    (base64 at each of its three alignments, standard and URL-safe, so that it is found inside a longer encoded
    value such as the base64 of `user:key`). Each character of each form may itself be written plainly,
    percent-encoded (once or twice, any case), JSON- or Python-escaped, as an HTML entity, or `+` for a space, in
    any mix; letters in any case. A form longer than _LONGEST_FUZZY characters (a key file) is sought as written
    and JSON-escaped, and its lines in every spelling. Every match of every form is found, overlaps included, and
    their union replaced, so no part of one form survives next to another.

    What it cannot find: a secret cut short (so whoever bounds a server's text scrubs it first), or a value of fewer
    than MIN_SCRUBBED characters inside a word.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        fresh = {secret for secret in secrets if secret and secret not in self._values}
        for secret in sorted(fresh):
            self._values.add(secret)
            self._patterns += _patterns_of(secret)

    def __call__(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for pattern in self._patterns:
            at = 0
            while found := pattern.search(text, at):
                spans.append(found.span())
                at = found.start() + 1  # from the next character: a match overlapping this one is found too
        if not spans:
            return text
        pieces, at = [], 0
        for start, end in _merged(spans):
            pieces += [text[at:start], REDACTED]
            at = end
        return "".join(pieces) + text[at:]


class SecretFilter(logging.Filter):
    """Scrubs a log record in place: its message with its arguments merged in, its exception and its stack."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format: both, as text
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self._redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        record.exc_info = None  # a formatter would format it again, from the exception as raised
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


class _ScrubbingFactory:
    """A log record factory that runs a SecretFilter on each record as it is made."""

    def __init__(self, base: Callable[..., logging.LogRecord], scrub: SecretFilter) -> None:
        self.base, self._scrub = base, scrub

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        self._scrub.filter(record)
        return record


def scrub_logs(redact: Callable[[str], str]) -> None:
    """From now on, every log record this process makes is scrubbed by `redact` as it is made.

    At the record's making rather than on a handler: whichever handler writes it (Relay's, the pipeline runtime's,
    a library's, logging's last resort, one added later) gets it scrubbed. A second call replaces the first's.
    """
    current = logging.getLogRecordFactory()
    base = current.base if isinstance(current, _ScrubbingFactory) else current
    logging.setLogRecordFactory(_ScrubbingFactory(base, SecretFilter(redact)))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _patterns_of(secret: str) -> list[re.Pattern[str]]:
    """One pattern per form of `secret`."""
    fuzzy, literal = _forms(secret)
    patterns = [re.compile(_fuzzy(form)) for form in sorted(fuzzy, key=len, reverse=True)]
    patterns += [re.compile(re.escape(form)) for form in sorted(literal, key=len, reverse=True)]
    short = {form for form in (secret, secret.strip()) if form and len(form) < MIN_SCRUBBED}
    patterns += [re.compile(f"(?<![{_WORD}]){_fuzzy(form)}(?![{_WORD}])") for form in sorted(short)]
    return patterns


def _forms(secret: str) -> tuple[set[str], set[str]]:
    """The forms of `secret` sought in any spelling, and those sought as written (longer than _LONGEST_FUZZY).

    The secret and what travels of it: the credentials after a scheme, JSON key fields, URL parts, and the hex and
    base64 of each of those. A form too long to seek in every spelling (a key file, a PEM key) is sought as
    written and JSON-escaped, and each of its lines in every spelling.
    """
    plain = {secret, secret.strip()}
    words = secret.split(None, 1)
    if len(words) == 2:
        scheme, credentials = words[0], words[1].strip()
        plain.add(credentials)
        if scheme.lower() == "basic":
            plain |= _basic_parts(credentials)
    plain |= _json_strings(secret)
    plain |= _url_parts(secret)
    fuzzy: set[str] = set()
    literal: set[str] = set()
    for form in plain:
        if len(form) < MIN_SCRUBBED:
            continue
        if len(form) <= _LONGEST_FUZZY:
            fuzzy |= {form, form.encode().hex(), *_base64_cores(form.encode())}
        else:
            literal |= {form, json.dumps(form)[1:-1]}
            lines = {line.strip() for line in form.splitlines()}
            fuzzy |= {line for line in lines if MIN_SCRUBBED <= len(line) <= _LONGEST_FUZZY}
    return fuzzy, literal


def _basic_parts(credentials: str) -> set[str]:
    """`user:key` and `key` from the base64 of a Basic authorization."""
    try:
        pair = base64.b64decode(credentials + "=" * (-len(credentials) % 4), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return set()
    return {pair, pair.partition(":")[2]}


def _json_strings(secret: str) -> set[str]:
    """The string fields of a secret that is a JSON object (a service account key: its private key, its id)."""
    if not secret.lstrip().startswith("{"):
        return set()
    try:
        document = json.loads(secret)
    except ValueError:
        return set()
    found: set[str] = set()
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, Mapping):
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return found


def _base64_cores(data: bytes) -> set[str]:
    """The part of base64 that `data` alone decides, at each of the three byte alignments it may sit at inside a
    longer encoded value, in the standard and URL-safe alphabets."""
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        start, end = -(-8 * shift // 6), 8 * (shift + len(data)) // 6
        core = encoded[start:end]
        cores |= {core, core.translate(_URLSAFE)}
    return cores


_URLSAFE = str.maketrans("+/", "-_")


def _fuzzy(form: str) -> str:
    """A regex for `form` in any mix of spellings, letters in either case.

    It opens with a class of every character a spelling of its first character can start with (the spelling is
    then told apart looking back at that one): re then skips ahead through text that cannot match in C, which
    makes scrubbing a large report some ten times faster than an opening group of alternatives would.
    """
    first = _spellings(form[0])
    leads = "".join(sorted({lead for lead, _ in first}))
    opening = "|".join(f"(?<=[{re.escape(lead)}]){rest}" for lead, rest in first)
    others = ("|".join(f"[{re.escape(lead)}]{rest}" for lead, rest in _spellings(char)) for char in form[1:])
    return f"[{re.escape(leads)}](?:{opening})" + "".join(f"(?:{spelled})" for spelled in others)


@functools.lru_cache(maxsize=4096)
def _spellings(char: str) -> tuple[tuple[str, str], ...]:
    """Every way a character is commonly written in text a step keeps: (characters it starts with, regex of the
    rest) pairs."""
    code = ord(char)
    utf8 = char.encode("utf-8", "surrogatepass")
    escape = r"\\*"  # after the first backslash, more where escaped text was escaped again (JSON inside JSON)
    cased = {char} | ({char.swapcase()} if len(char.swapcase()) == 1 else set())
    ways = [("".join(sorted(cased)), "")]
    # Percent-encoded, and encoded twice.
    ways.append(("%", "(?:25)?" + "%(?:25)?".join(_hex(byte, 2) for byte in utf8)))
    if code < 0x10000:
        ways.append(("\\", f"{escape}[uU]{_hex(code, 4)}"))  # JSON \uXXXX
    else:
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        ways.append(("\\", f"{escape}[uU]{_hex(high, 4)}\\+[uU]{_hex(low, 4)}"))
    if code < 0x100:
        ways.append(("\\", f"{escape}[xX]{_hex(code, 2)}"))  # a Python repr
    short = json.dumps(char)[1:-1]
    if short.startswith("\\"):
        ways.append(("\\", escape + re.escape(short[1:])))  # \" \\ \n ...
    if char in "/'\"":
        ways.append(("\\", escape + re.escape(char)))  # \/ as PHP writes it, \' as Python may
    ways += [("&", f"#0*{code};"), ("&", f"#[xX]0*{_hex(code, 1)};")]
    if html.escape(char) != char:
        ways.append(("&", re.escape(html.escape(char)[1:])))
    if char in " +":
        ways.append(("+" if char == " " else " ", ""))  # a form's space, and a + a form decoder took for one
    return tuple(ways)


def _hex(number: int, width: int) -> str:
    """`number` in hex, at least `width` digits, in either case."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _url_parts(secret: str) -> set[str]:
    """A URL kept as a secret (a webhook with a token in its path) may appear in part: its path segments and query
    values of 8 characters or more are secret too."""
    parts = urlsplit(secret)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return set()
    pieces = [unquote(segment) for segment in parts.path.split("/")] + [value for _, value in parse_qsl(parts.query)]
    return {piece for piece in pieces if len(piece) >= 8}


def secret_id(reference: str) -> str:
    """secret://NAME and secret://projects/P/secrets/NAME[/versions/V] name the same secret NAME; anything else is
    returned as written (the policy compares it, `_short_name` refuses it)."""
    name = reference.removeprefix(PREFIX)
    resource = _RESOURCE.match(name)
    return resource.group("secret") if resource else name


def _short_name(reference: str) -> str:
    name = reference.removeprefix(PREFIX)
    if _RESOURCE.match(name):
        return secret_id(reference)
    if not _SHORT.match(name):
        raise SecretNotFoundError(f"{reference}: expected secret://NAME or secret://projects/P/secrets/S[/versions/V]")
    return name


def _resource_name(reference: str, project: str) -> str:
    name = reference.removeprefix(PREFIX)
    resource = _RESOURCE.match(name)
    if resource:
        return name if resource.group("version") else f"{name}/versions/latest"
    if not project:
        raise SecretNotFoundError(f"{reference}: a short reference needs RELAY_SECRETS_PROJECT or GOOGLE_CLOUD_PROJECT")
    return f"projects/{project}/secrets/{_short_name(reference)}/versions/latest"
