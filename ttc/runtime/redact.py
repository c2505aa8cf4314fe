"""Keep credentials out of provider text before ttc shows it anywhere.

Some gateways and proxies quote the API key or the whole ``Authorization`` header in their
error bodies. Adapters pass every piece of provider text through ``redact`` before it goes into
an exception, so that no message, ``repr``, traceback, trace event, log line or CLI output holds
a key: the configured keys (also as JSON-escaped and URL-quoted text), ``Bearer`` tokens and the
values of credential headers are replaced with ``[redacted]``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from pydantic import SecretStr

REDACTED = "[redacted]"

#: Shorter secrets are not searched for literally (a 1-letter test key would garble every
#: message); they are still caught as a ``Bearer`` value or a credential header's value.
SHORTEST_SECRET = 8

_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=:\-]+")
# A credential header quoted with its value: ``Authorization: ...``, ``"x-api-key": "..."``,
# ``api_key=...``. The value runs to the next quote, comma, brace or line end.
_CREDENTIAL = re.compile(
    r"(?i)(\b(?:proxy-)?authorization|\b(?:x-)?api[-_]?key|\bx-goog-api-key)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\"'\s,;}\]][^\"',;}\]\n]*)"
)
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password")
_SECRET_ENV = re.compile(r"(?i)(API_?KEY|_KEY|_TOKEN|_SECRET)$")


def redact(text: str, secrets: Iterable[str | SecretStr | None] = ()) -> str:
    """``text`` with every secret in ``secrets``, every ``Bearer`` token and the value of every
    quoted credential header (``Authorization: Basic ...``) replaced with ``[redacted]``.

    Call it before cutting ``text`` to length: a key crossing the cut would leave its prefix."""
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if not value or len(value) < SHORTEST_SECRET:
            continue
        escaped = json.dumps(value)[1:-1]
        for form in {value, escaped, escaped.replace("/", "\\/"), quote(value, safe="")}:
            text = text.replace(form, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _CREDENTIAL.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The values of headers that carry credentials (``Authorization``, ``api-key``,
    ``x-api-key``, tokens, cookies), as a secrets list for ``redact``."""
    return [v for k, v in headers.items() if isinstance(v, str) and _SECRET_HEADER.search(k)]


def environment_secrets() -> list[str]:
    """Values of environment variables named like keys (``*_API_KEY``, ``*_KEY``, ``*_TOKEN``,
    ``*_SECRET``): where a library reads the key itself (litellm without ``api_key=``), these
    are the keys it may have sent."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= SHORTEST_SECRET]
