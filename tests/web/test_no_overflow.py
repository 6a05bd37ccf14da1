"""No element of any page overflows its box, at 1280 and 1920 px, in light and dark mode.

Every HTML element is checked, not just the page: content wider than its element is an overflow
(a scroll box included: at these widths no column may hide off its right edge), and so is a box
that sticks out of its parent.
Screenshots of each page go to /tmp/shots for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import Site

SHOTS = Path("/tmp/shots")
OVERFLOWS = """() => {
  const bad = [];
  const inPlot = el => el.closest('.js-plotly-plot') !== null;
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '');
  for (const el of document.body.querySelectorAll('*')) {
    if (!(el instanceof HTMLElement) || inPlot(el) || el.offsetParent === null) continue;
    // at desktop widths nothing should need a horizontal scroll bar either: a scroll box whose
    // content is wider hides columns off its right edge
    if (getComputedStyle(el).display !== 'inline' && el.scrollWidth > el.clientWidth + 1) {
      bad.push(name(el) + ' content ' + el.scrollWidth + ' > box ' + el.clientWidth);
    }
    const parent = el.parentElement;
    if (parent && parent !== document.body && !['auto', 'scroll'].includes(
        getComputedStyle(parent).overflowX)) {
      const r = el.getBoundingClientRect(), p = parent.getBoundingClientRect();
      if (r.width > 0 && (r.right > p.right + 1 || r.left < p.left - 1)) {
        bad.push(name(el) + ' sticks out of ' + name(parent));
      }
    }
  }
  return bad;
}"""


def pages(site: Site) -> list[tuple[str, str]]:
    as_of = site.seed.stored_as_of[3].isoformat()
    return [
        ("index", "/"),
        ("ticker", "/tickers/AAPL"),
        ("asof", f"/tickers/AAPL?as_of={as_of}"),
        ("no-forecast", "/tickers/AAPL?as_of=2019-01-05"),
        ("runs", "/runs"),
        ("run", f"/runs/{site.seed.run_ids[0]}"),
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.slow
def test_no_element_overflows_its_box(
    browser, live_server: str, sqlite_site: Site, scheme: str
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    for width in (1280, 1920):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        try:
            for name, path in pages(sqlite_site):
                page.goto(live_server + path)
                page.wait_for_load_state("load")
                page.screenshot(path=str(SHOTS / f"{name}-{scheme}-{width}.png"), full_page=True)
                bad = page.evaluate(OVERFLOWS)
                if bad:
                    found[f"{path} at {width}"] = bad[:5]
                if scheme == "dark":  # the page follows the system's dark mode
                    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                    assert background == "rgb(18, 20, 25)", (path, background)
        finally:
            context.close()
    assert found == {}
