"""The customer console: one self-contained HTML page served at ``GET /console`` (no key: the page asks for
one and calls the API from the browser, with the key in ``x-api-key``).

Its CSS and JS ship as package data (api_handler/static/) and are put inline into the one response, so
API Gateway serves it from the one route like any other; the Content-Security-Policy allows exactly those
two inline blocks, by the sha256 of the very text sent (computed here, once, from the one copy), and
nothing else: no other script or style, no connection but to this API and to the origin its presigned
upload POSTs go to (the results bucket's, passed in by the route), no framing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

STATIC = "static"
STYLE_SLOT = "<style></style>"
SCRIPT_SLOT = "<script></script>"

# What the console's responses promise the browser besides their CSP (the descriptions go into the OpenAPI
# document).
SECURITY_HEADERS = {
    "X-Content-Type-Options": ("nosniff", "the page is HTML and nothing else"),
    "Referrer-Policy": ("no-referrer", "no link followed from the console tells where it came from"),
    "X-Frame-Options": ("DENY", "the console is never framed (older browsers; CSP frame-ancestors too)"),
    "Cross-Origin-Opener-Policy": ("same-origin", "no other site's window keeps a handle on the console"),
    "Cache-Control": ("no-cache", "a new version of the console is picked up at once"),
}
CSP_DESCRIPTION = (
    "only the page's own inline script and style (by sha256); connections to this API and to the origin of "
    "the uploads' presigned POSTs only"
)


@dataclass(frozen=True)
class Page:
    html: str
    headers: dict[str, str]


def _source_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def content_security_policy(script: str, style: str, upload_origin: str) -> str:
    """``upload_origin``: scheme://host[:port] of the uploads' presigned POSTs (the file picker's)."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src '{_source_hash(script)}'",
            f"style-src '{_source_hash(style)}'",
            f"connect-src 'self' {upload_origin}",
            "img-src data:",  # the empty favicon, so the browser asks the API for no /favicon.ico
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


@lru_cache(maxsize=4)
def page(upload_origin: str) -> Page:
    """The page and its headers, built once (per uploads origin) from the package's files."""
    if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", upload_origin):
        raise ValueError(f"not an origin: {upload_origin!r}")
    static = resources.files("pijobs.api_handler") / STATIC
    template = (static / "console.html").read_text(encoding="utf-8")
    style = (static / "console.css").read_text(encoding="utf-8")
    script = (static / "console.js").read_text(encoding="utf-8")
    if "</style" in style.lower() or "</script" in script.lower():
        raise ValueError("the console's CSS or JS would end its own inline block")
    if template.count(STYLE_SLOT) != 1 or template.count(SCRIPT_SLOT) != 1:
        raise ValueError("console.html needs one empty <style></style> and one empty <script></script>")
    html = template.replace(STYLE_SLOT, f"<style>{style}</style>").replace(
        SCRIPT_SLOT, f"<script>{script}</script>"
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(script, style, upload_origin),
        **{name: value for name, (value, _) in SECURITY_HEADERS.items()},
    }
    return Page(html, headers)


def header_descriptions() -> dict[str, str]:
    """The console response's headers, for the route table and the OpenAPI document."""
    return {
        "Content-Security-Policy": CSP_DESCRIPTION,
        **{name: f"`{value}`: {why}" for name, (value, why) in SECURITY_HEADERS.items()},
    }
