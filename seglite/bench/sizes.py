"""Parsing of WxH sizes given on the command line."""

from __future__ import annotations

from seglite.errors import SegliteError


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'1024x512' -> (1024, 512) as (width, height); None/'' -> None."""
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegliteError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 1024x512") from None
    if width < 16 or height < 16:
        raise SegliteError(f"size {text!r}: width and height must be at least 16 pixels")
    return width, height
