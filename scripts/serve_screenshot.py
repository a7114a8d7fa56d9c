#!/usr/bin/env python3
"""A screenshot of the page of a running ``python -m imcap.serve`` with one image captioned (docs/serve-page.png).

    .venv/bin/python -m imcap.serve --models runs/flickr8k-full/model &
    .venv/bin/python scripts/serve_screenshot.py --url http://127.0.0.1:8080 \
        --image ../shared/data/flickr8k/images/3385593926_d3e9c21170.jpg --output docs/serve-page.png

Uploads ``--image`` on the page in Debian's chromium (driven by Playwright; never ``playwright install``), waits for
the caption and the attention figure, and saves the whole page as PNG.
"""
import argparse
import sys

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="The server.")
    parser.add_argument("--image", required=True, help="Image file to upload.")
    parser.add_argument("--output", default="docs/serve-page.png", help="PNG to write.")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="The browser.")
    parser.add_argument("--width", type=int, default=1400, help="Viewport width, pixels.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for the caption.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    url = args.url.rstrip("/")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url + "/", wait_until="networkidle", timeout=args.timeout * 1000)
            page.locator("#image input[type=file]").set_input_files(args.image)
            page.wait_for_function("() => { const t = document.querySelector('#caption textarea');"
                                   " return t && t.value.length > 0; }", timeout=args.timeout * 1000)
            page.locator("#attention img").wait_for(state="visible", timeout=args.timeout * 1000)
            page.wait_for_timeout(1000)  # let the figure and the table settle
            page.screenshot(path=args.output, full_page=True)
            caption = page.locator("#caption textarea").input_value()
        finally:
            browser.close()
    sys.stdout.write("%s: %s\n" % (args.output, caption))


if __name__ == "__main__":
    main()
