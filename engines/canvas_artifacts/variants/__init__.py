"""Image variants of raster previews: resized copies rendered once, stored, served.

`GET .../content?w=256&format=webp` (and the same on a signed URL) answers
a copy that fits inside w x h, aspect kept, never upscaled, EXIF orientation
applied and metadata stripped. Sizes come from IMAGE_SIZES and qualities from
IMAGE_QUALITIES only, so the variants one preview can ever have are a small set
known in advance (`variant_bound`), whatever callers ask for.

A variant is a blob beside its source (`.../preview/{artifact_id}.v/...`)
plus a media_v2 DerivedArtifact of kind `canvas_preview_variant` under the
preview's asset. Its record id is derived from (tenant, env, artifact,
variant), so finding it is one primary-key read and two concurrent first
renders insert one record: the loser's insert is ignored. The blob key ends
in the rendered bytes' hash, so a loser whose bytes differ never overwrites
the winner's blob; it deletes its own instead.

One module per concept; nothing is re-exported here, import from the module:

- `query.py`: what a request asks for (`VariantQuery`, the `variant_query` dependency);
- `spec.py`: that request checked against the settings and resolved (`VariantSpec`,
  `check_request`, Accept handling, `variant_bound`);
- `ids.py`: a variant's record id and blob key;
- `repository.py`: its record (find, insert-if-absent, `variants_of`, tombstones, cache);
- `render.py`: Pillow: decode, orient, shrink, re-encode;
- `pool.py`: the render limiter and the low-priority render threads;
- `service.py`: `serve_variant`, what `/content` calls for a variant.
"""
