"""Procedural images whose visible attributes follow their five attribute terms (pure PIL, deterministic).

A vision-language policy can only learn the synthetic preference task from pixels if every term of every
dimension leaves its own visible trace, whatever the other four terms are. Each dimension controls one
independent aspect of the picture:

- ``Color``: the hue of the dominant colour (shapes and a tinted background);
- ``Saturation``: how that hue is rendered (vivid, deep, greyed, pale, almost grey, or one hue in shades);
- ``Detail``: how many shapes there are and the texture on top (noise, scribbles, shading, dots);
- ``Art Styles``: the composition (angular polygons, a pixel grid, dabs, a dark vignette, sinuous curves,
  a gradient sky with floating spheres, wave bands with ink outlines, stepped pyramids);
- ``Artistic Medium``: how each shape is drawn (blurred washes, textured strokes, shaded solids with a
  shadow, pencil outlines, concentric coils, tiles with grout).

The same ``(attrs, seed, size)`` always gives the same pixels (and the same PNG bytes).
"""

from __future__ import annotations

import colorsys
import math
import random

from PIL import Image, ImageDraw, ImageFilter

from .vocab import DIMENSIONS, VOCAB

DEFAULT_SIZE = 64

#: base RGB of each Color term
BASE_COLORS: dict[str, tuple[int, int, int]] = {
    "Teal": (0, 140, 140), "Pink": (255, 100, 180), "Charcoal Gray": (70, 78, 88),
    "Crimson": (200, 20, 50), "Golden Yellow": (245, 190, 20), "Lavender": (165, 120, 235),
}
#: Saturation term -> (saturation factor, target lightness) in HLS space; Monochrome is special-cased
SATURATION: dict[str, tuple[float, float]] = {
    "Vibrant": (1.6, 0.55), "Intense": (1.6, 0.32), "Muted": (0.45, 0.45), "Pastel": (0.7, 0.82),
    "Desaturated": (0.12, 0.52), "Monochrome": (0.8, 0.5),
}
#: Detail term -> number of shapes
DETAIL_SHAPES: dict[str, int] = {"Minimal": 2, "Rough": 4, "Sketchy": 5, "Fine": 10, "Realistic": 12,
                                 "Intricate": 22}

RGB = tuple[int, int, int]


def _check_vocab() -> None:
    for name, table in (("Color", BASE_COLORS), ("Saturation", SATURATION), ("Detail", DETAIL_SHAPES),
                        ("Art Styles", _STYLES), ("Artistic Medium", _MEDIA)):
        missing = set(VOCAB[name]) - set(table)
        if missing:
            raise AssertionError(f"images.py has no rendering for {name} terms {sorted(missing)}")


# ------------------------------------------------------------------------------------------------ colours
def _hls(rgb: RGB) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(c / 255 for c in rgb))


def _rgb(h: float, l: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, min(max(l, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def palette(color: str, saturation: str) -> tuple[RGB, list[RGB], RGB]:
    """(background, three shape colours, ink) for a Color and a Saturation term."""
    h, l0, s0 = _hls(BASE_COLORS[color])
    factor, light = SATURATION[saturation]
    s = min(1.0, s0 * factor)
    if saturation == "Monochrome":  # one hue, shades only, on a near-black ground
        return _rgb(h, 0.12, s), [_rgb(h, x, s) for x in (0.35, 0.55, 0.75)], _rgb(h, 0.92, s)
    fg = [_rgb(h, light, s), _rgb(h + 0.04, light * 0.85, s), _rgb(h - 0.04, min(0.95, light * 1.12), s)]
    bg = _rgb(h, 0.5 + 0.4 * light, s * 0.35)
    return bg, fg, _rgb(h, 0.1, s * 0.5)


def _shade(c: RGB, f: float) -> RGB:
    """Lighter (f > 0, towards white) or darker (f < 0, towards black)."""
    if f >= 0:
        return tuple(round(x + (255 - x) * f) for x in c)  # type: ignore[return-value]
    return tuple(round(x * (1 + f)) for x in c)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------- shapes
# A shape is (kind, points): kind "poly" (closed), "line" (open polyline), "ellipse" or "rect" (two corners).
Shape = tuple[str, list[tuple[float, float]]]


def _box(rng: random.Random, size: int, lo: float, hi: float) -> list[tuple[float, float]]:
    w = rng.uniform(lo, hi) * size
    h = rng.uniform(lo, hi) * size
    x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
    return [(x, y), (x + w, y + h)]


def _cubism(rng, size, n):
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.2, 0.45) * size
        k = rng.choice((3, 4))
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(k))
        out.append(("poly", [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]))
    return out


def _pixel_art(rng, size, n):
    g = max(1, size // 8)
    out = []
    for _ in range(n):
        x, y = rng.randrange(8) * g, rng.randrange(8) * g
        w, h = rng.randint(1, 4) * g, rng.randint(1, 4) * g
        out.append(("rect", [(x, y), (x + w - 1, y + h - 1)]))
    return out


def _impressionism(rng, size, n):
    out = []
    for _ in range(3 * n + 6):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.04, 0.08) * size
        out.append(("ellipse", [(x - 1.6 * r, y - r), (x + 1.6 * r, y + r)]))
    return out


def _baroque(rng, size, n):
    c = size / 2
    out = []
    for i in range(n):
        r = size * (0.42 - 0.3 * i / max(1, n)) * rng.uniform(0.85, 1.0)
        dx, dy = rng.uniform(-0.08, 0.08) * size, rng.uniform(-0.08, 0.08) * size
        out.append(("ellipse", [(c + dx - r, c + dy - r * 1.2), (c + dx + r, c + dy + r * 1.2)]))
    return out


def _art_nouveau(rng, size, n):
    out = []
    for _ in range(n + 1):
        y0, amp, freq, ph = rng.uniform(0, size), rng.uniform(0.1, 0.25) * size, rng.uniform(1, 2.5), rng.random()
        pts = [(x, y0 + amp * math.sin(2 * math.pi * (freq * x / size + ph))) for x in range(-2, size + 3, 2)]
        out.append(("line", pts))
    return out


def _surrealism(rng, size, n):
    out = []
    k = min(1.8, max(0.8, (6 / n) ** 0.5))  # fewer spheres, larger ones
    for _ in range(n):
        r = rng.uniform(0.05, 0.14) * size * k
        x, y = rng.uniform(r, size - r), rng.uniform(r, 0.6 * size)
        out.append(("ellipse", [(x - r, y - r), (x + r, y + r)]))
    return out


def _ukiyo_e(rng, size, n):
    out = []
    for i in range(n):
        base = size * (0.3 + 0.7 * (i + 1) / (n + 1))
        amp, ph = rng.uniform(0.04, 0.1) * size, rng.random()
        top = [(x, base - amp * abs(math.sin(2 * math.pi * (x / size * 1.5 + ph)))) for x in range(0, size + 4, 4)]
        out.append(("poly", top + [(size + 4, size + 4), (0, size + 4)]))
    return out


def _mesoamerican(rng, size, n):
    out = []
    for _ in range(max(1, n // 2)):
        cx, base = rng.uniform(0.2, 0.8) * size, rng.uniform(0.7, 1.0) * size
        width, step = rng.uniform(0.4, 0.7) * size, max(3.0, size / 12)
        for t in range(4):
            w = width * (1 - t / 4.5)
            out.append(("rect", [(cx - w / 2, base - (t + 1) * step), (cx + w / 2, base - t * step)]))
    return out


_STYLES = {"Cubism": _cubism, "Pixel Art": _pixel_art, "Impressionism": _impressionism, "Baroque": _baroque,
           "Art Nouveau": _art_nouveau, "Surrealism": _surrealism, "Ukiyo-e": _ukiyo_e,
           "Mesoamerican Art": _mesoamerican}


def _scaled(shape: Shape, f: float, dx: float = 0.0, dy: float = 0.0) -> Shape:
    kind, pts = shape
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    return kind, [(cx + (x - cx) * f + dx, cy + (y - cy) * f + dy) for x, y in pts]


def _draw(d: ImageDraw.ImageDraw, shape: Shape, fill: RGB | None, outline: RGB | None, width: int = 1) -> None:
    kind, pts = shape
    if kind == "line":
        d.line(pts, fill=fill or outline, width=max(width, 3))
        return
    if kind in ("ellipse", "rect"):
        (x0, y0), (x1, y1) = pts
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        (d.ellipse if kind == "ellipse" else d.rectangle)(box, fill=fill, outline=outline, width=width)
        return
    d.polygon(pts, fill=fill, outline=outline, width=width)


# -------------------------------------------------------------------------------------------------- media
def _watercolor(d, shape, color, ink, rng):
    _draw(d, _scaled(shape, 1.08), _shade(color, 0.35), None)
    _draw(d, shape, color, None)


def _oil_paint(d, shape, color, ink, rng):
    _draw(d, shape, color, _shade(color, -0.3), 2)
    kind, pts = shape
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    for _ in range(3):
        y = rng.uniform(min(ys), max(ys))
        d.line([(min(xs), y), (max(xs), y + rng.uniform(-3, 3))], fill=_shade(color, 0.3), width=2)


def _3d_modeling(d, shape, color, ink, rng):
    _draw(d, _scaled(shape, 1.0, 3, 3), _shade(color, -0.6), None)
    _draw(d, shape, _shade(color, -0.15), None)
    _draw(d, _scaled(shape, 0.55, -1.5, -1.5), _shade(color, 0.45), None)


def _pencil_sketch(d, shape, color, ink, rng):
    _draw(d, shape, None, _shade(color, -0.25), 2)


def _coiling(d, shape, color, ink, rng):
    for i, f in enumerate((1.0, 0.72, 0.45, 0.2)):
        _draw(d, _scaled(shape, f), None, color if i % 2 == 0 else _shade(color, -0.4), 2)


def _mosaic(d, shape, color, ink, rng):
    _draw(d, shape, color, None)


_MEDIA = {"Watercolor": _watercolor, "Oil Paint": _oil_paint, "3D Modeling": _3d_modeling,
          "Pencil Sketch": _pencil_sketch, "Coiling": _coiling, "Mosaic": _mosaic}


# ------------------------------------------------------------------------------------------------ render
def render_image(attrs: dict[str, str], seed: int, size: int = DEFAULT_SIZE) -> Image.Image:
    """An RGB ``size`` x ``size`` image showing the five attribute terms of ``attrs``."""
    missing = [d for d in DIMENSIONS if d not in attrs]
    if missing:
        raise ValueError(f"attrs lacks {missing}; expected the five dimensions {list(DIMENSIONS)}")
    style, color, medium, sat, detail = (attrs[d] for d in DIMENSIONS)
    for d, table in (("Art Styles", _STYLES), ("Color", BASE_COLORS), ("Artistic Medium", _MEDIA),
                     ("Saturation", SATURATION), ("Detail", DETAIL_SHAPES)):
        if attrs[d] not in table:
            raise ValueError(f"unknown {d} term {attrs[d]!r}; expected one of {sorted(table)}")
    if size < 16:
        raise ValueError(f"size={size}: expected at least 16 pixels")
    rng = random.Random(f"{seed}|{style}|{color}|{medium}|{sat}|{detail}|{size}")
    bg, fg, ink = palette(color, sat)
    if medium == "Pencil Sketch":
        bg = _shade(bg, 0.75)  # paper
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    if style == "Baroque":
        d.rectangle([0, 0, size, size], fill=_shade(bg, -0.75))
    elif style == "Surrealism":  # a sky gradient above a horizon
        for y in range(size):
            t = y / size
            d.line([(0, y), (size, y)], fill=_shade(bg, 0.5 - 1.1 * t) if t < 0.65 else _shade(fg[0], -0.55))
    shapes = _STYLES[style](rng, size, DETAIL_SHAPES[detail])
    for i, shape in enumerate(shapes):
        _MEDIA[medium](d, shape, fg[i % len(fg)], ink, rng)
        if style == "Ukiyo-e":
            _draw(d, shape, None, ink, 2)
    if medium == "Watercolor":
        img = img.filter(ImageFilter.GaussianBlur(size / 40))
    elif medium == "Mosaic":
        d = ImageDraw.Draw(img)
        step = max(4, size // 10)
        for k in range(0, size, step):
            d.line([(k, 0), (k, size)], fill=(128, 128, 128))
            d.line([(0, k), (size, k)], fill=(128, 128, 128))
    img = _detail_texture(img, detail, rng, ink)
    if style == "Pixel Art":  # last, so that the whole picture is on the pixel grid
        g = max(1, size // 8)
        img = img.resize((size // g, size // g), Image.Resampling.BOX).resize((size, size), Image.Resampling.NEAREST)
    return img


def _detail_texture(img: Image.Image, detail: str, rng: random.Random, ink: RGB) -> Image.Image:
    size = img.width
    d = ImageDraw.Draw(img)
    if detail == "Rough":  # coarse blotches of lighter and darker paint
        for _ in range(size // 2):
            x, y, r = rng.randrange(size), rng.randrange(size), rng.randint(2, 5)
            px = img.getpixel((x, y))
            d.rectangle([x, y, x + r, y + r], fill=_shade(px, rng.choice((-0.35, 0.35))))
    elif detail == "Sketchy":  # loose scribbled strokes
        for _ in range(10):
            pts = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(3)]
            d.line(pts, fill=ink, width=1)
    elif detail == "Fine":  # fine diagonal hatching over everything
        for k in range(-size, size, 4):
            d.line([(k, 0), (k + size, size)], fill=_shade(ink, 0.25), width=1)
    elif detail == "Realistic":  # soft light from the top left
        img = img.filter(ImageFilter.SMOOTH_MORE)
        down = Image.linear_gradient("L").resize((size, size))
        light = Image.blend(down, down.transpose(Image.Transpose.ROTATE_90).transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.5)
        img = Image.composite(img, Image.new("RGB", (size, size), (0, 0, 0)), light.point(lambda v: 255 - v // 2))
    elif detail == "Intricate":  # fine dots all over
        for _ in range(size):
            x, y = rng.randrange(size), rng.randrange(size)
            d.point((x, y), fill=_shade(img.getpixel((x, y)), rng.choice((-0.5, 0.5))))
    return img


_check_vocab()
