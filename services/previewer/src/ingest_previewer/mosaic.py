"""The family mosaic: rendition PNGs centred in equal cells of a grid, encoded as PNG and WebP
(sRGB, with alpha only if the background lets anything show through).

The WebP is lossless when every tile's own WebP is (flat icons: exact and smaller), else
lossy. Tiles are our own renditions (written by the processor), decoded here with libvips'
sniffing loader; the previewer does not run the processor's SVG-only loader block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyvips
from ingest_common.imaging import as_srgb_with_alpha

from ingest_previewer.spec import MosaicSpec

__all__ = ["Mosaic", "MosaicSpec", "compose_mosaic", "grid_shape", "mosaic_size"]


@dataclass(frozen=True)
class Mosaic:
    png: bytes
    webp: bytes
    width: int
    height: int
    tiles: int
    webp_lossless: bool


def grid_shape(count: int, spec: MosaicSpec) -> tuple[int, int]:
    """(columns, rows) for ``count`` tiles: fixed columns (never more than tiles) or near-square."""
    if count < 1:
        raise ValueError("a mosaic needs at least one tile")
    columns = spec.columns if spec.columns is not None else math.ceil(math.sqrt(count))
    columns = min(columns, count)
    return columns, math.ceil(count / columns)


def mosaic_size(count: int, spec: MosaicSpec) -> tuple[int, int]:
    """(width, height) in pixels of the mosaic of ``count`` tiles."""
    columns, rows = grid_shape(count, spec)

    def side(cells: int) -> int:
        return 2 * spec.padding + cells * spec.tile + (cells - 1) * spec.gap

    return side(columns), side(rows)


def compose_mosaic(tiles: Sequence[bytes], spec: MosaicSpec, *, flat_tiles: bool = False) -> Mosaic:
    """Compose encoded tiles (PNG, any size; larger than ``spec.tile`` is shrunk to fit).
    ``flat_tiles``: every tile's own WebP rendition is lossless (``MosaicSpec.webp_lossless``)."""
    if not tiles:
        raise ValueError("a mosaic needs at least one tile")
    columns, _ = grid_shape(len(tiles), spec)
    width, height = mosaic_size(len(tiles), spec)
    # new_from_image tags the constant image "multiband"; composite needs a colourspace.
    canvas = (
        pyvips.Image.black(width, height)
        .new_from_image(list(spec.background))
        .copy(interpretation="srgb")
    )
    # One composite of every tile onto the canvas, each centred in its cell and blended by its
    # alpha: a fifth less CPU than a background cell per tile joined into a grid, same pixels.
    placed = [_fitted(data, spec) for data in tiles]
    xs = [_offset(n % columns, tile.width, spec) for n, tile in enumerate(placed)]
    ys = [_offset(n // columns, tile.height, spec) for n, tile in enumerate(placed)]
    image = canvas.composite(placed, "over", x=xs, y=ys)
    if spec.background[3] == 255:
        # Nothing shows through an opaque background: an alpha band of 255s would only cost
        # the PNG bytes (1-6 % on the corpus' mosaics) and both encoders time.
        image = image.extract_band(0, n=3)
    # Two encoders would each pull the whole pipeline (decode, composite) again: materialise.
    image = image.copy_memory()
    png = image.write_to_buffer(".png", keep="none")
    lossless = spec.webp_lossless(flat_tiles)
    webp = image.write_to_buffer(".webp", **spec.webp_options(lossless))
    return Mosaic(
        bytes(png), bytes(webp), int(image.width), int(image.height), len(tiles), lossless
    )


def _fitted(data: bytes, spec: MosaicSpec) -> pyvips.Image:
    """A tile, decoded, no larger than a cell."""
    tile = as_srgb_with_alpha(pyvips.Image.new_from_buffer(data, "", access="sequential"))
    if tile.width > spec.tile or tile.height > spec.tile:
        # thumbnail_image premultiplies alpha while resizing, so edges do not darken.
        tile = tile.thumbnail_image(spec.tile, height=spec.tile)
    return tile


def _offset(cell: int, size: int, spec: MosaicSpec) -> int:
    """Where a tile ``size`` pixels long starts, centred in column or row ``cell``."""
    return spec.padding + cell * (spec.tile + spec.gap) + (spec.tile - size) // 2
