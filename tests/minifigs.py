"""SYNTHETIC minifigure renders for the lego-faces tests: the demo's own drawing (``gandata.demo.draw_minifig``), not
real BrickLink images. ``draw_minifig`` returns the image and the head's true box (x, y, w, h)."""

from gandata.demo import draw_minifig  # noqa: F401
