"""WxH sizes as the command line and the Python API give them."""

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


def as_size(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """A size from Python: '1024x512' or (1024, 512), checked as the command line checks it."""
    if value is None or isinstance(value, str):
        return parse_size(value)
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError):
        raise SegliteError(f"size {value!r}: expected (width, height) or 'WIDTHxHEIGHT', e.g. (1024, 512)") from None
    return parse_size(f"{width}x{height}")
