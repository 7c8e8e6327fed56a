"""A tokenizer that needs no downloaded tables.

The Demo relay counts its usage with it, and runs whose relay reported no usage
(stopped, broken, or relays that never send it) are estimated with it and
flagged as estimated. Words, numbers and single punctuation marks are tokens;
each CJK character is one token, which is close to what BPE tokenizers give.
"""

import re

TOKEN = re.compile(r"\s*(?:[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W_]+|[^\w\s]|_+)|\s+$")


def split_tokens(text: str) -> list[str]:
    """Pieces whose concatenation is `text`, each carrying its leading space."""
    return TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def content_text(content) -> str:
    """The text of a message's content: a string, or the text parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def count_prompt_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(content_text(m.get("content"))) for m in messages)
