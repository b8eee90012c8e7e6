"""The web view in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver, against `mailrouter run` on loopback.

Nothing is downloaded: the driver's path is given (Selenium Manager does not run, and
SE_OFFLINE forbids it anyway). Every page visited is kept as a screenshot under the
test's tmp_path/shots, the browser's console must stay free of errors (a missing asset or
a Content-Security-Policy violation is logged there), and every link and asset of every
page (a[href], link[href], img[src]) is fetched and must answer 200.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import urllib.error
import urllib.request
from email.header import Header
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.daemon import REPO, DaemonProcess
from tests.support.ports import wait_port

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "correct horse battery"

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")]


def _send(port: int, rcpt: str, subject: str) -> None:
    msg = (f"From: Client <client@outside.test>\r\nTo: {rcpt}\r\n"
           f"Subject: {Header(subject, 'utf-8').encode()}\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("client@outside.test", [rcpt], msg.encode())


def _passwd(d: DaemonProcess, person: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", "web", "passwd", person,
                          "--password-stdin", "-c", str(d.config)], input=PASSWORD + "\n",
                         capture_output=True, text=True, env=env, cwd=d.workdir, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = DaemonProcess(tmp_path, extra="workers: 1\nweb: {admins: [petrova]}\ncontrol: {join: address}\n",
                      web=True)
    d.start()
    try:
        assert d.web is not None
        wait_port(d.web)
        for person in ("ivanov", "smirnov"):
            _passwd(d, person)
        _send(d.smtp, "invoices@example.com", "Счёт №42 за декабрь")
        _send(d.smtp, "sales@example.com", "Вопрос о цене")
        yield d
    finally:
        d.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SE_OFFLINE", "true")          # never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--lang=en-US", f"--user-data-dir={tmp_path / 'chrome'}",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log")),
                              options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Visit:
    """Screenshots, console checks and link checks for every page the test sees."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots, self.n = driver, base, shots, 0
        self.checked: set[str] = set()
        shots.mkdir(parents=True, exist_ok=True)

    def page(self, name: str) -> None:
        from selenium.webdriver.common.by import By
        self.n += 1
        self.driver.save_screenshot(str(self.shots / f"{self.n:02d}-{name}.png"))
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"{name}: the browser's console has errors: {errors}"
        refs = [e.get_attribute("href") or e.get_attribute("src") for e in self.driver.find_elements(
            By.CSS_SELECTOR, "a[href], link[href], img[src]")]
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())
        for ref in refs:
            url = urljoin(self.driver.current_url, ref)
            if urlsplit(url).netloc != urlsplit(self.base).netloc:
                raise AssertionError(f"{name}: a link leaves the site: {url}")
            if url in self.checked or urlsplit(url).path == "/lang":   # /lang sets a cookie
                continue
            self.checked.add(url)
            req = urllib.request.Request(url, headers={"Cookie": cookie})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    assert resp.status == 200, f"{name}: {url} answers {resp.status}"
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{name}: broken link {url}: {exc.code}") from None


def _click(driver: Any, by: str, what: str) -> None:
    """Click, then wait until the browser has left the page (a form's answer has loaded)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, what).click()
    # While the old page is being torn down chromedriver may answer the staleness probe with
    # another error than "stale element" (seen in CI under load): ask again until it is stale.
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(old))


def _sign_in(driver: Any, base: str, person: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(base + "/search")
    assert urlsplit(driver.current_url).path == "/login"
    driver.find_element(By.ID, "person").send_keys(person)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    _click(driver, By.ID, "signin")
    assert urlsplit(driver.current_url).path == "/search", driver.page_source


def test_head_of_department_finds_reads_and_is_kept_to_their_department(
        daemon: DaemonProcess, browser: Any, tmp_path: Path) -> None:
    """ivanov (head of finance) signs in, finds 'Счёт №42' by typing СЧЕТ (upper case, е
    for ё), opens its story and its request and sees the rule that routed it with file:line
    relative to the routing directory; reassigns the request to petrova and sees her on the
    board; a reassign form and a sign-out form stripped of their CSRF token are refused
    (403) and change nothing; he signs out. smirnov (head of sales) cannot open the same
    message or request, not even by their links, and his board does not list it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    base = f"http://127.0.0.1:{daemon.web}"
    visit = Visit(browser, base, tmp_path / "shots")

    browser.get(base + "/login")
    visit.page("login")
    _sign_in(browser, base, "ivanov")
    visit.page("search-all")
    words = browser.find_element(By.ID, "words")
    words.send_keys("СЧЕТ")
    _click(browser, By.ID, "find")
    found = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.subject")]
    assert found == ["Счёт №42 за декабрь"], found
    visit.page("search-found")

    _click(browser, By.CSS_SELECTOR, "a.subject")
    story = browser.current_url
    assert browser.find_element(By.ID, "subject").text == "Счёт №42 за декабрь"
    rules = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "li.rule")]
    assert len(rules) == 1 and rules[0].startswith("invoices routing.yaml:"), rules
    assert "client@outside.test" in browser.find_element(By.ID, "from").text
    visit.page("message")

    _click(browser, By.ID, "request")
    request_url = browser.current_url
    number = urlsplit(request_url).path.rsplit("/", 1)[1]
    assert browser.find_element(By.ID, "subject").text == f"#{number} Счёт №42 за декабрь"
    rules = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "li.rule")]
    assert len(rules) == 1 and rules[0].startswith("invoices routing.yaml:"), rules
    why = " ".join(li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.why li"))
    assert "rule 'invoices' (routing.yaml:" in why and str(REPO) not in browser.page_source
    assert browser.find_element(By.ID, "owner").text.startswith("Пётр Иванов")
    visit.page("request")

    Select(browser.find_element(By.ID, "new-owner")).select_by_value("petrova")
    _click(browser, By.ID, "do-reassign")
    assert browser.current_url == request_url
    assert browser.find_element(By.ID, "owner").text.startswith("Анна Петрова")
    assert "reassigned by ivanov" in browser.find_element(By.ID, "history").text
    visit.page("request-reassigned")
    browser.get(base + "/board")
    row = browser.find_element(By.ID, f"req-{number}")
    assert row.find_element(By.CSS_SELECTOR, "td.owner").text == "Анна Петрова"
    assert "business h" in row.find_element(By.CSS_SELECTOR, "td.left").text
    visit.page("board")

    # A form posted without its CSRF token: refused, and nothing changes.
    browser.get(request_url)
    Select(browser.find_element(By.ID, "new-owner")).select_by_value("smirnov")
    browser.execute_script("document.querySelector('#reassign input[name=csrf]').remove()")
    _click(browser, By.ID, "do-reassign")
    assert browser.find_element(By.TAG_NAME, "h1").text == "403"
    browser.get_log("browser")          # the 403 itself is logged by the console: expected
    visit.page("reassign-csrf-refused")
    browser.get(request_url)
    assert browser.find_element(By.ID, "owner").text.startswith("Анна Петрова")

    _click(browser, By.CSS_SELECTOR, "dd a[href^='/counterparty']")
    assert "Счёт №42" in browser.page_source
    visit.page("counterparty")
    browser.get(base + "/report")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert browser.find_elements(By.ID, "response-owner")
    visit.page("report")

    browser.execute_script("document.querySelector('form.out input[name=csrf]').remove()")
    _click(browser, By.ID, "signout")
    assert browser.find_element(By.TAG_NAME, "h1").text == "403"
    browser.get_log("browser")
    visit.page("csrf-refused")
    browser.get(story)
    assert browser.find_element(By.ID, "subject").text == "Счёт №42 за декабрь"

    _click(browser, By.ID, "signout")
    assert urlsplit(browser.current_url).path == "/login"
    browser.get(story)
    assert urlsplit(browser.current_url).path == "/login"       # signed out: no story
    visit.page("signed-out")

    _sign_in(browser, base, "smirnov")
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.subject")] == ["Вопрос о цене"]
    visit.page("other-head-search")
    for link in (story, request_url):
        browser.get(link)
        assert browser.find_element(By.TAG_NAME, "h1").text == "404"
        assert "Счёт" not in browser.page_source
        browser.get_log("browser")      # the 404 itself is logged by the console: expected
    visit.page("other-head-refused")
    browser.get(base + "/board")
    assert not browser.find_elements(By.ID, f"req-{number}") and "Счёт" not in browser.page_source
    visit.page("other-head-board")
    assert len(list((tmp_path / "shots").glob("*.png"))) == visit.n


def test_a_link_from_another_site_opens_signed_in_and_its_post_is_refused(
        daemon: DaemonProcess, browser: Any) -> None:
    """A reminder's link (web.url) is opened from a mail client: another site. Signed in,
    the link opens the request page, not the sign-in form (the session cookie is
    SameSite=Lax; under Strict the browser left it out). A form on that other site that
    posts "close" to the request carries no cookie and changes nothing."""
    import http.server
    import threading

    from selenium.webdriver.common.by import By
    base = f"http://127.0.0.1:{daemon.web}"
    page = (f'<a id="go" href="{base}/request/1">[#1]</a>'
            f'<form id="evil" method="post" action="{base}/request/1/close">'
            f'<button id="close">close</button></form>').encode()

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        _sign_in(browser, base, "ivanov")
        elsewhere = f"http://localhost:{other.server_address[1]}/"     # another site
        browser.get(elsewhere)
        _click(browser, By.ID, "go")
        assert urlsplit(browser.current_url).path == "/request/1", browser.current_url
        assert browser.find_element(By.ID, "subject").text == "#1 Счёт №42 за декабрь"
        status = browser.find_element(By.ID, "status").text
        assert status and "closed" not in status.lower(), status
        browser.get(elsewhere)
        _click(browser, By.ID, "close")
        browser.get(base + "/request/1")
        assert browser.find_element(By.ID, "status").text == status
        browser.get_log("browser")          # the refused post is logged by the console
    finally:
        other.shutdown()
        other.server_close()


def test_a_subject_without_spaces_keeps_every_page_within_the_window(
        daemon: DaemonProcess, browser: Any, tmp_path: Path) -> None:
    """A customer's invoice whose subject is 400 letters without a space: the board was
    7,000 pixels wide (the subject's column took them, and the counterparty, owner and SLA
    time left of every request were off the screen), and so were the request's page, its
    message's page and the search. The subject breaks now; the other columns keep their
    words whole."""
    from selenium.webdriver.common.by import By
    base = f"http://127.0.0.1:{daemon.web}"
    visit = Visit(browser, base, tmp_path / "shots")
    subject = Header("Счёт " + "Ж" * 400, "utf-8").encode(linesep="\r\n")   # folded lines
    with smtplib.SMTP("127.0.0.1", daemon.smtp, timeout=30) as s:
        s.sendmail("client@outside.test", ["invoices@example.com"],
                   (f"From: Client <client@outside.test>\r\nTo: invoices@example.com\r\n"
                    f"Subject: {subject}\r\n\r\nhello\r\n").encode())
    _sign_in(browser, base, "ivanov")

    def fits(name: str) -> None:
        visit.page(name)
        width, window = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= window, (name, width, window)
    browser.get(base + "/board")
    fits("board")
    owner = browser.find_elements(By.CSS_SELECTOR, "td.owner")[0]
    assert owner.text == "Пётр Иванов" and owner.size["height"] < 3 * owner.size["width"]
    browser.get(base + "/search?words=" + "Ж" * 400)
    fits("search")
    _click(browser, By.CSS_SELECTOR, "a.subject")
    fits("message")
    _click(browser, By.ID, "request")
    fits("request")
