"""The problem page in headless Chromium (Debian's chromium + chromedriver; nothing downloaded):
type a problem, press Generate, see the solution the API gives for it; keep a screenshot."""

import os
import shutil
from pathlib import Path

import httpx
import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers or browsers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def test_type_a_problem_press_generate_see_a_solution(browser, server, tmp_path):  # no browser: skip before serving
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    question = "Given two integers a and b on one line, print their sum."
    starter = "def add(a, b):\n"
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "gpt-neo" in d.find_element(By.ID, "model").text)  # /info was read
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "starter").send_keys(starter)
    Select(browser.find_element(By.ID, "format")).select_by_value("call_based")
    tokens = browser.find_element(By.ID, "max_new_tokens")
    tokens.clear()
    tokens.send_keys("16")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "solution(s) in" in d.find_element(By.ID, "status").text
               or d.find_element(By.ID, "status").get_attribute("class") == "error")
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("class") != "error", status.text
    shown = [e.get_property("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "#solutions pre")]
    prompt = browser.find_element(By.ID, "prompt").get_property("textContent")

    screenshot = tmp_path / "serve-page.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("CCRUN_TEST_ARTIFACTS"):
        keep = Path(os.environ["CCRUN_TEST_ARTIFACTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, keep / screenshot.name)
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # the page shows what the API answers for the same problem (greedy: the same text)
    api = httpx.post(server.url + "/v1/solve", timeout=120, json={
        "question": question, "starter_code": starter, "format": "call_based", "max_new_tokens": 16,
        "temperature": 0.0, "top_p": 0.95, "n": 1}).json()
    assert shown == api["solutions"] and shown[0]
    assert prompt == api["prompt"] and "Use Call-Based format" in prompt and question in prompt
