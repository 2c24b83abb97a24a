"""The offline provider's images: a deterministic PNG per prompt, rendered locally with Pillow (no model)."""

from __future__ import annotations

import hashlib
import io
import re
import textwrap

from PIL import Image, ImageDraw, ImageFont


def render_png(prompt: str, width: int, height: int) -> bytes:
    """A deterministic PNG for `prompt`: colours and shapes from its hash, its text, an offline band."""
    digest = hashlib.sha256(prompt.encode()).digest()
    top = tuple(digest[0:3])
    bottom = tuple(digest[3:6])
    image = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), image)
    draw = ImageDraw.Draw(image, "RGBA")
    for i in range(4):
        x, y, r = (
            digest[6 + i] * width // 255,
            digest[10 + i] * height // 255,
            (digest[14 + i] % 40 + 10) * min(width, height) // 100,
        )
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*digest[18 + i * 3 : 21 + i * 3], 90))
    font_size = max(10, width // 28)
    font = ImageFont.load_default(size=font_size)
    lines = textwrap.wrap(prompt, width=max(16, int(width * 0.9 / (font_size * 0.55))))[:6]
    draw.multiline_text((width // 20, height // 12), "\n".join(lines), fill=(255, 255, 255, 230), font=font, spacing=4)
    band = max(14, height // 14)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 170))
    draw.text(
        (width // 40, height - band + band // 6),
        "OFFLINE PREVIEW - rendered locally, no image model",
        fill="white",
        font=ImageFont.load_default(size=max(9, band // 2)),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def parse_size(size: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{2,4})x(\d{2,4})", size.strip())
    if not match:
        raise ValueError(f"image size must look like 1024x1024, got {size!r}")
    return int(match[1]), int(match[2])
