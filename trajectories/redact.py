"""Remove secrets before anything is written or printed: values of secret-looking environment
variables, well-known credential shapes, credentials in URLs, and the values of secret-looking
keys (`API_TOKEN=...`, `password: ...`, `"secret": "..."`).

The text may be JSON (the recorder redacts whole JSON lines), so every rule stops at a quote or
a backslash and never swallows an escape such as the `\\n` of an encoded newline."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

MARKER = "[REDACTED]"
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
SECRET_PATTERNS = [
    # PEM private keys, raw or with JSON-escaped newlines
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?-----END [A-Z0-9 ]*PRIVATE "
               r"KEY( BLOCK)?-----", re.DOTALL),
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{16,}"),  # Anthropic
    re.compile(r"sk-(proj-)?[A-Za-z0-9_\-]{16,}"),  # OpenAI (project and legacy keys)
    re.compile(r"[sr]k_(live|test)_[A-Za-z0-9]{16,}"),  # Stripe secret / restricted keys
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"glpat-[A-Za-z0-9_\-]{20,}"),  # GitLab personal access tokens
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),  # Google API keys
    re.compile(r"npm_[A-Za-z0-9]{36}"),  # npm tokens
    re.compile(r"pypi-[A-Za-z0-9_\-]{50,}"),  # PyPI upload tokens
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key ids
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWTs
]
"""Credentials recognisable by their shape alone, replaced whole."""

AUTH_HEADER = re.compile(r"\b(Bearer|Basic)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)")
URL_USERINFO = re.compile(r"(?<![A-Za-z0-9+.\-])([a-zA-Z][a-zA-Z0-9+.\-]*+://)([^\s/@\"'\\<>]++)@")
URL_QUERY_SECRET = re.compile(
    r"([?&;](?:[a-z0-9_\-]*(?:key|token|secret|password|passwd|sig|signature|auth)"
    r"[a-z0-9_\-]*)=)([^&#\s\"'\\<>]+)", re.IGNORECASE)

SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd",
                          "passphrase", "credential", "credentials", "auth"})
"""A key is secret-looking when one of its words (split at _ - . and camelCase) is one of these,
or when, written in one word, it ends with one of SECRET_SUFFIXES (`APIKEY`, `dbpassword`)."""
SECRET_SUFFIXES = ("apikey", "token", "secret", "password", "passwd", "passphrase")
CODE_WORDS = frozenset({"none", "null", "true", "false", "undefined", "nil", "self", "cls"})

KEY_SEPARATOR = re.compile(
    r"(?:(?<=\\[nrt])|(?<![A-Za-z0-9_\\\-.]))"  # a key starts a word (or follows an escape)
    r"(?P<key>[A-Za-z_][A-Za-z0-9_\-.]*+)"
    r"(?P<close>\\*[\"'])?"
    r"(?P<sep>[ \t]*[:=][ \t]*)")
VALUE = re.compile(r"(?P<open>\\*[\"'])?(?P<value>[^\s\"'`\\,;&<>{}()\[\]=]+)")
"""`KEY=value`, `key: value`, `"key": "value"` (also JSON-escaped): a key, then its value. The
value is matched apart, so a key inside another key's value is still seen."""
PROSE = re.compile(r"\b(password|passwd|passphrase|token|secret|api key)(\s+is:?\s+)"
                   r"([^\s\"'`\\,;<>{}()\[\]]+)", re.IGNORECASE)
"""`the db password is P@ssw0rd-123456`."""
SECRET_HINT = re.compile(r"key|token|secret|passw|passphrase|credential|auth", re.IGNORECASE)
"""A cheap test that the key-value rules could match at all."""
PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
NUMBER = re.compile(r"[+\-]?[0-9][0-9_.]*([eE][+\-]?[0-9]+)?")


def key_words(name: str) -> list[str]:
    """The words of a key name: `API_TOKEN` -> api, token; `authToken` -> auth, token."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[\s_\-.]+", spaced) if w]


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether values under this key name are secrets (`DB_PASSWORD` yes, `keyboard` no)."""
    if not SECRET_HINT.search(name):
        return False
    if any(word in SECRET_WORDS for word in key_words(name)):
        return True
    return name.lower().replace("_", "").replace("-", "").endswith(SECRET_SUFFIXES)


def looks_like_code(value: str) -> bool:
    """Values that are code or placeholders, not secrets: names, attributes, numbers, paths."""
    return (value.lower() in CODE_WORDS or bool(ATTRIBUTE.fullmatch(value))
            or bool(NUMBER.fullmatch(value)) or is_reference(value))


def is_reference(value: str) -> bool:
    """A path or a variable reference (`/etc/app.key`, `$TOKEN`) names a secret, is not one."""
    return value.startswith(("/", "./", "../", "~/", "$"))


def is_secret_value(value: str, quoted: bool, env_style: bool, following: str) -> bool:
    """Whether `value` (after a secret-looking key) is a secret rather than code.

    A quoted value of MIN_SECRET_LENGTH or more is data, so a secret unless it is a path.
    Unquoted, it must not be code (`tokens[0]`, `forms.CharField()`, `self.token`, `None`)
    and, when it is a plain name without a digit, only an environment-style assignment
    (`SECRET_KEY=changeme`) counts."""
    if len(value) < MIN_SECRET_LENGTH:
        return False
    if quoted:
        return not is_reference(value)
    if following in ("(", "[") or looks_like_code(value):
        return False
    if PLAIN_IDENTIFIER.fullmatch(value) and not any(c.isdigit() for c in value):
        return env_style
    return True


def redact_key_values(text: str) -> str:
    """`text` with the values of secret-looking keys replaced, the keys kept."""
    pieces: list[str] = []
    done = 0
    for match in KEY_SEPARATOR.finditer(text):
        if match.start() < done or not is_secret_key(match["key"]):
            continue
        value = VALUE.match(text, match.end())
        if value is None:
            continue
        env_style = match["key"].isupper() and match["sep"] == "=" and match["close"] is None
        following = text[value.end():value.end() + 1]
        if is_secret_value(value["value"], value["open"] is not None, env_style, following):
            pieces += [text[done:value.start("value")], MARKER]
            done = value.end()
    return "".join(pieces) + text[done:]


def _redact_credential(match: re.Match[str]) -> str:
    """`Bearer <token>`: a token has a digit or a symbol, a word (`Basic authentication`) not."""
    return match[0] if match[3].isalpha() else match[1] + match[2] + MARKER


def _redact_prose(match: re.Match[str]) -> str:
    value = match[3].rstrip(".!?:")
    if len(value) < MIN_SECRET_LENGTH or value.isalpha() or looks_like_code(value):
        return match[0]
    return match[1] + match[2] + MARKER + match[3][len(value):]


def redact_text(text: str) -> str:
    """`text` with credential shapes, URL credentials and secret-looking key values replaced
    (the keys stay visible: `API_TOKEN=[REDACTED]`)."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(MARKER, text)
    text = AUTH_HEADER.sub(_redact_credential, text)
    text = URL_USERINFO.sub(lambda m: m[1] + MARKER + "@", text)
    text = URL_QUERY_SECRET.sub(lambda m: m[1] + MARKER, text)
    if SECRET_HINT.search(text):
        text = redact_key_values(text)
        text = PROSE.sub(_redact_prose, text)
    return text


class Redactor:
    """Replaces secret values with a marker. Built from the environment at start.

    Call it on text (`redactor(line)`), or use `data` on JSON-like values (dicts, lists)."""

    def __init__(self, environ: dict[str, str] | None = None, extra: list[str] | None = None):
        env = os.environ if environ is None else environ
        values = {
            v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH
        }
        values.update(v for v in (extra or []) if len(v) >= MIN_SECRET_LENGTH)
        self.values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MARKER)
        return redact_text(text)

    def data(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted, and the string values of
        secret-looking keys (`{"api_key": "..."}`) replaced outright."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self._item(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    def _item(self, key: Any, value: Any) -> Any:
        if (isinstance(key, str) and isinstance(value, str) and is_secret_key(key)
                and " " not in value and is_secret_value(value, True, False, "")):
            return MARKER
        return self.data(value)
