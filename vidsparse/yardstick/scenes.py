"""Procedural videos of moving shapes, each described by a prompt from a small grammar.

A scene is one or two shapes over a textured background. Each shape moves (left, right, up, down), bounces, spins,
grows or shrinks; the background pans when the camera does. The second shape is drawn over the first, so they occlude
each other when they meet. Every scene has one prompt, for example:

    "a red circle moving right and a yellow square spinning over a navy striped background , camera panning up"

Grammar (`Scene.prompt` writes it, `parse_prompt` reads it back):

    prompt  := shape_clause [ "and" shape_clause ] "over a" BG_COLOUR TEXTURE "background" [ ", camera panning" DIR ]
    shape_clause := "a" COLOUR SHAPE MOTION

Geometry is in normalised units (x right and y down, both in [0, 1], a time t in [0, 1] from the first to the last frame),
so one scene renders at any resolution and frame count. "camera panning left" moves the view left, so the background
slides right across the frame.

`render` draws a batch of scenes at once as torch tensors (signed distance functions on a pixel grid, anti-aliased
over one pixel), on the CPU or the GPU: the training script renders its batches in DataLoader workers on the CPU
(`vidsparse.yardstick.train`), so it needs no stored dataset. `sample_scenes` draws random scenes from a `numpy.random.Generator`, leaving out the held-out
combinations of colour, shape and motion (`HELD_OUT`) that test generalisation.

Example:
    >>> import numpy as np
    >>> scenes = sample_scenes(4, np.random.default_rng(0))
    >>> video = render(scenes, frames=9, height=64, width=64)  # [4, 3, 9, 64, 64] in [-1, 1]
    >>> [s.prompt for s in scenes]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

__all__ = [
    "BG_COLOURS", "CAMERA", "COLOURS", "HELD_OUT", "MOTIONS", "SHAPES", "TEXTURES", "VOCABULARY", "Scene", "Shape",
    "parse_prompt", "render", "sample_scenes",
]

# RGB in [0, 255]. Shape colours are saturated; backgrounds are dark, so no background is mistaken for a shape.
COLOURS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 100, 245), "yellow": (240, 220, 40),
    "white": (245, 245, 245), "purple": (165, 60, 225), "orange": (250, 140, 30), "cyan": (40, 220, 230),
}
BG_COLOURS = {"black": (18, 18, 18), "gray": (95, 95, 95), "navy": (20, 30, 85), "brown": (85, 55, 30), "olive": (75, 80, 30)}
SHAPES = ("circle", "square", "triangle", "ring")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "bouncing", "spinning", "growing", "shrinking")
TEXTURES = ("plain", "striped", "checkered", "dotted")
CAMERA = ("still", "left", "right", "up", "down")
# Unit directions (x right, y down) of the linear motions and of a camera pan's background shift.
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

# (colour, shape, motion) never drawn by `sample_scenes` for training: every word of them is seen, never together.
HELD_OUT = frozenset({
    ("red", "square", "moving right"), ("green", "triangle", "moving left"), ("blue", "circle", "moving up"),
    ("yellow", "ring", "moving down"), ("white", "triangle", "moving right"), ("orange", "circle", "moving left"),
    ("purple", "square", "moving down"), ("cyan", "circle", "moving right"),
})

VOCABULARY = sorted(
    {"a", "and", "over", "background", "camera", "panning", ",", *COLOURS, *BG_COLOURS, *SHAPES, *TEXTURES,
     *(word for motion in MOTIONS for word in motion.split()), *DIRECTIONS}
)


@dataclass(frozen=True)
class Shape:
    """One shape. Positions and sizes are in normalised units; `start` is its centre at t = 0."""

    colour: str
    kind: str
    motion: str
    start: tuple[float, float]
    radius: float
    speed: float = 0.0  # distance per clip (linear motions), bounces per clip (bouncing), turns per clip (spinning)
    angle: float = 0.0  # rotation at t = 0, radians
    rgb: tuple[float, float, float] | None = None  # the colour actually drawn (jittered); None: COLOURS[colour]

    def clause(self) -> str:
        return f"a {self.colour} {self.kind} {self.motion}"


@dataclass(frozen=True)
class Scene:
    """Shapes (drawn in order, later over earlier) over a background that pans with the camera."""

    shapes: tuple[Shape, ...]
    bg_colour: str
    texture: str
    camera: str = "still"
    period: float = 0.18  # texture period
    orientation: float = 0.0  # stripe angle, radians
    pan: float = 0.3  # how far the background slides over the clip
    tones: tuple[tuple[float, float, float], tuple[float, float, float]] | None = field(default=None, repr=False)

    @property
    def prompt(self) -> str:
        text = " and ".join(shape.clause() for shape in self.shapes)
        text += f" over a {self.bg_colour} {self.texture} background"
        if self.camera != "still":
            text += f" , camera panning {self.camera}"
        return text


def parse_prompt(prompt: str) -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) of each shape clause of a prompt in the grammar, in order.

    >>> parse_prompt("a red circle moving right over a gray plain background")
    [('red', 'circle', 'moving right')]
    """
    words = prompt.replace(",", " , ").split()
    found, i = [], 0
    while i + 2 < len(words):
        if words[i] == "a" and words[i + 1] in COLOURS and words[i + 2] in SHAPES:
            rest = " ".join(words[i + 3 : i + 5])
            motion = next((m for m in MOTIONS if rest.startswith(m)), None)
            if motion is None:
                raise ValueError(f"no motion after {' '.join(words[i:i + 3])!r} in {prompt!r}; one of {MOTIONS}")
            found.append((words[i + 1], words[i + 2], motion))
            i += 3 + len(motion.split())
        else:
            i += 1
    return found


def _random_shape(rng: np.random.Generator, colour: str, kind: str, motion: str) -> Shape:
    radius = float(rng.uniform(0.11, 0.17))
    speed, start = 0.0, rng.uniform(0.25, 0.75, size=2)
    if motion.startswith("moving"):
        dx, dy = DIRECTIONS[motion.split()[1]]
        speed = float(rng.uniform(0.35, 0.5))
        # Start far enough back that the shape stays in the frame for the whole clip.
        lo, hi = radius, 1 - radius
        along = rng.uniform(lo, hi - speed)
        across = rng.uniform(0.25, 0.75)
        x = along if dx > 0 else 1 - along if dx < 0 else across
        y = along if dy > 0 else 1 - along if dy < 0 else across
        start = np.array([x, y])
    elif motion == "bouncing":
        speed = float(rng.choice([1.0, 1.5, 2.0]))
        start = np.array([rng.uniform(0.25, 0.75), 1 - radius - 0.02])
    elif motion == "spinning":
        speed = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3))
    rgb = tuple(float(c + d) for c, d in zip(COLOURS[colour], rng.uniform(-12, 12, size=3)))
    return Shape(colour, kind, motion, (float(start[0]), float(start[1])), radius, speed,
                 float(rng.uniform(0, 2 * math.pi)) if motion == "spinning" else 0.0, rgb)


def sample_scenes(n: int, rng: np.random.Generator, held_out: frozenset = HELD_OUT) -> list[Scene]:
    """`n` random scenes whose (colour, shape, motion) triples avoid `held_out` (pass frozenset() to allow all)."""
    scenes = []
    for _ in range(n):
        n_shapes = 1 if rng.random() < 0.6 else 2
        colours = rng.choice(list(COLOURS), size=n_shapes, replace=False)
        shapes = []
        for colour in colours:
            while True:
                kind = str(rng.choice(SHAPES))
                motion = str(rng.choice(MOTIONS))
                # A spinning circle or ring looks still: the prompt would describe what cannot be seen.
                if motion == "spinning" and kind in ("circle", "ring"):
                    continue
                if (str(colour), kind, motion) not in held_out:
                    break
            shapes.append(_random_shape(rng, str(colour), kind, motion))
        bg = str(rng.choice(list(BG_COLOURS)))
        base = np.array(BG_COLOURS[bg], dtype=float) + rng.uniform(-8, 8, size=3)
        light = np.clip(base * 1.7 + 35, 0, 255)
        scenes.append(Scene(
            shapes=tuple(shapes), bg_colour=bg, texture=str(rng.choice(TEXTURES)),
            camera=str(rng.choice(CAMERA, p=[0.4, 0.15, 0.15, 0.15, 0.15])),
            period=float(rng.uniform(0.12, 0.25)), orientation=float(rng.choice([0.0, math.pi / 2, math.pi / 4])),
            pan=float(rng.uniform(0.2, 0.35)), tones=(tuple(base), tuple(light)),
        ))
    return scenes


def _shape_alpha(shape: Shape, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, pixel: float) -> torch.Tensor:
    """Coverage in [0, 1] of one shape: x, y [1, H, W] and t [F, 1, 1] in normalised units -> [F, H, W]."""
    cx, cy = torch.full_like(t, shape.start[0]), torch.full_like(t, shape.start[1])
    radius, angle = torch.full_like(t, shape.radius), torch.full_like(t, shape.angle)
    if shape.motion.startswith("moving"):
        dx, dy = DIRECTIONS[shape.motion.split()[1]]
        cx, cy = cx + dx * shape.speed * t, cy + dy * shape.speed * t
    elif shape.motion == "bouncing":
        cy = cy - 0.45 * torch.abs(torch.sin(math.pi * shape.speed * t))
    elif shape.motion == "spinning":
        angle = angle + 2 * math.pi * shape.speed * t
    elif shape.motion == "growing":
        radius = radius * (0.55 + 0.75 * t)
    elif shape.motion == "shrinking":
        radius = radius * (1.3 - 0.75 * t)
    # Rotate the pixel offsets into the shape's frame.
    px, py = x - cx, y - cy
    cos, sin = torch.cos(angle), torch.sin(angle)
    u, v = cos * px + sin * py, -sin * px + cos * py
    if shape.kind == "circle":
        sdf = torch.sqrt(u * u + v * v) - radius
    elif shape.kind == "square":
        sdf = torch.maximum(u.abs(), v.abs()) - 0.85 * radius
    elif shape.kind == "triangle":
        # Equilateral, pointing up (y is down): the largest of three half-plane distances; inradius 0.55 r.
        sdf = torch.stack(
            [-v, v * 0.5 + u * math.sqrt(3) / 2, v * 0.5 - u * math.sqrt(3) / 2]
        ).amax(0) - 0.55 * radius
    elif shape.kind == "ring":
        sdf = (torch.sqrt(u * u + v * v) - 0.8 * radius).abs() - 0.3 * radius
    else:
        raise ValueError(f"unknown shape {shape.kind!r}; one of {SHAPES}")
    return (0.5 - sdf / pixel).clamp(0, 1)


def _background(scene: Scene, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mix in [0, 1] between the two background tones: [F, H, W]."""
    if scene.camera != "still":
        dx, dy = DIRECTIONS[scene.camera]
        # The camera moves one way, so the world slides the other way across the frame.
        x, y = x + dx * scene.pan * t, y + dy * scene.pan * t
    f = 2 * math.pi / scene.period
    if scene.texture == "plain":
        return torch.zeros_like(x * t)
    if scene.texture == "striped":
        along = x * math.cos(scene.orientation) + y * math.sin(scene.orientation)
        return (torch.sin(f * along) * 3).clamp(-1, 1) * 0.5 + 0.5
    if scene.texture == "checkered":
        return (torch.sin(f * x) * torch.sin(f * y) * 6).clamp(-1, 1) * 0.5 + 0.5
    if scene.texture == "dotted":
        gx = torch.remainder(x, scene.period) - scene.period / 2
        gy = torch.remainder(y, scene.period) - scene.period / 2
        return ((0.25 * scene.period - torch.sqrt(gx * gx + gy * gy)) * 200).clamp(0, 1)
    raise ValueError(f"unknown texture {scene.texture!r}; one of {TEXTURES}")


def render(
    scenes: list[Scene], frames: int = 9, height: int = 64, width: int = 64, device: torch.device | str = "cpu",
    coverage: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Draw scenes as videos: [B, 3, F, H, W] float32 in [-1, 1] (the pixel range diffusers' VAEs take).
    `coverage`: also return where the shapes are, [B, F, H, W] float32 in [0, 1] (the largest of their coverages),
    which training can weight its loss by (`train.py --shape-weight`)."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (t runs from the first frame to the last), got {frames}")
    device = torch.device(device)
    t = torch.linspace(0, 1, frames, device=device).view(frames, 1, 1)
    # Pixel centres in normalised units; y spans the same units as x scaled by the aspect ratio.
    x = ((torch.arange(width, device=device) + 0.5) / width).view(1, 1, width)
    y = ((torch.arange(height, device=device) + 0.5) / height).view(1, height, 1)
    pixel = 1.0 / min(height, width)
    videos, covers = [], []
    for scene in scenes:
        cover = torch.zeros(frames, height, width, device=device)
        dark, light = scene.tones or (BG_COLOURS[scene.bg_colour], BG_COLOURS[scene.bg_colour])
        mix = _background(scene, x, y, t).unsqueeze(0)  # [1, F, H, W]
        dark_t = torch.tensor(dark, device=device).view(3, 1, 1, 1)
        light_t = torch.tensor(light, device=device).view(3, 1, 1, 1)
        video = dark_t + (light_t - dark_t) * mix  # [3, F, H, W]
        for shape in scene.shapes:
            alpha = _shape_alpha(shape, x, y, t, pixel).unsqueeze(0)
            colour = torch.tensor(shape.rgb or COLOURS[shape.colour], device=device).view(3, 1, 1, 1)
            video = video + (colour - video) * alpha
            cover = torch.maximum(cover, alpha[0])
        videos.append(video)
        covers.append(cover)
    videos = (torch.stack(videos) / 127.5 - 1).clamp(-1, 1)
    return (videos, torch.stack(covers)) if coverage else videos


def scene_for_prompt(prompt: str, rng: np.random.Generator) -> Scene:
    """A random scene that matches a prompt of the grammar (used to show what a held-out prompt should look like)."""
    clauses = parse_prompt(prompt)
    words = prompt.replace(",", " , ").split()
    bg = next(w for w in words if w in BG_COLOURS)
    texture = next(w for w in words if w in TEXTURES)
    camera = words[words.index("panning") + 1] if "panning" in words else "still"
    base = sample_scenes(1, rng, held_out=frozenset())[0]
    shapes = tuple(_random_shape(rng, c, k, m) for c, k, m in clauses)
    return replace(base, shapes=shapes, bg_colour=bg, texture=texture, camera=camera,
                   tones=(BG_COLOURS[bg], tuple(np.clip(np.array(BG_COLOURS[bg]) * 1.7 + 35, 0, 255))))
