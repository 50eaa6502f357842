#!/usr/bin/python3
"""The VM Backups Cockpit page in a real browser: Debian's Chromium driven by Selenium.

Run inside a booted container prepared by setup.sh:   browser.py ARTIFACT_DIR

Logs in through Cockpit's login page (PAM) as an administrator and as a member of the
libvirt group, and drives the page as they would. Prints "ok - STEP" or "FAILED - STEP" per
step and "N passed, M failed" at the end (the container suite counts them); a screenshot of
every step goes to ARTIFACT_DIR.
"""

import os
import subprocess
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

COCKPIT = "http://127.0.0.1:9090"
PAGE_FRAME = "cockpit1:localhost/vmsnap"
ROOT = "/var/lib/vmsnap"
ARTIFACTS = sys.argv[1] if len(sys.argv) > 1 else "/root/artifacts"
WAIT = 60  # seconds, for the page to show something
JOB_WAIT = 600  # seconds, for a job to end: TCG guests on two cores are slow

passed = 0
failed = 0
shots = 0


def step(name):
    """Runs the decorated function as a test step now, counting and reporting it."""

    def run(fn):
        global passed, failed
        try:
            fn()
            passed += 1
            print(f"ok - {name}", flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported, then the next step runs
            failed += 1
            print(f"FAILED - {name}", flush=True)
            # Where in this file, and the exception's own first lines (not the driver's
            # native stack that Selenium appends to them).
            tb = traceback.extract_tb(sys.exc_info()[2])
            here = [f for f in tb if f.filename == __file__]
            if here:
                print(f"    | line {here[-1].lineno}: {here[-1].line}", flush=True)
            for line in traceback.format_exception_only(sys.exc_info()[1])[0].splitlines()[:4]:
                print(f"    | {line}", flush=True)
            screenshot(f"failed-{name}")
        return fn

    return run


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(120)
    return driver


driver = None


def screenshot(name):
    global shots
    if driver is None:
        return
    shots += 1
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        driver.switch_to.default_content()
        driver.save_screenshot(os.path.join(ARTIFACTS, f"{shots:02d}-{name}.png"))
        enter_page(quiet=True)
    except WebDriverException:
        pass


def wait_for(what, predicate, timeout=None):
    """Polls `predicate` until it returns something true; returns it or fails naming `what`."""
    deadline = time.monotonic() + (timeout or WAIT)
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (StaleElementReferenceException, WebDriverException) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def find(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def click(css):
    """Clicks `css`, again if the page re-rendered it in between (it does after every job)."""
    wait_for(f"a click on {css}", lambda: find(css).click() or True)


def finds(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def enter_page(quiet=False):
    """Switches into the page's iframe inside Cockpit's shell."""
    driver.switch_to.default_content()
    frame = wait_for("the page's frame", lambda: driver.find_element(By.NAME, PAGE_FRAME))
    driver.switch_to.frame(frame)
    if not quiet:
        wait_for("the page to load", lambda: finds("#overview") or finds("#service-down"))


def login(user, password):
    driver.get(COCKPIT + "/")
    wait_for("the login page", lambda: find("#login-user-input"))
    find("#login-user-input").send_keys(user)
    find("#login-password-input").send_keys(password)
    click("#login-button")
    wait_for("the shell after login", lambda: "/system" in driver.current_url or finds("iframe"))
    driver.get(COCKPIT + "/vmsnap")
    enter_page()


def row(domain):
    return find(f'tr[data-domain="{domain}"]')


def newest_job(operation, domain, seen):
    """The first job card of `operation` on `domain` that is not in `seen`."""
    for card in finds(f'.vs-job[data-operation="{operation}"]'):
        if card.get_attribute("id") not in seen and domain in card.find_element(By.TAG_NAME, "strong").text:
            return card
    return None


def job_ids():
    return {c.get_attribute("id") for c in finds(".vs-job")}


def job_state(job_id):
    return find(f"#{job_id}").get_attribute("data-state")


def ended(job_id):
    return job_state(job_id) in ("succeeded", "failed", "cancelled")


def start_job(button, operation, domain):
    """Clicks `button` and returns the id of the job card it made appear."""
    before = job_ids()
    click(button)
    card = wait_for(f"the {operation} job", lambda: newest_job(operation, domain, before))
    return card.get_attribute("id")


def run_job(button, operation, domain, shot):
    """start_job, then waits for the job to end and requires that it succeeded."""
    job = start_job(button, operation, domain)
    wait_for(f"the {operation} to end", lambda: ended(job), JOB_WAIT)
    screenshot(shot)
    assert job_state(job) == "succeeded", find(f"#{job}").text
    return job


def host(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# --- as the administrator ----------------------------------------------------------------

driver = browser()


@step("an administrator logs in through Cockpit's login page and opens VM Backups")
def _():
    login("cpadmin", "cockpit-admin-pw")
    driver.switch_to.default_content()
    # Cockpit's administrative access, switched on the way an administrator does in the top
    # bar: the bridge then runs as root through sudo, and the page's calls reach the service
    # as root. (Cockpit remembers the choice for the next login.)
    wait_for("the access indicator", lambda: finds(".ct-locked") or finds(".ct-unlocked"))
    if finds(".ct-locked"):
        click(".ct-locked")
        wait_for("the password prompt", lambda: find("#switch-to-admin-access-password"))
        find("#switch-to-admin-access-password").send_keys("cockpit-admin-pw")
        driver.find_element(By.XPATH, "//button[normalize-space()='Authenticate']").click()
    wait_for("administrative access", lambda: finds(".ct-unlocked"))
    enter_page()
    wait_for("the domains", lambda: finds('tr[data-domain="cp-small"]'))
    screenshot("admin-overview")


@step("the overview lists the test domains with state, verdict and checkpoints")
def _():
    for domain in ("cp-small", "cp-large"):
        wait_for(domain, lambda: row(domain))
        assert "running" in row(domain).text, row(domain).text
        assert row(domain).find_element(By.CSS_SELECTOR, ".vs-verdict").text == "OK"
        assert row(domain).find_element(By.CSS_SELECTOR, ".vs-checkpoints").text == "0"
    assert "vmsnapd" in find("#service-info").text


@step("a backup shows a moving progress bar per disk and its result")
def _():
    job = start_job("#backup-cp-small", "backup", "cp-small")
    seen = set()

    def progressed():
        for bar in finds(f"#{job} .pf-v6-c-progress"):
            seen.add((job_state(job), bar.get_attribute("data-percent")))
        return ended(job)

    wait_for("the backup to end", progressed, JOB_WAIT)
    screenshot("backup-done")
    assert job_state(job) == "succeeded", find(f"#{job}").text
    running = {p for s, p in seen if s in ("queued", "running")}
    assert running, f"no progress bar while the backup ran: {seen}"
    assert ("succeeded", "100") in seen, seen
    result = find(f'#{job} .vs-result[data-domain="cp-small"]').text
    assert "full" in result and "vmsnap-backup-" in result, result
    # The overview refreshes when the job completes: the live chain and the checkpoint.
    wait_for("the refreshed row", lambda: row("cp-small").find_element(By.CSS_SELECTOR, ".vs-checkpoints").text == "1")
    assert "1 points" in row("cp-small").find_element(By.CSS_SELECTOR, ".vs-chain").text


@step("a larger backup is cancelled from the page")
def _():
    job = start_job("#backup-cp-large", "backup", "cp-large")

    def moving():
        bars = finds(f"#{job} .pf-v6-c-progress")
        return bars and int(bars[0].get_attribute("data-percent")) > 0

    wait_for("the first progress", moving)
    click(f"#cancel-{job[len('job-'):]}")
    wait_for("the cancelled state", lambda: job_state(job) == "cancelled", JOB_WAIT)
    screenshot("backup-cancelled")
    # Nothing that looks like a backup stays behind: the cancelled full's folder is gone, and
    # the overview shows no chain.
    data = host("find", ROOT, "-path", f"{ROOT}/cp-large/*", "-name", "*.data")
    assert data.strip() == "", data
    wait_for("the refreshed row", lambda: row("cp-large").find_element(By.CSS_SELECTOR, ".vs-chain").text == "none")


@step("verify checks every point and shows the per-point results")
def _():
    job = run_job("#verify-cp-small", "verify", "cp-small", "verify-done")
    checks = [li.text for li in finds(f"#{job} .vs-result__checks li")]
    assert checks and any("virtnbdbackup.0" in c for c in checks), checks


@step("a point restored from the page is the guest's disk byte for byte")
def _():
    target = f"{ROOT}/restore/cp-small-browser"
    click("#restore-cp-small")
    wait_for("the restore dialog", lambda: find("#restore-target"))
    field = find("#restore-target")
    field.clear()
    field.send_keys(target)
    screenshot("restore-dialog")
    run_job("#restore-start", "restore", "cp-small", "restore-done")
    images = [f for f in os.listdir(target) if not f.endswith((".xml", ".log"))]
    assert len(images) == 1, images
    host("qemu-img", "compare", "-f", "qcow2", "-F", "raw", os.path.join(target, images[0]), "/root/refs/cp-small.raw")


@step("prune and scrub show exactly what they remove before they do it")
def _():
    click("#prune-cp-small")
    click("#prune-dialog-preview")
    wait_for("the prune preview", lambda: finds("#prune-dialog-nothing") or finds("#prune-dialog-items"))
    # The chain is of the current period: prune keeps it.
    assert finds("#prune-dialog-nothing"), find("#prune-dialog-outcome").text
    click("#prune-dialog-cancel")

    click("#scrub-cp-small")
    click("#scrub-dialog-preview")
    items = wait_for("the scrub preview", lambda: finds("#scrub-dialog-items li"))
    listed = sorted(li.text for li in items)
    screenshot("scrub-preview")
    assert "checkpoint virtnbdbackup.0" in listed, listed
    assert host("virsh", "checkpoint-list", "--name", "cp-small").split() == ["virtnbdbackup.0"], \
        "the dry run removed something"
    click("#scrub-dialog-confirm")
    wait_for("the scrub outcome", lambda: "Removed:" in find("#scrub-dialog-outcome").text)
    assert host("virsh", "checkpoint-list", "--name", "cp-small").strip() == ""
    click("#scrub-dialog-cancel")


@step("dialogs work with the keyboard alone")
def _():
    button = find("#restore-cp-small")
    driver.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    wait_for("the dialog's first field to have the focus",
             lambda: driver.switch_to.active_element.get_attribute("id") == "restore-chain")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for("the dialog to close", lambda: not finds("#restore-dialog"))
    assert driver.switch_to.active_element.get_attribute("id") == "restore-cp-small"


@step("the page follows the dark theme")
def _():
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    wait_for("the dark class", lambda: "pf-v6-theme-dark" in find("html").get_attribute("class"))
    screenshot("overview-dark")
    background = driver.execute_script(
        "return getComputedStyle(document.querySelector('.vs-card')).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    wait_for("the light theme", lambda: "pf-v6-theme-dark" not in (find("html").get_attribute("class") or ""))
    light = driver.execute_script(
        "return getComputedStyle(document.querySelector('.vs-card')).backgroundColor")
    assert background != light, (background, light)


@step("everything the page loads comes from Cockpit itself (works offline)")
def _():
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls, "no resources recorded"
    foreign = [u for u in urls if not u.startswith(COCKPIT + "/")]
    assert not foreign, foreign


@step("the page says the service is not running, and recovers when it is back")
def _():
    host("systemctl", "mask", "--runtime", "vmsnapd.service")
    host("systemctl", "stop", "vmsnapd.service")
    try:
        wait_for("the not-running state", lambda: finds("#service-down"))
        screenshot("service-down")
    finally:
        host("systemctl", "unmask", "--runtime", "vmsnapd.service")
    host("systemctl", "start", "vmsnapd.service")
    wait_for("the domains again", lambda: finds('tr[data-domain="cp-small"]'))
    screenshot("service-back")


driver.quit()

# --- as a member of the libvirt group ----------------------------------------------------

driver = browser()


@step("a libvirt-group user logs in and sees the domains")
def _():
    login("cpuser", "cockpit-user-pw")
    wait_for("cp-small", lambda: row("cp-small"))
    screenshot("user-overview")


@step("the libvirt-group user backs up; the job says who started it")
def _():
    job = run_job("#backup-cp-small", "backup", "cp-small", "user-backup-done")
    assert "by cpuser" in find(f"#{job}").text, find(f"#{job}").text


@step("scrub as the libvirt-group user is refused with the service's message")
def _():
    click("#scrub-cp-small")
    click("#scrub-dialog-preview")
    outcome = wait_for("the refusal", lambda: "Refused" in find("#scrub-dialog-outcome").text
                       and find("#scrub-dialog-outcome"))
    screenshot("user-scrub-refused")
    assert "Not authorized" in outcome.text, outcome.text
    assert "org.vmsnap.scrub" in outcome.text, outcome.text
    assert host("virsh", "checkpoint-list", "--name", "cp-small").strip() != "", "scrubbed anyway"


driver.quit()
print(f"{passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
