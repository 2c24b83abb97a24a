"""Stage 6: render every image prompt that has no image file, and record the file.

Files are written atomically (temporary file, then rename) under `MEDIA_DIR/<site>/`, named by variant,
kind, position and content hash; a row whose file went missing is regenerated. Provider output must
decode as an image, or the item fails and nothing is recorded.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ImageTask, ModelCallFailed
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.store import Store


def generate_images(
    store: Store,
    engine: ModelEngine,
    site: RunSite | str,
    media_dir: Path,
    options: RunOptions = RunOptions(),
) -> StageReport:
    """Generate missing images for a site, saving each file and its row as soon as it arrives."""
    run = RunSite.of(store, site)
    site_id, folder = run.site.id, media_dir / run.site.slug
    candidates = store.image_prompts(site_id) if options.force else store.prompts_missing_images(site_id)
    tasks = [ImageTask(ref=f"image_prompt:{p.id}", prompt=p.prompt, item=p) for p in options.select(candidates)]
    if options.dry_run:
        return dry_run_report(engine.estimate("images", tasks), len(tasks))
    report = StageReport(items=len(tasks))
    created = 0
    total_bytes = 0
    for task, rendered in engine.generate_images("images", tasks):
        if isinstance(rendered, ModelCallFailed):
            report.failures.append(str(rendered))
            continue
        prompt = task.item
        try:
            with Image.open(io.BytesIO(rendered.png)) as decoded:
                decoded.verify()
                width, height = decoded.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            report.failures.append(f"images for {task.ref}: provider returned bytes that are not an image ({exc})")
            continue
        checksum = hashlib.sha256(rendered.png).hexdigest()
        path = folder / f"v{prompt.variant_id}-{prompt.kind}-{prompt.position}-{checksum[:12]}.png"
        _write_atomically(path, rendered.png)
        store.save_image(
            site_id,
            prompt.id,
            {
                "path": str(path),
                "provider": engine.image_provider.name,
                "model": rendered.model,
                "size": f"{width}x{height}",
                "width": width,
                "height": height,
                "bytes": len(rendered.png),
                "checksum": checksum,
            },
        )
        created += 1
        total_bytes += len(rendered.png)
    images = store.images(site_id)
    report.counts = {
        "images_created": created,
        "images_total": len(images),
        "bytes_written": total_bytes,
    }
    report.preview = [
        {"file": Path(i.path).name, "size": i.size, "model": i.model, "sha256": i.checksum[:12]} for i in images[:15]
    ]
    return report


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
