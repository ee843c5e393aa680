"""End-to-end: the app on the embedded world, driven by headless Chromium through Selenium.

Types a query, starts sampling, watches the x0 previews and prompts stream in while sampling runs, checks
that N_R previews, N_R prompts and a final image with its reward appear, opens a real (tiny) training run
in the Runs tab, and takes a screenshot of each tab. Skipped, with the reason, where gradio, selenium or
Debian's chromium / chromedriver are missing (`make test` installs them).
Set PROMPTLOOP_SCREENSHOTS=DIR to keep the screenshots (docs/app.md's come from there), PROMPTLOOP_APP_RUN=DIR
to open another run directory in the Runs tab.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'promptloop[app]')")
pytest.importorskip("selenium", reason="selenium is not installed (the dev extra)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium / chromedriver on PATH (apt-get install chromium chromium-driver)")

STEPS, N_R = 16, 3
QUERY = "a crimson disc left of a blue box"

# records, from inside the page, every change of the previews / prompts / final image (streaming check)
OBSERVER = """
window.__seen = [];
const count = () => ({
  t: performance.now(),
  previews: document.querySelectorAll('#previews img').length,
  prompts: document.querySelectorAll('#prompts [role=row][aria-rowindex]').length - 1,
  final: document.querySelectorAll('#final img').length,
});
new MutationObserver(() => window.__seen.push(count())).observe(document.body, {subtree: true, childList: true,
                                                                               attributes: true});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory: 2 GRPO steps of tiny random models on world queries, evaluated at every step."""
    if os.environ.get("PROMPTLOOP_APP_RUN"):
        return Path(os.environ["PROMPTLOOP_APP_RUN"])
    from promptloop.train import load_config, train

    out = tmp_path_factory.mktemp("app_runs") / "run"
    train(load_config(None, [
        f"output_dir={out}", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava",
        "pipeline.num_inference_steps=3", "loop.num_refinements=1", "data.train=world:train",
        "data.eval=world:heldout", "eval.every=1", "eval.num_queries=2", "grpo.queries_per_step=2",
        "grpo.num_generations=2", "rewards={alignment: 1.0}", "steps=2", "logging.progress_bar=false",
        "checkpoint.every=0", "checkpoint.keep=1",
    ]))
    return out


@pytest.fixture(scope="module")
def app_url(run_dir: Path) -> Iterator[str]:
    from promptloop.app.layout import build_app, launch
    from promptloop.app.models import ModelStore

    store = ModelStore()
    store.get()  # load the world before the clock of the page starts
    app = build_app(store, run_roots=(str(run_dir.parent),))
    port = _free_port()
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1500",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PROMPTLOOP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page (the window grown to its height for the shot)."""
    height = driver.execute_script(
        "return Math.max(...[...document.querySelectorAll('html, body, gradio-app, .gradio-container, .main, .wrap')]"
        ".map(e => e.scrollHeight))")
    driver.set_window_size(1280, min(int(height) + 40, 4000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1500)
    from PIL import Image

    with Image.open(path) as shot:  # a 256-colour palette keeps the docs' PNGs small
        small = shot.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def _set_number(driver: Any, elem_id: str, value: int) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
    box.clear()
    box.send_keys(str(value))


def test_sample_tab_streams_previews_prompts_then_final_image(app_url: str, browser: Any, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    browser.get(app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    query = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea"))
    query.send_keys(QUERY)
    _set_number(browser, "steps", STEPS)
    _set_number(browser, "refinements", N_R)
    browser.execute_script(OBSERVER)
    browser.find_element(By.CSS_SELECTOR, "#sample-btn").click()

    wait.until(lambda d: "done" in d.find_element(By.ID, "status").text)
    previews = browser.find_elements(By.CSS_SELECTOR, "#previews img")
    rows = browser.find_elements(By.CSS_SELECTOR, "#prompts [role=row][aria-rowindex]")[1:]  # the first: headers
    assert len(previews) == N_R and all(p.get_attribute("naturalWidth") not in (None, "0") for p in previews)
    assert len(rows) == N_R and all("%" in r.text for r in rows)
    assert browser.find_elements(By.CSS_SELECTOR, "#final img")
    assert "reward" in browser.find_element(By.ID, "reward").text
    assert "colour" in browser.find_element(By.ID, "breakdown").text  # the alignment's facts, by kind

    # streamed: the page showed previews one by one, each before the final image existed
    seen = browser.execute_script("return window.__seen")
    before_final = {s["previews"] for s in seen if s["final"] == 0}
    assert set(range(1, N_R + 1)) <= before_final, before_final
    _screenshot(browser, _shots(tmp_path) / "app_sample.png")

    # bad input: a clear message in the page, and the app keeps serving
    _set_number(browser, "steps", 1000)
    browser.find_element(By.CSS_SELECTOR, "#sample-btn").click()
    wait.until(lambda d: "Steps must be between 2 and" in d.find_element(By.ID, "status").text)
    print(f"sample tab: {time.perf_counter() - t0:.1f} s")


def test_compare_switch_shows_three_rows_side_by_side(app_url: str, browser: Any, tmp_path: Path) -> None:
    browser.get(app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea")).send_keys(QUERY)
    _set_number(browser, "steps", 8)
    _set_number(browser, "refinements", 2)
    browser.find_element(By.CSS_SELECTOR, "#compare-switch input").click()
    browser.find_element(By.CSS_SELECTOR, "#sample-btn").click()
    wait.until(lambda d: "done" in d.find_element(By.ID, "status").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare img")) == 3
    captions = browser.find_element(By.ID, "compare").text
    for label in ("base", "feed-forward", "PromptLoop"):
        assert label in captions
    _screenshot(browser, _shots(tmp_path) / "app_compare.png")


def test_runs_tab_shows_curves_config_and_bad_path(app_url: str, browser: Any, run_dir: Path, tmp_path: Path) -> None:
    browser.get(app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "button[role=tab]"))
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Runs").click()
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#run-path input"))
    box.send_keys("/no/such/run")
    browser.find_element(By.ID, "open-run").click()
    wait.until(lambda d: "No such directory" in d.find_element(By.ID, "run-status").text)

    box.clear()
    box.send_keys(str(run_dir))
    browser.find_element(By.ID, "open-run").click()
    wait.until(lambda d: "training steps" in d.find_element(By.ID, "run-status").text)
    assert "2 training steps" in browser.find_element(By.ID, "run-status").text or os.environ.get("PROMPTLOOP_APP_RUN")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#curves img"))
    assert browser.find_elements(By.CSS_SELECTOR, "#grids img")  # reward_curve.png at least
    wait.until(lambda d: "grpo" in d.find_element(By.ID, "run-config").text)
    _screenshot(browser, _shots(tmp_path) / "app_runs.png")


@pytest.fixture(scope="module")
def v3_app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on a tiny world v3 backbone given by folder, with the default policy `world`, the world standing for
    one that ships no policy (its `DEFAULT_POLICY` pointed at a missing folder for the module)."""
    from promptloop.app.layout import build_app, launch
    from promptloop.app.models import ModelSpec, ModelStore
    from promptloop.world import get_world
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    root = tmp_path_factory.mktemp("v3_browser")
    patch = pytest.MonkeyPatch()
    patch.setattr(get_world("v3"), "DEFAULT_POLICY", root / "not_shipped")
    backbone = train_backbone(BackboneTrainConfig(
        world="v3", work_dir=str(root / "work"), out_dir=str(root / "backbone"), vae_steps=2, vae_batch=2,
        scale_renders=8, pool_size=8, unet_steps=2, batch=2, warmup=1, decoder_steps=1, checkpoint_every=1))
    store = ModelStore(ModelSpec(pipeline=f"world:{backbone}", device="cpu"))
    store.get()
    app = build_app(store, run_roots=(str(root),))
    port = _free_port()
    launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    patch.undo()


def test_world_v3_shows_the_backdrop_contrasts_and_reward_parts(v3_app_url: str, browser: Any, tmp_path: Path) -> None:
    browser.get(v3_app_url)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    query = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea"))
    wait.until(lambda d: "ships no refinement policy yet" in d.find_element(By.ID, "status").text)  # before sampling
    query.send_keys("a circle left of a red square")
    _set_number(browser, "steps", 4)
    _set_number(browser, "refinements", 2)
    browser.find_element(By.CSS_SELECTOR, "#sample-btn").click()  # feedback, without a v3 policy: a clear message
    wait.until(lambda d: "ships no refinement policy yet" in d.find_element(By.ID, "status").text)

    # any policy by name: the loop runs, each preview with the backdrop it shows, the readings next to the facts
    browser.find_element(By.CSS_SELECTOR, "#models button, #models .label-wrap").click()
    policy = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#m-policy textarea, #m-policy input"))
    policy.clear()
    policy.send_keys("tiny:llava")
    browser.find_element(By.ID, "m-load").click()
    wait.until(lambda d: "Loaded" in d.find_element(By.ID, "model-status").text)
    browser.find_element(By.CSS_SELECTOR, "#sample-btn").click()
    wait.until(lambda d: "done" in d.find_element(By.ID, "status").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#previews img")) == 2
    assert browser.find_element(By.ID, "prompts").text.count("backdrop #") == 2  # the preview column
    facts = wait.until(lambda d: d.find_element(By.ID, "world-facts"))
    for reading in ("backdrop", "most legible colour on it", "alignment", "legibility", "backdrops_legible"):
        assert reading in facts.text
    assert "shape" in browser.find_element(By.ID, "breakdown").text  # the query's facts, as on the other worlds
    _screenshot(browser, _shots(tmp_path) / "app_world_v3.png")
