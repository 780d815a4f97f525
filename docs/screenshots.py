"""The README's screenshots, taken in headless Chromium (Debian's chromium + chromium-driver).

Usage: .venv/bin/python docs/screenshots.py RUN

Writes docs/images/report.png (the top of RUN's report), docs/images/review.png (the review
page on the first task of its sample) and docs/images/quality.png (the report's Table 2
section). Build the report first (`selfinstruct report RUN`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from selfinstruct.config import ReviewConfig
from selfinstruct.review import ReviewServer

IMAGES = Path(__file__).resolve().parent / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.set_window_size(1100, 900)
        report = (args.run / "report" / "report.html").resolve()
        driver.get(report.as_uri())
        driver.save_screenshot(str(IMAGES / "report.png"))
        quality = driver.find_element(By.ID, "quality")
        # An element is captured only as far as it is in view: bring it to the top first.
        driver.execute_script("arguments[0].scrollIntoView(true);", quality)
        quality.screenshot(str(IMAGES / "quality.png"))
        with ReviewServer(ReviewConfig(run=args.run, browser=False)).start() as server:
            driver.get(server.url + "#1")
            WebDriverWait(driver, 10).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
            )
            driver.save_screenshot(str(IMAGES / "review.png"))
    finally:
        driver.quit()
    print(f"screenshots -> {IMAGES}")


if __name__ == "__main__":
    main()
