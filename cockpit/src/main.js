// The VM Backups page: domains and their chains, backups with live progress, jobs, and the
// verify, restore, scrub and prune actions, all on vmsnapd's D-Bus API.
import { h, replace, alert, button } from "./dom.js";
import { Service, describe, isServiceGone } from "./service.js";
import { followShellTheme } from "./theme.js";
import { renderOverview } from "./overview.js";
import { renderJobs } from "./jobs.js";

followShellTheme();

const app = document.getElementById("app");

/** What the page knows; rendering reads only this. */
const state = {
    phase: "loading", // loading | ready | down
    downReason: "",
    version: "",
    tool: "",
    roots: [],
    root: "",
    domains: [], // Status reports
    chains: [], // ListBackups chains
    selected: new Set(),
    options: { groupBy: "month", raw: false, compress: false, prune: false, keep: 0 },
    notice: null, // {variant, title, details}
    progress: new Map(), // job path -> Map("domain/disk" -> {domain, disk, done, total})
    results: new Map(), // job path -> {asked: the State it was read for, shown: {state, results}}
    users: new Map(), // uid -> name
};

let retryTimer = null;
let loading = null;
let again = false;

const service = new Service((event, ...args) => {
    if (event === "up" || event === "down") {
        load();
    } else if (event === "reconnected") {
        // Administrative access changed: what was refused before may be allowed now.
        state.notice = null;
        state.progress.clear();
        load();
    } else if (event === "progress") {
        const [path, domain, disk, done, total] = args;
        if (!state.progress.has(path))
            state.progress.set(path, new Map());
        state.progress.get(path).set(domain + "/" + disk, { domain, disk, done, total });
        renderJobSection();
    } else if (event === "completed") {
        // A job ended: chains and verdicts changed. This is the only refresh besides the
        // user's own; nothing polls while the service is up.
        load();
    } else if (event === "jobs") {
        renderJobSection();
    }
});

/**
 * Reads everything from the service; shows "not running" when it cannot be reached. A
 * request while a read is under way (a job ended in the middle of it) reads once more after
 * it, so the page never keeps what was read before the event.
 */
function load() {
    if (loading) {
        again = true;
        return loading;
    }
    loading = (async () => {
        try {
            const [version, tool, roots] = await Promise.all([
                service.property("Version"), service.property("VirtnbdbackupVersion"),
                service.property("BackupRoots"),
            ]);
            Object.assign(state, { version, tool, roots });
            if (!state.root)
                state.root = window.localStorage.getItem("vmsnap:root") || roots[0] || "/var/lib/vmsnap";
            const [domains, chains] = await Promise.all([
                service.status([]),
                service.listBackups(state.root).catch(error => {
                    setNotice("warning", "Cannot list the backups in " + state.root, describe(error));
                    return [];
                }),
            ]);
            // By name: Status answers in libvirt's order, which changes from call to call.
            domains.sort((a, b) => a.name.localeCompare(b.name));
            Object.assign(state, { phase: "ready", domains, chains });
            for (const name of [...state.selected]) {
                if (!domains.some(d => d.name === name))
                    state.selected.delete(name);
            }
            await loadUsers();
        } catch (error) {
            if (isServiceGone(error) || state.phase !== "ready") {
                state.phase = "down";
                state.downReason = describe(error);
                scheduleRetry();
            } else {
                setNotice("danger", "Cannot read the service's status", describe(error));
            }
        } finally {
            loading = null;
        }
        render();
        if (again) {
            again = false;
            load();
        }
    })();
    return loading;
}

// While the service is away, ask again now and then (activation starts it when it can).
function scheduleRetry() {
    if (retryTimer)
        return;
    retryTimer = window.setTimeout(() => {
        retryTimer = null;
        if (state.phase === "down")
            load();
    }, 10000);
}

async function loadUsers() {
    if (state.users.size)
        return;
    try {
        const passwd = await cockpit.file("/etc/passwd").read();
        for (const line of (passwd || "").split("\n")) {
            const fields = line.split(":");
            if (fields.length > 2)
                state.users.set(Number(fields[2]), fields[0]);
        }
    } catch (_e) {
        // Names are a convenience; uids are shown without them.
    }
}

function setNotice(variant, title, details) {
    state.notice = { variant, title, details };
    render();
}

/** The page's actions, shared by the sections and dialogs. */
export const actions = {
    state,
    service,
    reload: load,
    render,
    notice: setNotice,
    clearNotice() {
        state.notice = null;
        render();
    },
};

function render() {
    if (state.phase === "loading")
        return;
    if (state.phase === "down") {
        replace(app, h("section", { class: "vs-empty", id: "service-down" },
                       h("h1", { class: "vs-empty__title" }, "The VMSnap service is not running"),
                       h("p", {}, state.downReason),
                       h("p", {}, "The page reconnects when it is back (systemctl start vmsnapd)."),
                       button("Try again", () => load(), { variant: "primary", id: "retry" })));
        return;
    }
    const notice = state.notice
        ? h("div", { id: "notice", class: "vs-notice" },
            alert(state.notice.variant, state.notice.title, state.notice.details),
            button("Dismiss", () => actions.clearNotice(), { variant: "link", id: "dismiss-notice" }))
        : null;
    replace(app,
            h("header", { class: "vs-header" },
              h("h1", { class: "vs-title" }, "VM Backups"),
              h("p", { class: "vs-subtitle", id: "service-info" },
                "vmsnapd " + state.version + " · virtnbdbackup " + (state.tool || "missing"))),
            notice,
            h("section", { id: "overview", class: "vs-card", "aria-label": "Domains" }),
            h("section", { id: "jobs", class: "vs-card", "aria-label": "Jobs" }));
    renderOverview(document.getElementById("overview"), actions);
    renderJobSection();
}

function renderJobSection() {
    // Progress of jobs the service no longer lists is forgotten.
    const jobs = service.jobList();
    const listed = new Set(jobs.map(job => job.path));
    for (const map of [state.progress, state.results]) {
        for (const path of map.keys()) {
            if (!listed.has(path))
                map.delete(path);
        }
    }
    // The list carries the public view of results: read them in full once per state. A card
    // shows a new state only with the results read for it (jobs.js: coherent).
    for (const job of jobs) {
        const entry = state.results.get(job.path) || {};
        if (entry.asked === job.State)
            continue;
        const asked = job.State;
        entry.asked = asked;
        state.results.set(job.path, entry);
        service.jobResults(job.path).then(results => {
            if (state.results.get(job.path) === entry && entry.asked === asked) {
                entry.shown = { state: asked, results };
                renderJobSection();
            }
        }, () => {
            // Asked again at the next change; the public view meanwhile.
            if (state.results.get(job.path) === entry && entry.asked === asked) {
                entry.asked = undefined;
                entry.shown = undefined;
            }
        });
    }
    const section = document.getElementById("jobs");
    if (section && state.phase === "ready")
        renderJobs(section, actions);
}

load();
