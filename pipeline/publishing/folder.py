"""The folder target: a published article as files under `<publish dir>/<site>/<article>/`.

`index.html`, `index.md` (public YAML front matter, then the body as Markdown), `images/` and the private
`.publication.json` (ids, keywords, provider and model) are written into a hidden sibling folder and swapped
in place of the previous export; the swap is undone if the status cannot be committed afterwards, so a
failed publish leaves any earlier export untouched.

The article folder is a Hugo leaf bundle: Hugo copies every non-content file of it to the built site, but
skips dot-files and dot-folders (verified with Hugo 0.111; Jekyll excludes them by default too), so the
sidecar is a dot-file inside the bundle, swapped and undone with the rest of the export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pipeline.models import ContentVariant
from pipeline.publishing.render import (
    ArticleImage,
    front_matter,
    publication_record,
    render_html,
    render_markdown,
)
from pipeline.publishing.structured_data import PageFacts
from pipeline.review import Article, PublishError

# A dot-file: static-site generators leave it out of the built site (see the module docstring).
SIDECAR = ".publication.json"


@contextmanager
def exported(
    publish_root: Path,
    article: Article,
    variant: ContentVariant,
    images: Sequence[ArticleImage],
    *,
    date: datetime,
    lastmod: datetime,
    page: PageFacts | None = None,
) -> Iterator[Path]:
    """Export the variant to `<publish_root>/<site>/<article>/` (yielded) around the block committing the status.

    `date` is the article's first publication, `lastmod` this export's time; `page` what the page says
    about itself (canonical URL, language, JSON-LD: `structured_data.page_facts`). If the block raises, the new
    export is dropped and the previous one put back; otherwise the previous one is deleted.
    """
    target = publish_root / article.site.slug / article.slug

    def write(folder: Path) -> None:
        _write_export(folder, article, variant, images, date=date, lastmod=lastmod, page=page)

    previous = _write_and_swap(target, write)
    try:
        yield target
    except BaseException:
        _restore(target, previous)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _write_export(
    folder: Path,
    article: Article,
    variant: ContentVariant,
    images: Sequence[ArticleImage],
    *,
    date: datetime,
    lastmod: datetime,
    page: PageFacts | None,
) -> None:
    """Write index.html, index.md, images/ and the sidecar into `folder`, checking every copied image's checksum."""
    image_dir = folder / "images"
    image_dir.mkdir()
    for image in images:
        data = Path(image.image.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != image.image.checksum:
            raise PublishError(
                f"content {article.content.id}: image file {image.image.path} does not match its recorded checksum; "
                f"re-materialize images for site '{article.site.slug}' (it changed on disk)"
            )
        (image_dir / image.name).write_bytes(data)
    (folder / "index.html").write_text(render_html(variant, images, page), encoding="utf-8")
    matter = front_matter(article, variant, images, date=date, lastmod=lastmod, page=page)
    (folder / "index.md").write_text(render_markdown(matter, variant, images), encoding="utf-8")
    record = publication_record(article, variant, published_at=date, exported_at=lastmod)
    (folder / SIDECAR).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_and_swap(target: Path, write: Callable[[Path], None]) -> Path | None:
    """Fill a hidden sibling folder with `write`, then put it in place of `target`.

    Returns where the previous `target` was moved (to restore it or delete it), or None if there was none.
    The hidden `.name.*` siblings keep a half-written export out of any static-site build.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a published folder must be readable by a web server
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = staging.with_suffix(".old") if target.exists() else None
    if previous is not None:
        os.replace(target, previous)
    try:
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous is not None:
            os.replace(previous, target)
        raise
    return previous


def _restore(target: Path, previous: Path | None) -> None:
    """Undo `_write_and_swap`: drop the new export and put the previous one back."""
    shutil.rmtree(target, ignore_errors=True)
    if previous is not None:
        os.replace(previous, target)
