"""The built website, loaded in a real browser with the network cut off.

Not part of ``make test``: the file name does not match ``test_*.py``, so pytest collects it only when it is
named on the command line, after the site is built::

    make book && make test-browser                        # or, as .ci/run does after the strict build:
    .venv/bin/python -m pytest -p no:cacheprovider tests/browser/check_site_browser.py

``HMMBOOK_SITE`` picks another built site (default ``_build/html``; e.g. ``_build/student/html``). Needs
headless Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; ``HMMBOOK_CHROMIUM``
and ``HMMBOOK_CHROMEDRIVER`` override the paths) and ``selenium``; without them the tests FAIL, with a
message saying what to install, rather than skip.

The site is served from a loopback HTTP server; every other host is unresolvable and behind a dead proxy, so a
page that needs the internet (a CDN script, a remote font) logs a console error and fails the test.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("HMMBOOK_SITE", ROOT / "_build" / "html")).resolve()
SEARCH_TERM = "posterior"
PAGE_TIMEOUT = 60


def _pages() -> list[str]:
    if not (SITE / "index.html").is_file():
        return []
    return sorted(str(p.relative_to(SITE)) for p in SITE.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts)


PAGES = _pages()


def _require_site():
    if not PAGES:
        pytest.fail(f"no built website at {SITE}: build it first (`make book`, or set HMMBOOK_SITE)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    _require_site()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `pip install -r requirements.txt` (it pins selenium)")
    binary = os.environ.get("HMMBOOK_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = os.environ.get("HMMBOOK_CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("headless Chromium and chromedriver are needed for the browser test: on Debian/Ubuntu "
                    "`apt-get install -y chromium chromium-driver` (.ci/run does this), or set HMMBOOK_CHROMIUM "
                    f"and HMMBOOK_CHROMEDRIVER (found browser={binary}, driver={driver_path})")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                # offline: no name resolves except loopback, and everything else goes to a dead proxy
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    yield driver
    driver.quit()


# One script per page: wait for MathJax and the images, then report what the assertions need.
_INSPECT = r"""
const done = arguments[arguments.length - 1];
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  const clone = document.querySelector("main") ? document.querySelector("main").cloneNode(true)
                                               : document.body.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container, mjx-assistive-mml").forEach(e => e.remove());
  done({
    mathjax: !!(window.MathJax && MathJax.startup),
    math: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    mathErrors: document.querySelectorAll("mjx-merror").length,
    text: clone.textContent,
    images: imgs.map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0,
                            alt: (i.getAttribute("alt") || "").trim()})),
    path: location.pathname,
    refs: Array.from(document.querySelectorAll("a.reference.internal")).map(a => ({
      href: a.getAttribute("href"), text: a.textContent.trim()})),
  });
})().catch(e => done({error: String(e)}));
"""

_inspected: dict[str, dict] = {}


def _errors(browser) -> list[dict]:
    """Console errors, less the browser's own request for /favicon.ico (the book sets no favicon)."""
    return [e for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and "/favicon.ico" not in e["message"]]


def _inspect(browser, server, page: str) -> dict:
    if page not in _inspected:
        browser.get_log("browser")                      # drop earlier pages' messages
        browser.get(f"{server}/{page}")
        info = browser.execute_async_script(_INSPECT)
        assert "error" not in info, f"{page}: {info.get('error')}"
        info["console"] = _errors(browser)
        _inspected[page] = info
    return _inspected[page]


@pytest.mark.parametrize("page", PAGES or ["<no site>"])
def test_page_loads_offline_without_console_errors(browser, server, page):
    info = _inspect(browser, server, page)
    assert not info["console"], f"{page}: console errors:\n" + "\n".join(e["message"] for e in info["console"])


@pytest.mark.parametrize("page", PAGES or ["<no site>"])
def test_math_is_typeset(browser, server, page):
    info = _inspect(browser, server, page)
    if info["math"]:
        assert info["mathjax"], f"{page}: has math but MathJax did not load"
        assert info["typeset"] >= info["math"], f"{page}: {info['math']} math elements, {info['typeset']} typeset"
        assert info["mathErrors"] == 0, f"{page}: {info['mathErrors']} MathJax errors (red TeX)"
    raw = re.findall(r".{0,30}(?:\\\(|\\\)|\\\[|\\\]|\\begin\{|\$\$).{0,30}", info["text"])
    assert not raw, f"{page}: untypeset TeX in the text: {raw[:5]}"


@pytest.mark.parametrize("page", PAGES or ["<no site>"])
def test_images_load(browser, server, page):
    info = _inspect(browser, server, page)
    broken = [i["src"] for i in info["images"] if not i["ok"]]
    assert not broken, f"{page}: images that did not load: {broken}"


@pytest.mark.parametrize("page", PAGES or ["<no site>"])
def test_images_have_alt_text(browser, server, page):
    info = _inspect(browser, server, page)
    # docutils' default alt is the image's path: that is no description either
    missing = [i["src"] for i in info["images"]
               if not i["alt"] or i["alt"] == i["src"] or re.search(r"\.(png|jpe?g|svg|gif)$", i["alt"], re.I)]
    assert not missing, f"{page}: images without alt text (or with their file name as alt): {missing}"


@pytest.mark.parametrize("page", PAGES or ["<no site>"])
def test_cross_references_resolve(browser, server, page):
    """Every internal link (theorems' prf:ref included) names an existing page and anchor."""
    info = _inspect(browser, server, page)
    assert "prf:ref" not in info["text"], f"{page}: a raw {{prf:ref}} role in the text"
    assert "??" not in " ".join(r["text"] for r in info["refs"])
    here = info["path"].lstrip("/") or "index.html"        # after any redirect (index.html -> book/intro.html)
    base = (SITE / here).parent
    for ref in info["refs"]:
        parts = urlsplit(ref["href"])
        target = (base / unquote(parts.path)).resolve() if parts.path else SITE / here
        if target.is_dir():
            target = target / "index.html"
        assert target.is_file(), f"{page}: link {ref['href']!r} ({ref['text']!r}) points to a missing page"
        if parts.fragment and target.suffix == ".html":
            html = target.read_text(encoding="utf-8")
            assert f'id="{unquote(parts.fragment)}"' in html, \
                f"{page}: link {ref['href']!r} ({ref['text']!r}) points to a missing anchor"
        assert ref["text"], f"{page}: an internal link with no text, to {ref['href']!r}"


def test_theorem_references_exist():
    """The chapters cite theorems with prf:ref; the built pages must carry those links."""
    _require_site()
    chapters = sorted(SITE.glob("book/0*.html"))
    assert chapters, "no chapter pages"
    proofs = sum(len(re.findall(r'class="reference internal"[^>]*href="[^"]*#(?:thm|lem|prop|cor|def)-', p.read_text()))
                 for p in chapters)
    assert proofs > 0, "no links to theorems, lemmas or propositions in the chapters"


def test_search_finds_a_chapter(browser, server):
    from selenium.webdriver.support.ui import WebDriverWait

    _require_site()
    browser.get(f"{server}/search.html?q={SEARCH_TERM}")
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda d: d.execute_script("return document.querySelectorAll('#search-results li a').length") > 0)
    hrefs = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results li a')).map(a => a.getAttribute('href'))")
    assert any(re.search(r"book/0\d_[a-z_]+\.html", h) for h in hrefs), f"no chapter among the results: {hrefs}"
    errors = _errors(browser)
    assert not errors, json.dumps(errors, indent=1)
