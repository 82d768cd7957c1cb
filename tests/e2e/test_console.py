"""The web console in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium):
what an operator sees and does. Screenshots land in .asrpro/test-artefacts/ (not in git)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from bench.conversation import conversation
from tests.conftest import REPO
from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate, words

pytestmark = pytest.mark.e2e
ARTEFACTS = REPO / ".asrpro" / "test-artefacts"
MODEL = "whisper-tiny.en"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("console"))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def microphone(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the browser's fake microphone hears, over and over (Chromium loops it): jfk.flac as 16-bit PCM WAV,
    with a second of silence after the speech (the server's VAD ends the last utterance on it)."""
    out = tmp_path_factory.mktemp("microphone") / "jfk.wav"
    subprocess.run(["sox", str(shared_data / "jfk.flac"), "-b", "16", "-c", "1", str(out), "pad", "0", "1"], check=True)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, microphone: Path) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        message = "the console tests need Debian's chromium and chromium-driver (the test command installs them)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        # A microphone without asking, fed from a file (only a page that calls getUserMedia hears it).
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.downloads = downloads  # type: ignore[attr-defined]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    yield session
    session.quit()


def wait(browser: WebDriver, condition: object, timeout: float = 30) -> None:
    WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)  # type: ignore[arg-type]


def choose_model(browser: WebDriver) -> None:
    """The model picked in the upload form. The page redraws its model list when the catalogue changes, so an
    element found a moment ago may be gone (stale): picked again until it holds."""

    def chosen(b: WebDriver) -> bool:
        select = Select(b.find_element(By.ID, "upload-model"))
        select.select_by_value(MODEL)
        return select.first_selected_option.get_attribute("value") == MODEL

    stale = (StaleElementReferenceException, NoSuchElementException)
    WebDriverWait(browser, 30, poll_frequency=0.2, ignored_exceptions=stale).until(chosen)


def test_the_console_lists_models_transcribes_shows_events_and_unloads(
    stack: Stack, browser: WebDriver, shared_data: Path
) -> None:
    browser.get(stack.gateway + "/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#models tr[data-model="{MODEL}"]'))
    assert browser.find_element(By.ID, "health").text in ("healthy", "ready")
    rows = browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    assert {row.get_attribute("data-model") for row in rows} >= {MODEL, "whisper-base", "whisper-large-v3"}
    browser.save_screenshot(str(ARTEFACTS / "console-models.png"))

    # An upload through the page: live progress and streamed text, then the transcript and subtitle downloads.
    browser.find_element(By.ID, "file").send_keys(str(shared_data / "jfk.flac"))
    choose_model(browser)
    browser.find_element(By.ID, "transcribe").click()
    wait(browser, lambda b: b.find_element(By.ID, "downloads").is_displayed(), timeout=120)
    transcript = browser.find_element(By.ID, "transcript").text
    assert "fellow Americans" in transcript and "your country" in transcript
    assert browser.find_element(By.ID, "upload-error").text == ""
    assert (browser.find_element(By.ID, "download-srt").get_attribute("href") or "").startswith("blob:")
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "100"

    # The event feed saw the model come up; the servers table shows it running.
    wait(browser, lambda b: "ready" in b.find_element(By.ID, "events").text)
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#servers tr[data-model="{MODEL}"]'))
    browser.save_screenshot(str(ARTEFACTS / "console-transcribed.png"))
    # The activity chart counted the transcription from /metrics (sampled every 10 s).
    wait(browser, lambda b: b.find_element(By.ID, "activity-text").text.split(" ")[0] not in ("", "0"), timeout=40)
    assert "mean latency" in browser.find_element(By.ID, "activity-text").text
    # At a laptop's 1400 px the servers table fits its panel: no sideways scrolling.
    browser.set_window_size(1400, 900)
    fits = "const s = document.querySelector('#servers').closest('section'); return s.scrollWidth <= s.clientWidth;"
    wait(browser, lambda b: b.execute_script(fits))

    # Unload from the page.
    row = browser.find_element(By.CSS_SELECTOR, f'#servers tr[data-model="{MODEL}"]')
    row.find_element(By.TAG_NAME, "button").click()
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, f'#servers tr[data-model="{MODEL}"]'))
    wait(browser, lambda b: "stopped" in b.find_element(By.ID, "events").text)
    browser.save_screenshot(str(ARTEFACTS / "console-unloaded.png"))

    # A page opened later shows the recent history, not an empty panel: the event stream replays the last hour.
    browser.refresh()
    wait(browser, lambda b: {"ready", "stopped"} <= set(b.find_element(By.ID, "events").text.split()))


def test_the_console_transcribes_a_conversation_with_its_speakers(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    talk = conversation(tmp_path, speakers=2, seconds=25, seed=4)
    browser.get(stack.gateway + "/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, 'option[value="whisper-base"]'))
    # The diarizer is listed as a model, but not offered to transcribe with.
    assert browser.find_elements(By.CSS_SELECTOR, '#models tr[data-model="diarizer-resemblyzer"]')
    assert not browser.find_elements(By.CSS_SELECTOR, 'option[value="diarizer-resemblyzer"]')
    browser.find_element(By.ID, "file").send_keys(str(talk.mono))
    choose_model(browser)
    browser.find_element(By.ID, "speakers").click()
    browser.find_element(By.ID, "transcribe").click()
    wait(browser, lambda b: b.find_element(By.ID, "downloads").is_displayed(), timeout=120)
    lines = browser.find_element(By.ID, "transcript").text.splitlines()
    assert {line.split(":")[0] for line in lines} == {"A", "B"}, lines
    assert browser.find_element(By.ID, "upload-error").text == ""
    browser.save_screenshot(str(ARTEFACTS / "console-speakers.png"))


def test_the_console_submits_follows_downloads_and_cancels_jobs(
    stack: Stack, browser: WebDriver, shared_data: Path, meeting: bytes, tmp_path: Path
) -> None:
    browser.get(stack.gateway + "/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#upload-model option[value="{MODEL}"]'))
    choose_model(browser)
    browser.find_element(By.ID, "job-file").send_keys(str(shared_data / "jfk.flac"))
    browser.find_element(By.ID, "job-submit").click()
    done = '#jobs tr[data-status="completed"]'
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, done), timeout=120)
    row = browser.find_element(By.CSS_SELECTOR, done)
    assert "jfk.flac" in row.text and "100%" in row.text and "11 s" in row.text
    row.find_element(By.CSS_SELECTOR, 'a[data-format="srt"]').click()
    downloads: Path = browser.downloads  # type: ignore[attr-defined]
    wait(browser, lambda b: (downloads / "jfk.srt").exists() and (downloads / "jfk.srt").stat().st_size > 0)
    srt = (downloads / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and "fellow Americans" in srt
    # A long one, cancelled from the page while it is queued or running.
    long = tmp_path / "meeting.flac"
    long.write_bytes(meeting)
    browser.find_element(By.ID, "job-file").send_keys(str(long))
    browser.find_element(By.ID, "job-submit").click()
    active = '#jobs tr[data-status="queued"], #jobs tr[data-status="running"]'
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, active))
    browser.save_screenshot(str(ARTEFACTS / "console-jobs.png"))
    browser.find_element(By.CSS_SELECTOR, active).find_element(By.TAG_NAME, "button").click()
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, '#jobs tr[data-status="cancelled"]'))
    assert browser.find_element(By.ID, "job-error").text == ""


def test_the_api_docs_stay_at_docs(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.gateway + "/docs")
    wait(browser, lambda b: "ASR Pro" in b.title)


def _word_index(said: list[str], phrase: str) -> int:
    """Where the words of `phrase` first follow one another in `said`, or -1."""
    wanted = phrase.split()
    return next((i for i in range(len(said)) if said[i : i + len(wanted)] == wanted), -1)


FINALS = "return Array.from(document.querySelectorAll('#mic-transcript .mic-item.final'), (e) => e.textContent)"


def test_the_console_transcribes_the_microphone_live(stack: Stack, browser: WebDriver) -> None:
    browser.get(stack.gateway + "/")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#upload-model option[value="{MODEL}"]'))
    choose_model(browser)
    assert browser.execute_script("return window.micDeltas") == 0
    browser.find_element(By.ID, "mic-start").click()
    # The fake microphone says jfk.flac (then a second of silence, then again): the server's VAD cuts it into items,
    # each shown partial (its deltas) while spoken, then final (its completed transcript).
    wait(browser, lambda b: b.find_element(By.ID, "mic-status").text in ("listening", "speech"))

    # A phrase inside one of the VAD's items: "ask not | what your country" is cut at its pause, and tiny.en may
    # hear the cut item's first word as "Like".
    reference, phrase = words(JFK_TEXT), "your country can do for you"
    at = reference.index("your")

    def heard(b: WebDriver) -> list[str] | None:
        """The final items' words, once they hold the phrase and the rest of the sentence after it."""
        said = words(" ".join(b.execute_script(FINALS)))
        start = _word_index(said, phrase)
        return said if start >= 0 and len(said) - start >= len(reference) - at else None

    try:
        wait(browser, heard, timeout=90)
    except TimeoutException:
        status, shown = browser.find_element(By.ID, "mic-status").text, browser.find_element(By.ID, "mic-transcript")
        raise AssertionError(f"status {status!r}, transcript {shown.text!r}") from None
    said = heard(browser) or []
    # The sentence around the phrase, as many words as it has: the loop of the recording the phrase was heard in.
    start = _word_index(said, phrase)
    heard_once = said[max(0, start - at) : start - at + len(reference)]
    assert word_error_rate(JFK_TEXT, " ".join(heard_once)) < 0.3, said
    assert browser.execute_script("return window.micDeltas") > 0, "no delta was shown"
    items = browser.find_elements(By.CSS_SELECTOR, "#mic-transcript .mic-item")
    assert all(item.get_attribute("data-item-id") for item in items)
    browser.save_screenshot(str(ARTEFACTS / "console-microphone.png"))
    browser.find_element(By.ID, "mic-stop").click()
    wait(browser, lambda b: b.find_element(By.ID, "mic-status").text == "stopped")
    assert browser.find_element(By.ID, "mic-start").is_enabled()
    assert not browser.find_element(By.ID, "mic-stop").is_enabled()


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("console-keys"), ASRPRO_GATEWAY__ADMIN_KEYS='["console-admin-key-123"]')
    yield s
    assert s.stop() == 0


def test_with_api_keys_the_console_asks_for_one_and_then_works(
    keyed_stack: Stack, browser: WebDriver, shared_data: Path
) -> None:
    browser.get(keyed_stack.gateway + "/")
    browser.execute_script("localStorage.clear()")
    browser.get(keyed_stack.gateway + "/")
    wait(browser, lambda b: b.find_element(By.ID, "key-needed").is_displayed())
    assert not browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    field = browser.find_element(By.ID, "api-key")
    field.send_keys("console-admin-key-123")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#models tr[data-model="{MODEL}"]'))
    assert not browser.find_element(By.ID, "key-needed").is_displayed()
    browser.get(keyed_stack.gateway + "/")  # kept in this browser: the WebSocket opens with it as ?token=
    browser.find_element(By.ID, "file").send_keys(str(shared_data / "jfk.flac"))
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'#upload-model option[value="{MODEL}"]'))
    choose_model(browser)
    browser.find_element(By.ID, "transcribe").click()
    wait(browser, lambda b: b.find_element(By.ID, "downloads").is_displayed(), timeout=120)
    assert "fellow Americans" in browser.find_element(By.ID, "transcript").text
    wait(browser, lambda b: "ready" in b.find_element(By.ID, "events").text)  # events over the keyed WebSocket
    browser.save_screenshot(str(ARTEFACTS / "console-with-key.png"))
    browser.execute_script("localStorage.clear()")
