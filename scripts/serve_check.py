"""Time ``t2i serve`` on a trained model and take the README's screenshot of its page.

    python scripts/serve_check.py [--data data] [--dataset synthetic-flowers] [--shot docs/serve.png]

Starts the server as ``t2i serve`` does, times 20 requests for 8 images after one warm-up
(median and slowest, client included), then drives headless chromium (Debian's chromium and
chromium-driver) to type a caption, generate, interpolate and save a screenshot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--dataset", default="synthetic-flowers")
    ap.add_argument("--shot", type=Path, default=Path("docs/serve.png"))
    ap.add_argument("--port", type=int, default=8599)
    a = ap.parse_args()

    import uvicorn

    from t2i.paths import Artifacts
    from t2i.serve import Demo, create_app

    t0 = time.perf_counter()
    at = Artifacts(a.data, a.dataset)
    demo = Demo(at.generator, evaluator=at.evaluator, metrics=at.metrics, name=a.dataset)
    print(f"start-up (generator, text model, evaluator): {time.perf_counter() - t0:.1f} s")
    server = uvicorn.Server(uvicorn.Config(create_app(demo), host="127.0.0.1", port=a.port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{a.port}/"
    body = {"caption": "this flower has five pink petals and a yellow center", "n": 8}
    requests.post(url + "api/generate", json=body).raise_for_status()  # warm-up
    times = []
    for seed in range(20):
        t = time.perf_counter()
        requests.post(url + "api/generate", json={**body, "seed": seed}).raise_for_status()
        times.append(time.perf_counter() - t)
    print(f"8 images per request: median {1000 * statistics.median(times):.0f} ms, slowest {1000 * max(times):.0f} ms "
          f"(20 requests)")

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1150"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        wait.until(lambda d: "metrics" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results img")) == 8)
        driver.find_element(By.ID, "interpolate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip img")) == 8)
        a.shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(a.shot))
        print(f"screenshot -> {a.shot}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
