"""``t2i serve``: every endpoint and error through the API, and the page in a real headless
browser (Debian's chromium driven by selenium)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time

import pytest
import torch
from PIL import Image

from t2i import T2IError
from t2i.evaluator import Evaluator
from t2i.io import save_torch
from t2i.serve import MAX_CAPTION, Demo, create_app
from tests.conftest import free_port
from tests.test_cli_errors import error_line, t2i
from tests.test_generate import tiny_generator

CAPTION = "this flower has five pink petals and a yellow center"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    folder = tmp_path_factory.mktemp("serve")
    generator = tiny_generator(folder / "generator.pt", 384)
    evaluator = Evaluator({"petal_colour": ["blue", "pink", "red"]}, emb_dim=384, image_size=32)
    save_torch({"config": evaluator.config, "state_dict": evaluator.state_dict()}, folder / "evaluator.pt")
    (folder / "metrics.json").write_text(json.dumps({"attr/petal_colour/fake": 0.5, "r_precision/fake": 0.25, "n_images": 3}))
    return Demo(generator, evaluator=folder / "evaluator.pt", metrics=folder / "metrics.json", name="tiny")


@pytest.fixture(scope="module")
def client(demo):
    from fastapi.testclient import TestClient

    return TestClient(create_app(demo))


def png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_page_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="caption"' in page.text and "Generate" in page.text
    info = client.get("/api/info").json()
    assert info["model"] == "tiny" and info["text_model"] == "all-MiniLM-L6-v2" and info["scorer"] and info["arch"] == "gan-cls"
    assert info["metrics"] == {"attr/petal_colour/fake": 0.5, "r_precision/fake": 0.25}


def test_generate_images_with_the_scorers_reading(client):
    r = client.post("/api/generate", json={"caption": CAPTION, "n": 3, "seed": 1})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["caption"] == CAPTION and out["cut_at"] is None and len(out["images"]) == 3
    assert all(png(im["src"]).size == (32, 32) for im in out["images"])
    assert all(im["reads"]["petal_colour"] in ("blue", "pink", "red") for im in out["images"])
    again = client.post("/api/generate", json={"caption": CAPTION, "n": 3, "seed": 1}).json()
    other = client.post("/api/generate", json={"caption": CAPTION, "n": 3, "seed": 2}).json()
    assert again["images"] == out["images"] and other["images"] != out["images"]  # the seed is the noise


def test_interpolation_strip(client):
    out = client.post("/api/interpolate", json={"first": CAPTION, "second": "a red flower", "seed": 3}).json()
    assert out["captions"] == [CAPTION, "a red flower"] and len(out["images"]) == 8
    assert len({im["src"] for im in out["images"]}) > 1  # the caption moves, the noise stays


@pytest.mark.parametrize("body, message", [
    ({"caption": "", "n": 2}, "t2i serve: caption 0 is empty"),
    ({"caption": "   ", "n": 2}, "t2i serve: caption 0 is empty"),
    ({"caption": CAPTION, "n": 0}, "number of images must be 1 to 64, got 0"),
    ({"caption": CAPTION, "n": 65}, "number of images must be 1 to 64, got 65"),
    ({"caption": CAPTION, "n": "8"}, "n: Input should be a valid integer"),
    ({"caption": CAPTION, "n": 2.5}, "n: Input should be a valid integer"),
    ({"n": 2}, "caption: Field required"),
    ({"caption": CAPTION, "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_bad_input_is_a_message_not_a_server_error(client, body, message):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 400 and r.json()["error"].startswith(message), r.text


def test_an_over_long_caption_is_cut_and_says_where(client):
    long = " ".join([CAPTION] * 10)  # 529 characters
    out = client.post("/api/generate", json={"caption": long, "n": 1}).json()
    assert out["cut_at"] == len(out["caption"]) <= MAX_CAPTION and long.startswith(out["caption"])
    assert not out["caption"].endswith(" ")


def test_a_missing_checkpoint_fails_before_serving(tmp_path):
    with pytest.raises(T2IError, match="missing generator checkpoint"):
        Demo(tmp_path / "generator.pt")
    line = error_line(t2i(tmp_path, "serve", "--checkpoint", "nowhere/generator.pt", "--port", "1"))
    assert line == "error: missing generator checkpoint nowhere/generator.pt: run the train stage first"
    line = error_line(t2i(tmp_path, "serve", "-S", "dataset=cub", "--port", "1"))  # params.yaml's dataset, overridden
    assert line == "error: missing generator checkpoint data/models/cub/generator.pt: run the train stage first"


# --------------------------------------------------------------------------- a real browser

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def server(demo):
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(demo), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: make test installs chromium and chromium-driver")
        pytest.skip("needs Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_page_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server)
    wait.until(lambda b: "tiny" in b.find_element(By.ID, "model").text)
    box = browser.find_element(By.ID, "caption")
    box.clear()
    box.send_keys("a flower with eight pointed white petals and a red centre")
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("4")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#results img")) == 4)
    images = browser.find_elements(By.CSS_SELECTOR, "#results img")
    assert all(img.get_attribute("naturalWidth") == "32" for img in images)  # decoded, not broken
    assert "scorer sees: petal colour" in browser.find_element(By.ID, "results").text
    assert browser.find_elements(By.CSS_SELECTOR, "#results a[download]")  # each image downloadable
    browser.save_screenshot(str(tmp_path / "page.png"))

    box.clear()
    browser.find_element(By.ID, "generate").click()  # an empty caption: a message on the page
    wait.until(lambda b: "empty" in b.find_element(By.ID, "message").text)
    assert "error" in browser.find_element(By.ID, "message").get_attribute("class")
    assert not browser.find_elements(By.CSS_SELECTOR, "#results img")
