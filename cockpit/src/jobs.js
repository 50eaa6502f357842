// The jobs section: running and recent jobs as the service's ObjectManager announces them,
// who started them, their state, a progress bar per disk from the Progress signals, the
// result per domain (level, folder, why a new chain, the tool's error line, verify checks)
// and Cancel.
import { h, replace, button, label, progress, time, bytes } from "./dom.js";
import { describe } from "./service.js";

const STATE_COLOR = { queued: "grey", running: "blue", succeeded: "green", failed: "red", cancelled: "orange" };

function jobId(path) {
    return path.slice(path.lastIndexOf("/") + 1);
}

async function cancel(actions, path) {
    try {
        await actions.service.cancel(path);
    } catch (error) {
        actions.notice("danger", "The job was not cancelled", describe(error));
    }
}

function result(r) {
    const lines = [];
    const head = [r.domain + ": " + (r.state || "")];
    if (r.level)
        head.push(r.level);
    if (r.folder)
        head.push(r.folder);
    if (r.bytesDone !== undefined)
        head.push(bytes(r.bytesDone));
    lines.push(h("div", { class: "vs-result__head" }, head.join(" · ")));
    if (r.newChainReason)
        lines.push(h("div", { class: "vs-result__reason" }, "New chain: " + r.newChainReason));
    if (r.error)
        lines.push(h("div", { class: "vs-result__error" }, r.error));
    if (r.checks && r.checks.length)
        lines.push(h("ul", { class: "vs-result__checks" }, r.checks.map(c => h("li", {}, c))));
    return h("li", { class: "vs-result", "data-domain": r.domain, "data-state": r.state || "" }, lines);
}

/**
 * The job as last read in full: its State and Results from one Get of Results, so a card never
 * shows a state without that state's results (the list's own Results are the public view,
 * without folders, errors and checks). Before the first read, the list's values.
 */
function coherent(actions, job) {
    const read = actions.state.results.get(job.path)?.shown;
    return read ? { ...job, State: read.state, Results: read.results } : job;
}

function bars(actions, job) {
    const seen = actions.state.progress.get(job.path);
    const disks = seen ? [...seen.values()] : [];
    // Before the first signal (or for a job started before the page opened) the disks of
    // Results carry the counters.
    if (!disks.length) {
        for (const r of job.Results || []) {
            for (const d of r.disks || [])
                disks.push({ domain: r.domain, disk: d.disk, done: d.bytesDone, total: d.bytesTotal });
        }
    }
    const running = job.State === "running" || job.State === "queued";
    return disks.map(d => progress(d.domain + " " + d.disk, d.done, d.total, {
        state: running ? undefined : (job.State === "succeeded" ? "success" : "danger"),
    }));
}

function card(actions, job) {
    const id = jobId(job.path);
    const uid = job.StartedByUID;
    const who = actions.state.users.get(uid);
    const running = job.State === "running" || job.State === "queued";
    return h("li", { class: "vs-job", id: "job-" + id, "data-state": job.State, "data-operation": job.Operation },
             h("div", { class: "vs-job__head" },
               h("strong", {}, (job.Operation || "job") + " " + (job.Domains || []).join(", ")),
               label(job.State || "unknown", STATE_COLOR[job.State] || "grey"),
               h("span", { class: "vs-muted" },
                 "started " + time(job.StartTime) + " by " + (who ? who + " (uid " + uid + ")" : "uid " + uid) +
                 (job.EndTime ? " · ended " + time(job.EndTime) : "")),
               running && job.Cancelable
                   ? button("Cancel", () => cancel(actions, job.path), { variant: "secondary", danger: true, id: "cancel-" + id })
                   : null),
             h("div", { class: "vs-job__progress" }, bars(actions, job)),
             (job.Results || []).some(r => r.state && r.state !== "queued" && r.state !== "running")
                 ? h("ul", { class: "vs-job__results" }, job.Results.map(result))
                 : null);
}

export function renderJobs(section, actions) {
    const jobs = actions.service.jobList();
    replace(section, h("h2", { class: "vs-card__title" }, "Jobs"),
            jobs.length
                ? h("ul", { class: "vs-jobs", id: "job-list" }, jobs.map(job => card(actions, coherent(actions, job))))
                : h("p", { class: "vs-muted", id: "no-jobs" }, "No running or recent jobs."));
}
