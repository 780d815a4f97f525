"""The review page: its server's API and guards, and the page driven through the keyboard in a
real headless Chromium (Debian's chromium + chromium-driver, through Selenium; `make test`
installs them when missing)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfinstruct.config import GenerateConfig, ReviewConfig
from selfinstruct.errors import RunLockedError
from selfinstruct.generate import run_generate
from selfinstruct.quality import read_review
from selfinstruct.records import Instance, Task, write_jsonl
from selfinstruct.review import ReviewServer

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=12, window=2))
    return run_dir


def request(
    server: ReviewServer,
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
    host: str | None = None,
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.httpd.server_address[1], timeout=10)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Review-Token"] = token
    if host is not None:
        headers["Host"] = host
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, {"html": data.decode()}


def test_api_saves_each_answer_and_guards_the_door(run: Path) -> None:
    with ReviewServer(ReviewConfig(run=run, size=5, browser=False)).start() as server:
        token = server.token
        status, page = request(server, "GET", "/")
        assert status == 200 and token in page["html"]
        assert request(server, "GET", "/api/state")[0] == 403  # no token
        assert request(server, "GET", "/api/state", token="wrong")[0] == 403
        # DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends its own Host.
        assert request(server, "GET", "/", host="evil.example:80")[0] == 403
        status, state = request(server, "GET", "/api/state", token=token)
        assert status == 200 and len(state["tasks"]) == 5 and state["position"] == 0
        first = state["tasks"][0]["id"]
        answer = {"kind": "answer", "task_id": first, "question": "valid_task", "value": "no"}
        status, result = request(server, "POST", "/api/events", answer, token=token)
        assert status == 200 and result["task"]["labels"] == {"valid_task": "no"}
        assert result["stats"]["rows"]["valid_task"] == {
            "yes": 0, "n": 1, "share": 0.0, "low": 0.0, "high": pytest.approx(0.79, abs=0.01)
        }  # fmt: skip
        # Written before the page heard back:
        assert read_review(run / "review.jsonl").answers == {first: {"valid_task": "no"}}
        for bad in (
            {"kind": "answer", "task_id": "not-in-sample", "question": "valid_task", "value": "no"},
            {"kind": "answer", "task_id": first, "question": "is_it_good", "value": "no"},
            {"kind": "edit", "task_id": first, "instance": 99, "input": "", "output": "x"},
            {"kind": "sample", "seed": 1, "size": 1, "task_ids": [first]},
            "not an object",
        ):
            assert request(server, "POST", "/api/events", bad, token=token)[0] == 400, bad
        # One review of a run at a time.
        with pytest.raises(RunLockedError, match="already open for review"):
            ReviewServer(ReviewConfig(run=run, size=5, browser=False))
    lines = (run / "review.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["sample", "answer"]


def _chromium() -> tuple[str, str]:
    pytest.importorskip("selenium")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    return browser, driver


@pytest.fixture
def browser() -> Iterator[object]:
    binary, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_window_size(1200, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def test_review_in_a_real_browser_by_keyboard(run: Path, browser: object) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # A task whose text is an attack must show as text, and run nothing.
    tasks = (run / "tasks.jsonl").read_text().splitlines()
    evil = Task(
        id="evil", instruction=EVIL, instances=[Instance(input="<b>bold?</b>", output="</div>x")]
    )
    write_jsonl(run / "tasks.jsonl", [*[Task.model_validate_json(t) for t in tasks], evil])
    with ReviewServer(ReviewConfig(run=run, size=0, browser=False)).start() as server:
        wait = WebDriverWait(driver, 10)

        def keys(*sequence: str) -> None:
            ActionChains(driver).send_keys(*sequence).perform()

        def settled() -> None:  # every event the page sent has been answered
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1]; queue.then(() => done(true));"
            )

        def text(selector: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, selector).text

        driver.get(server.url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        order = json.loads(
            driver.execute_script("return JSON.stringify(state.tasks.map(t => t.id))")
        )
        assert len(order) == 13
        first, second, third = order[:3]
        assert text("#where") == "Task 1 of 13"

        keys("y", "y", "n")  # task 1: valid, input fine, output wrong -> moves on
        settled()
        assert text("#where") == "Task 2 of 13"
        keys("y", "n", "y")  # task 2
        settled()
        assert text("#where") == "Task 3 of 13"
        keys("e")  # edit task 3's first instance
        wait.until(lambda d: d.find_elements(By.ID, "edit-output"))
        box = driver.find_element(By.ID, "edit-output")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("A corrected output.")
        box.send_keys(Keys.CONTROL, Keys.ENTER)
        settled()
        assert "A corrected output." in text('[data-instance="0"] [data-field="output"]')
        keys("j", "d")  # task 4: dropped
        settled()
        assert "dropped" in driver.find_element(By.ID, "card").get_attribute("class")
        assert text("#count").startswith("3 of 13 reviewed")
        assert text('[data-stat="output_ok"] td').startswith("50% [")

        # The attack, shown as text.
        evil_at = order.index("evil")
        driver.execute_script(f"state.index = {evil_at}; render();")
        assert text("#instruction") == EVIL
        assert text('[data-field="input"]') == "<b>bold?</b>"
        assert driver.execute_script("return window.__pwned") is None
        assert not driver.find_elements(By.CSS_SELECTOR, "#instruction script, #instruction img")

        # A reload keeps everything: the labels, the edit, the drop.
        driver.get(server.url.rstrip("/") + "/#1")
        driver.refresh()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert text("#where") == "Task 1 of 13"
        on = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "button.on")]
        assert on == ["yes (y)", "yes (y)", "no (n)"]
        assert text("#count").startswith("3 of 13 reviewed")
        keys("u")  # the first task not fully answered: task 3 (edited, not answered)
        assert text("#where") == "Task 3 of 13"
        assert "A corrected output." in text('[data-instance="0"] [data-field="output"]')

    state = read_review(run / "review.jsonl")
    assert state.answers[first] == {"valid_task": "yes", "input_ok": "yes", "output_ok": "no"}
    assert state.answers[second] == {"valid_task": "yes", "input_ok": "no", "output_ok": "yes"}
    assert state.edits[(third, 0)][1] == "A corrected output."
    assert state.dropped == {order[3]}

    # Reopened later (a new server, a new browser session): it resumes at the first open task.
    with ReviewServer(ReviewConfig(run=run, size=0, browser=False)).start() as server:
        driver.get(server.url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert text("#where") == "Task 3 of 13"


def test_the_command_serves_until_interrupted(run: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    # Ctrl-C's default action in the child, whatever this process inherited: a job started in
    # the background by a shell without job control ignores SIGINT, and Python keeps it ignored
    # (the review then never stopped, and the test waited out its timeout).
    as_cli = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'selfinstruct'; runpy.run_module('selfinstruct.cli', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", as_cli, "review", str(run), "--size", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DISPLAY": "", "COLUMNS": "300"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        with urllib.request.urlopen(url.group(0), timeout=10) as response:
            assert b"selfinstruct review" in response.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
