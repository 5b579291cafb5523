"""Remove secrets before anything is written: values of secret-looking environment variables
and well-known credential patterns."""

from __future__ import annotations

import os
import re

MARKER = "[REDACTED]"
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{16,}"),  # OpenAI / Anthropic style keys
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key ids
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
]


class Redactor:
    """Replaces secret values with a marker. Built from the environment at start."""

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
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(MARKER, text)
        return text
