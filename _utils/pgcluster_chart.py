"""A line chart as a PNG file, with the standard library only (the master needs no plotting
library): the growth report's sizes over time with their forecast lines.

Each series is ``{"name", "points": [(unix time, value)...], "dashed": bool}``; series get
colours in order (``COLOURS``; the report names which is which). The axes carry the value range
(bytes, in K/M/G/T) and the time range in days relative to now.
"""

from __future__ import annotations

import struct
import zlib

__virtualname__ = "pgcluster_chart"
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
COLOUR_NAMES = ["blue", "orange", "green", "red", "purple", "brown"]
GRID, AXIS, TEXT = (225, 225, 225), (90, 90, 90), (40, 40, 40)
# 3x5 glyphs, one string of 15 bits per character (rows top to bottom).
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "-": "000000111000000",
    "+": "000010111010000", "K": "101110100110101", "M": "101111111101101", "G": "111100101101111",
    "T": "111010010010010", "B": "110101110101110", "d": "001001111101111", "h": "100100111101101",
    "n": "000110101101101",
    "o": "000111101101111", "w": "000101101111111", " ": "000000000000000",
}  # fmt: skip


def __virtual__():
    return __virtualname__


def colour_name(index: int) -> str:
    """The name of the colour series INDEX is drawn in (for the report's legend)."""
    return COLOUR_NAMES[index % len(COLOUR_NAMES)]


def relative(seconds: float) -> str:
    """SECONDS from now as the time axis shows it: hours under two days, else days."""
    return f"{seconds / 3600:+.1f}h" if abs(seconds) < 2 * 86400 else f"{seconds / 86400:+.1f}d"


def human(value: float) -> str:
    """VALUE (bytes) in the chart's units: 512, 1.5K, 20M, 3.2G."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if abs(value) >= size * 1000 / 1024:  # 1000M reads 1.0G
            v = value / size
            return f"{v:.1f}{unit}" if abs(v) < 10 else f"{v:.0f}{unit}"
    return f"{value:.0f}"


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i : i + 3] = bytes(rgb)

    def line(self, x0: int, y0: int, x1: int, y1: int, rgb, width: int = 1, dashed: bool = False) -> None:
        """Bresenham's line; DASHED: 6 pixels on, 4 off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err, step = dx + dy, 0
        while True:
            if not dashed or step % 10 < 6:
                for k in range(width):
                    self.dot(x0, y0 + k, rgb)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy
            step += 1

    def text(self, x: int, y: int, s: str, rgb=TEXT, scale: int = 2) -> None:
        for ch in s:
            bits = FONT.get(ch, FONT[" "])
            for i, bit in enumerate(bits):
                if bit == "1":
                    for a in range(scale):
                        for b in range(scale):
                            self.dot(x + (i % 3) * scale + a, y + (i // 3) * scale + b, rgb)
            x += 4 * scale

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        stride = self.w * 3
        raw = b"".join(b"\x00" + bytes(self.px[y * stride : (y + 1) * stride]) for y in range(self.h))
        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


def line_chart(series: list[dict], now: float, width: int = 800, height: int = 400) -> bytes:
    """The PNG of SERIES (see the module's doc) over their whole time range; NOW marks the present."""
    pts = [p for s in series for p in s["points"]]
    if not pts:
        pts = [(now - 1, 0.0), (now, 0.0)]
    t0, t1 = min(p[0] for p in pts), max(max(p[0] for p in pts), now)
    v1 = max(max(p[1] for p in pts), 1.0) * 1.05
    left, right, top, bottom = 70, width - 20, 20, height - 40
    c = Canvas(width, height)

    def xy(t: float, v: float) -> tuple[int, int]:
        x = left + (t - t0) / max(t1 - t0, 1e-9) * (right - left)
        y = bottom - max(v, 0.0) / v1 * (bottom - top)
        return int(round(x)), int(round(y))

    for k in range(5):  # horizontal grid with values
        y = bottom - k * (bottom - top) // 4
        c.line(left, y, right, y, GRID)
        c.text(4, y - 5, human(v1 * k / 4))
    c.line(left, top, left, bottom, AXIS)
    c.line(left, bottom, right, bottom, AXIS)
    xn, _ = xy(now, 0)
    c.line(xn, top, xn, bottom, AXIS, dashed=True)
    c.text(xn - 12, bottom + 10, "now")
    for t, label in ((t0, relative(t0 - now)), (t1, relative(t1 - now))):
        x, _ = xy(t, 0)
        if abs(x - xn) > 60:
            c.text(min(max(x - 20, 0), width - 60), bottom + 10, label)
    for i, s in enumerate(series):
        rgb = COLOURS[s.get("colour", i) % len(COLOURS)]
        line = [xy(t, v) for t, v in sorted(s["points"])]
        for (xa, ya), (xb, yb) in zip(line, line[1:], strict=False):
            c.line(xa, ya, xb, yb, rgb, width=2, dashed=s.get("dashed", False))
        if len(line) == 1:
            c.line(line[0][0] - 2, line[0][1], line[0][0] + 2, line[0][1], rgb, width=3)
    return c.png()
