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


# The page re-renders its sections after every job, so an element found a moment ago may be
# gone. What the steps read, they read in one script run in the page: no stale elements.
def texts(css):
    """The visible text of every element matching `css`, in document order."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)


def text(css):
    """The visible text of the first element matching `css`; fails when there is none."""
    found = texts(css)
    assert found, f"nothing matches {css}"
    return found[0]


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


def type_into(css, value):
    """Types `value` into the field `css` once the page shows it and takes input: Cockpit's
    login page builds its form in script after the element exists (seen on Debian 13)."""
    def typed():
        field = find(css)
        if not (field.is_displayed() and field.is_enabled()):
            return False
        field.clear()
        field.send_keys(value)
        return field.get_attribute("value") == value
    wait_for(f"typing into {css}", typed)


def login(user, password):
    driver.get(COCKPIT + "/")
    type_into("#login-user-input", user)
    type_into("#login-password-input", password)
    click("#login-button")
    wait_for("the shell after login", lambda: "/system" in driver.current_url or finds("iframe"))
    driver.get(COCKPIT + "/vmsnap")
    enter_page()


def newest_job(operation, domain, seen):
    """The id of the first job card of `operation` on `domain` whose id is not in `seen`."""
    return driver.execute_script("""
        for (const card of document.querySelectorAll('.vs-job[data-operation="' + arguments[0] + '"]')) {
            if (!arguments[2].includes(card.id) && card.querySelector('strong').innerText.includes(arguments[1]))
                return card.id;
        }
        return null;""", operation, domain, list(seen))


def job_ids():
    return set(driver.execute_script("return [...document.querySelectorAll('.vs-job')].map(e => e.id)"))


def job_state(job_id):
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.dataset.state : null", job_id)


def percents(job_id):
    """The progress bars of a job card: their percentages."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' .pf-v6-c-progress')]"
        ".map(e => Number(e.dataset.percent))", job_id)


def ended(job_id):
    return job_state(job_id) in ("succeeded", "failed", "cancelled")


def start_job(button, operation, domain):
    """Clicks `button` and returns the id of the job card it made appear."""
    before = job_ids()
    click(button)
    return wait_for(f"the {operation} job", lambda: newest_job(operation, domain, before))


def into_view(css):
    """Scrolls the first element matching `css` to the middle of the window (for a screenshot)."""
    driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (e) e.scrollIntoView({block: 'center'})", css)


def run_job(button, operation, domain, shot):
    """start_job, then waits for the job to end and requires that it succeeded."""
    job = start_job(button, operation, domain)
    wait_for(f"the {operation} to end", lambda: ended(job), JOB_WAIT)
    into_view(f"#{job}")
    screenshot(shot)
    assert job_state(job) == "succeeded", text(f"#{job}")
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
        type_into("#switch-to-admin-access-password", "cockpit-admin-pw")
        driver.find_element(By.XPATH, "//button[normalize-space()='Authenticate']").click()
    wait_for("administrative access", lambda: finds(".ct-unlocked"))
    enter_page()
    wait_for("the domains", lambda: finds('tr[data-domain="cp-small"]'))
    screenshot("admin-overview")


@step("the overview lists the test domains with state, verdict, problems and checkpoints")
def _():
    for domain in ("cp-small", "cp-large"):
        wait_for(domain, lambda: texts(f'tr[data-domain="{domain}"]'))
        at = f'tr[data-domain="{domain}"]'
        assert "running" in text(at), text(at)
        assert text(f"{at} .vs-verdict") == "OK"
        assert text(f"{at} .vs-checkpoints") == "0"
    # A domain whose disk is missing is not OK, and the row says why.
    broken = text('tr[data-domain="cp-broken"] .vs-verdict')
    assert not broken.startswith("OK") and "cp-broken.qcow2" in broken, broken
    assert "vmsnapd" in text("#service-info")


@step("a backup shows a moving progress bar per disk and its result")
def _():
    job = start_job("#backup-cp-small", "backup", "cp-small")
    seen = set()

    def progressed():
        state = job_state(job)
        for value in percents(job):
            seen.add((state, value))
        return state in ("succeeded", "failed", "cancelled")

    wait_for("the backup to end", progressed, JOB_WAIT)
    assert job_state(job) == "succeeded", text(f"#{job}")
    running = {p for s, p in seen if s in ("queued", "running")}
    assert running, f"no progress bar while the backup ran: {seen}"
    assert ("succeeded", 100) in seen, seen
    result = text(f'#{job} .vs-result[data-domain="cp-small"]')
    assert "full" in result and "vmsnap-backup-" in result, result
    # The overview refreshes when the job completes: the live chain and the checkpoint.
    wait_for("the refreshed row", lambda: texts('tr[data-domain="cp-small"] .vs-checkpoints') == ["1"])
    assert "1 point ·" in text('tr[data-domain="cp-small"] .vs-chain')
    screenshot("backup-done")
    into_view(f"#{job}")
    screenshot("backup-result")


@step("a larger backup is cancelled from the page")
def _():
    job = start_job("#backup-cp-large", "backup", "cp-large")

    def moving():
        return any(p > 0 for p in percents(job))

    wait_for("the first progress", moving)
    click(f"#cancel-{job[len('job-'):]}")
    wait_for("the cancelled state", lambda: job_state(job) == "cancelled", JOB_WAIT)
    into_view(f"#{job}")
    screenshot("backup-cancelled")
    # Nothing that looks like a backup stays behind: the cancelled full's folder is gone, the
    # checkpoint it began is gone from the guest, and the overview shows no chain.
    data = host("find", ROOT, "-path", f"{ROOT}/cp-large/*", "-name", "*.data")
    assert data.strip() == "", data
    assert host("virsh", "checkpoint-list", "--name", "cp-large").strip() == ""
    wait_for("the refreshed row", lambda: texts('tr[data-domain="cp-large"] .vs-chain') == ["none"]
             and texts('tr[data-domain="cp-large"] .vs-checkpoints') == ["0"])


@step("verify checks every point and shows the per-point results")
def _():
    job = run_job("#verify-cp-small", "verify", "cp-small", "verify-done")
    checks = texts(f"#{job} .vs-result__checks li")
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


@step("a point restored as a new domain is defined by libvirt with the restored disk")
def _():
    target = f"{ROOT}/restore/cp-small-copy"
    click("#restore-cp-small")
    wait_for("the restore dialog", lambda: find("#restore-define-as"))
    find("#restore-target").clear()
    find("#restore-target").send_keys(target)
    find("#restore-define-as").send_keys("cp-small-copy")
    screenshot("restore-as-domain-dialog")
    try:
        run_job("#restore-start", "restore", "cp-small", "restore-as-domain-done")
        # The new domain's one disk is the restored image in the target, and it is the
        # guest's disk byte for byte; the page lists the new domain after the job.
        rows = [line.split() for line in host("virsh", "-q", "domblklist", "cp-small-copy", "--details").splitlines()]
        disks = [r[3] for r in rows if len(r) == 4 and r[1] == "disk"]
        assert len(disks) == 1 and disks[0].startswith(target + "/"), rows
        host("qemu-img", "compare", "-f", "qcow2", "-F", "raw", disks[0], "/root/refs/cp-small.raw")
        wait_for("the new domain's row", lambda: texts('tr[data-domain="cp-small-copy"]'))
    finally:
        subprocess.run(["virsh", "-q", "undefine", "cp-small-copy"], capture_output=True)


@step("a selected domain whose backup fails shows the error and leaves no backup")
def _():
    click('tr[data-domain="cp-broken"] .vs-select')
    wait_for("the selection", lambda: "(1)" in text("#backup-selected"))
    job = start_job("#backup-selected", "backup", "cp-broken")
    wait_for("the backup to end", lambda: ended(job), JOB_WAIT)
    into_view(f"#{job}")
    screenshot("backup-failed")
    assert job_state(job) == "failed", text(f"#{job}")
    error = text(f'#{job} .vs-result[data-domain="cp-broken"] .vs-result__error')
    assert "cp-broken.qcow2" in error, error
    data = host("find", ROOT, "-path", f"{ROOT}/cp-broken/*", "-type", "f")
    assert data.strip() == "", data
    wait_for("the row without a chain", lambda: texts('tr[data-domain="cp-broken"] .vs-chain') == ["none"])


@step("prune and scrub show exactly what they remove before they do it")
def _():
    click("#prune-cp-small")
    click("#prune-dialog-preview")
    wait_for("the prune preview", lambda: finds("#prune-dialog-nothing") or finds("#prune-dialog-items"))
    # The chain is of the current period: prune keeps it.
    assert finds("#prune-dialog-nothing"), text("#prune-dialog-outcome")
    click("#prune-dialog-cancel")

    click("#scrub-cp-small")
    click("#scrub-dialog-preview")
    listed = sorted(wait_for("the scrub preview", lambda: texts("#scrub-dialog-items li")))
    screenshot("scrub-preview")
    assert "checkpoint virtnbdbackup.0" in listed, listed
    assert host("virsh", "checkpoint-list", "--name", "cp-small").split() == ["virtnbdbackup.0"], \
        "the dry run removed something"
    click("#scrub-dialog-confirm")
    wait_for("the scrub outcome", lambda: "Removed:" in text("#scrub-dialog-outcome"))
    assert host("virsh", "checkpoint-list", "--name", "cp-small").strip() == ""
    click("#scrub-dialog-cancel")


@step("dialogs work with the keyboard alone")
def _():
    button = find("#restore-cp-small")
    driver.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    wait_for("the dialog's first field to have the focus",
             lambda: driver.switch_to.active_element.get_attribute("id") == "restore-chain")
    # Tab stays inside the dialog: backwards from its first field to its last button (Close),
    # and forwards from there to the first field again.
    driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "restore-dialog-close"
    driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "restore-chain"
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
    wait_for("cp-small", lambda: texts('tr[data-domain="cp-small"]'))
    screenshot("user-overview")


@step("the libvirt-group user backs up; the job says who started it and why a new chain")
def _():
    last = text('tr[data-domain="cp-small"] .vs-last')
    assert "full" in last, f"the scrubbed chain's backup is still the last one: {last}"
    job = run_job("#backup-cp-small", "backup", "cp-small", "user-backup-done")
    assert "by cpuser" in text(f"#{job}"), text(f"#{job}")
    wait_for("the refreshed row", lambda: texts('tr[data-domain="cp-small"] .vs-checkpoints') == ["1"])
    screenshot("user-backup-refreshed")
    # The administrator scrubbed the checkpoints: the result says why a new chain began.
    reason = text(f"#{job} .vs-result__reason")
    assert reason.startswith("New chain: "), reason


@step("scrub as the libvirt-group user is refused with the service's message")
def _():
    click("#scrub-cp-small")
    click("#scrub-dialog-preview")
    outcome = wait_for("the refusal", lambda: "Refused" in text("#scrub-dialog-outcome")
                       and text("#scrub-dialog-outcome"))
    screenshot("user-scrub-refused")
    assert "Not authorized" in outcome, outcome
    assert "org.vmsnap.scrub" in outcome, outcome
    assert host("virsh", "checkpoint-list", "--name", "cp-small").strip() != "", "scrubbed anyway"


driver.quit()
print(f"{passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
