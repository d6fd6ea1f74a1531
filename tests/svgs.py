"""Real SVGs for tests, copied verbatim (tests must not read ../shared at CI time).

- mdi "alpha-m", "ab-testing" and "forward", Material Design Icons 7.4.47 (@mdi/svg),
  Pictogrammers, Apache-2.0.
- bootstrap-icons 1.13.2 "caret-up-fill", (c) The Bootstrap Authors, MIT.
"""

from __future__ import annotations

MDI_ALPHA_M = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-alpha-m" viewBox="0 0 24 24"><path '
    b'd="M9,7A2,2 0 0,0 7,9V17H9V9H11V16H13V9H15V17H17V9A2,2 0 0,0 15,7H9Z" /></svg>'
)

MDI_AB_TESTING = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-ab-testing" viewBox="0 0 24 24"><path '
    b'd="M4 2A2 2 0 0 0 2 4V12H4V8H6V12H8V4A2 2 0 0 0 6 2H4M4 4H6V6H4M22 15.5V14A2 2 0 0 0 '
    b"20 12H16V22H20A2 2 0 0 0 22 20V18.5A1.54 1.54 0 0 0 20.5 17A1.54 1.54 0 0 0 22 15.5M20 "
    b'20H18V18H20V20M20 16H18V14H20M5.79 21.61L4.21 20.39L18.21 2.39L19.79 3.61Z" /></svg>'
)

MDI_FORWARD = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-forward" viewBox="0 0 24 24">'
    b'<path d="M12,8V4L20,12L12,20V16H4V8H12Z" /></svg>'
)

BOOTSTRAP_CARET_UP_FILL = b"""\
<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" fill="currentColor" \
class="bi bi-caret-up-fill" viewBox="0 0 16 16">
  <path d="m7.247 4.86-4.796 5.481c-.566.647-.106 1.659.753 1.659h9.592a1 1 0 0 0 \
.753-1.659l-4.796-5.48a1 1 0 0 0-1.506 0z"/>
</svg>"""
