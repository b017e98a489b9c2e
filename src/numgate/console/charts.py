"""Charts as SVG, drawn on the server: no JavaScript library, nothing from a CDN, and readable
with scripts off. Each returns the SVG markup (numbers and labels escaped by the template's
``|safe`` being applied only to what these functions build from numbers and fixed labels)."""

from __future__ import annotations

from html import escape

#: colours per outcome (valid results green, failures amber/red, not-a-number grey)
COLOURS = {
    "ok": "#2e7d32",
    "invalid_format": "#9e9e9e",
    "non_mobile": "#6d4c41",
    "upstream_failed": "#c62828",
    "no_information": "#f9a825",
    "internal": "#6a1b9a",
    "valid": "#2e7d32",
    "invalid": "#c62828",
    "not a number": "#9e9e9e",
    "reachable": "#2e7d32",
    "unreachable": "#c62828",
    "unknown": "#9e9e9e",
}
#: for names without a colour of their own (number types), in order
PALETTE = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#558b2f", "#ad1457", "#4e342e", "#37474f", "#9e9e9e"]


def bars(points: list[tuple[str, int]], width: int = 720, height: int = 160) -> str:
    """A bar per point (label, value), labels every 5th bar."""
    top = max((v for _, v in points), default=0) or 1
    n = max(len(points), 1)
    step = width / n
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" '
        f'aria-label="numbers submitted per day, last {n} days">'
    ]
    for i, (label, v) in enumerate(points):
        h = round(height * v / top, 1)
        x = round(i * step + 1, 1)
        out.append(
            f'<rect x="{x}" y="{height - h}" width="{max(step - 2, 1):.1f}" height="{h}" fill="#1565c0">'
            f"<title>{escape(label)}: {v:,}</title></rect>"
        )
        if i == n - 1:
            out.append(
                f'<text x="{x + step - 2:.1f}" y="{height + 15}" font-size="10" text-anchor="end">'
                f"{escape(label)}</text>"
            )
        elif i % 5 == 0 and i < n - 3:
            out.append(f'<text x="{x}" y="{height + 15}" font-size="10">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def mix_bars(counts: dict[str, int], width: int = 720, label: str = "result mix") -> str:
    """One stacked bar of a mix (outcomes, validity, types …) with its legend."""
    total = sum(counts.values())
    if not total:
        return ""
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    colour = {name: COLOURS.get(name, PALETTE[i % len(PALETTE)]) for i, (name, _) in enumerate(ordered)}
    out = [f'<svg class="chart" viewBox="0 0 {width} 56" role="img" aria-label="{escape(label)}">']
    x = 0.0
    for name, n in ordered:
        w = width * n / total
        out.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="28" fill="{colour[name]}">'
            f"<title>{escape(name)}: {n:,} ({100 * n / total:.1f} %)</title></rect>"
        )
        x += w
    lx = 0.0
    for name, n in ordered:  # the legend
        label = f"{name.replace('_', ' ')} {100 * n / total:.1f} %"
        out.append(f'<rect x="{lx:.1f}" y="38" width="10" height="10" fill="{colour[name]}"/>')
        out.append(f'<text x="{lx + 14:.1f}" y="47" font-size="11">{escape(label)}</text>')
        lx += 14 + 6.5 * len(label) + 12
    out.append("</svg>")
    return "".join(out)
