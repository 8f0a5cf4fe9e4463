"""A door's capture zone (region of interest): the one place where faces are filtered by position.

The door worker (``edged.door.worker``) asks ``CaptureZone.contains`` of each tracked face, per door:
a face whose box centre is outside a door's zone is not observed at that door (no session there, no
evidence, nothing embedded for it). The tracker follows every face in the frame, so one camera can
serve several doors, each with its own zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from edged.errors import BadArgument
from edged.strict import Strict
from edged.types import Box

__all__ = ["CaptureZone", "CaptureZoneSettings"]


@dataclass(frozen=True, slots=True)
class CaptureZone:
    """The region of interest of a camera: a box in frame pixels or, when ``normalized``, in
    fractions of the frame's width and height (0..1). A face is in the zone when its box centre is
    (edges included)."""

    box: Box
    normalized: bool = False

    def __post_init__(self) -> None:
        b = self.box
        if not (b.x2 > b.x1 and b.y2 > b.y1):
            raise BadArgument(f"capture zone {b.as_list()} is empty: it needs x1 < x2 and y1 < y2")
        if self.normalized and not (b.x1 >= 0 and b.y1 >= 0 and b.x2 <= 1 and b.y2 <= 1):
            raise BadArgument(f"normalised capture zone {b.as_list()} must lie within 0..1")

    def in_pixels(self, frame_size: tuple[int, int] | None) -> Box:
        """The zone in pixels of a frame of ``frame_size`` = (width, height)."""
        if not self.normalized:
            return self.box
        if frame_size is None:
            raise BadArgument("a normalised capture zone needs the frame size (width, height)")
        w, h = frame_size
        b = self.box
        return Box(b.x1 * w, b.y1 * h, b.x2 * w, b.y2 * h)

    def contains(self, box: Box, frame_size: tuple[int, int] | None = None) -> bool:
        zone = self.in_pixels(frame_size)
        x, y = box.center
        return zone.x1 <= x <= zone.x2 and zone.y1 <= y <= zone.y2


class CaptureZoneSettings(Strict):
    """The capture zone (region of interest): faces whose box centre is outside are ignored."""

    box: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2: the zone's top-left and bottom-right corners"
    )
    units: Literal["fraction", "pixels"] = Field(
        "fraction", description="fraction: of the frame's width/height (0..1, any resolution); pixels"
    )

    @model_validator(mode="after")
    def _valid(self) -> CaptureZoneSettings:
        try:
            self.zone()
        except BadArgument as exc:
            raise ValueError(exc.message) from None
        return self

    def zone(self) -> CaptureZone:
        return CaptureZone(Box(*self.box), normalized=self.units == "fraction")
