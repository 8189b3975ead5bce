"""Text helpers shared by readers and conversion: safe JSON parsing, UTF-8 repair, truncation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRUNCATION_MARKER = "… [truncated {dropped} characters]"


def parse_json(value: Any) -> Any:
    """Parse an attribute that should hold JSON; a malformed one comes back as the plain string.

    A structured value (an OTLP array or kvlist, as some GenAI events carry) is already parsed; an
    array arrives as a tuple and is returned as a list, like its JSON twin.
    """
    if isinstance(value, tuple):
        return list(value)
    if not isinstance(value, str):
        return value
    stripped = value.lstrip()
    if not stripped or stripped[0] not in '[{"':
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return value


def compact_json(value: Any) -> str:
    """JSON without spaces, non-ASCII kept readable; anything unserialisable becomes its str()."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return str(value)


def clean_text(text: str, limit: int) -> str:
    """Valid UTF-8 (lone surrogates replaced) and at most `limit` characters plus a truncation marker."""
    if not text.isascii():  # ASCII is valid UTF-8 (and `isascii` is a flag read): no copy to check it
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    if limit > 0 and len(text) > limit:
        return text[:limit] + TRUNCATION_MARKER.format(dropped=len(text) - limit)
    return text


def as_int(value: Any) -> int:
    """A count attribute (token usage) as an int; missing or unreadable counts as 0."""
    if value is None:  # the usual case for a chain or tool span: no exception to raise and catch
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def as_text(value: Any) -> str:
    """Any attribute value as text: strings as they are, bytes decoded leniently, others as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return compact_json(value)


def blocks_text(content: Any) -> str:
    """The text of message content: a string, or a list of content blocks / GenAI `parts`.

    Text blocks hold their text under `text` (LangChain, OpenAI) or `content` (GenAI parts); other
    block types (images, tool calls) carry no text and are left out.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list | tuple):
        return as_text(content)
    texts = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif isinstance(block, Mapping) and block.get("type", "text") == "text":
            texts.append(as_text(block.get("content", block.get("text", ""))))
        elif isinstance(block, Mapping):
            texts.append(media_placeholder(block) or "")
    return "\n".join(t for t in texts if t)


# Content parts that carry media, by convention: GenAI semconv 1.37+ (`blob`, `uri`, `file` with
# `modality` and `mime_type`), OpenAI (`image_url`, `input_audio`), LangChain (`image`, `audio`, `file`).
_MEDIA_TYPES = {"blob", "uri", "file", "image", "audio", "video", "image_url", "input_audio", "input_image"}


def media_placeholder(block: Mapping[str, Any]) -> str | None:
    """A media part as a short `[image: image/png]`: Context gets what was sent, never its bytes or base64."""
    kind = block.get("type")
    if kind == "generic":  # semantic-conventions-genai: a provider block no part type fits, its type beside
        return f"[{as_text(block.get('generic_type')) or 'content'}]"
    if kind not in _MEDIA_TYPES:
        return None
    modality = block.get("modality") or {"image_url": "image", "input_image": "image", "input_audio": "audio"}.get(
        kind, kind if kind in ("image", "audio", "video") else "file"
    )
    mime = block.get("mime_type") or block.get("mimeType")
    url = block.get("uri", block.get("url", block.get("image_url")))
    url = url.get("url") if isinstance(url, Mapping) else url
    if not mime and isinstance(url, str) and url.startswith("data:"):  # OpenLLMetry: a data URI, base64 inside
        mime = url[5:].split(";", 1)[0].split(",", 1)[0]
    if not mime and kind == "input_audio" and isinstance(block.get("input_audio"), Mapping):
        audio_format = block["input_audio"].get("format")
        mime = f"audio/{audio_format}" if audio_format else None
    return f"[{as_text(modality)}: {as_text(mime)}]" if mime else f"[{as_text(modality)}]"
