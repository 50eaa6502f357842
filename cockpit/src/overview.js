// The domains section: one row per domain with its state, verdict, checkpoints, changed
// bytes and live chain, the backup toolbar with the CLI's options, and per-row actions.
import { h, replace, bytes, time, button, label, checkbox, select, textInput } from "./dom.js";
import { options, describe } from "./service.js";
import { openRestore, openScrub, openPrune } from "./dialogs.js";

const GROUPINGS = ["month", "quarter", "bi-annual", "year"];

function liveChain(actions, name) {
    const chains = actions.state.chains.filter(c => c.domain === name);
    return chains.find(c => c.live) || null;
}

/** The newest point of any chain of the domain: after a scrub the live chain is gone, the
 * backups are not. */
function lastPoint(actions, name) {
    let last = null;
    for (const chain of actions.state.chains.filter(c => c.domain === name)) {
        for (const point of chain.points || []) {
            if (!last || point.time > last.time)
                last = point;
        }
    }
    return last;
}

function changedBytes(domain) {
    let sum = 0;
    let known = false;
    for (const disk of domain.disks || []) {
        if (disk.changedSinceCheckpoint !== undefined) {
            sum += Number(disk.changedSinceCheckpoint);
            known = true;
        }
    }
    return known ? bytes(sum) : "—";
}

function verdict(domain) {
    if (domain.error)
        return h("div", {}, label("Unknown", "orange"), h("div", { class: "vs-problem" }, domain.error));
    if (domain.overallStatus === 0)
        return label("OK", "green");
    return h("div", {}, label("Inconsistent", "red"),
             h("ul", { class: "vs-problems" }, (domain.problems || []).map(p => h("li", {}, p))));
}

async function startBackup(actions, domains) {
    const { state, service } = actions;
    const o = state.options;
    try {
        await service.backup(domains, options({
            output: ["s", state.root],
            group_by: ["s", o.groupBy],
            raw: ["b", o.raw || undefined],
            compress: ["b", o.compress || undefined],
            prune: ["b", o.prune || undefined],
            keep: ["u", o.prune ? o.keep : undefined],
        }));
        actions.clearNotice();
    } catch (error) {
        actions.notice("danger", "Backup of " + (domains.length ? domains.join(", ") : "all domains") +
                       " was not started", describe(error));
    }
}

async function startVerify(actions, name) {
    try {
        await actions.service.verify(name, actions.state.root);
        actions.clearNotice();
    } catch (error) {
        actions.notice("danger", "Verify of " + name + " was not started", describe(error));
    }
}

function toolbar(actions) {
    const { state } = actions;
    const o = state.options;
    const rootInput = textInput({
        id: "backup-root", value: state.root, list: "backup-roots", "aria-label": "Backup root",
        onchange: event => {
            state.root = event.target.value.trim();
            window.localStorage.setItem("vmsnap:root", state.root);
            actions.reload();
        },
    });
    const keep = textInput({
        id: "prune-keep", type: "number", min: 0, value: o.keep, "aria-label": "Past periods to keep",
        disabled: !o.prune, onchange: e => { o.keep = Math.max(0, Number(e.target.value) || 0) },
    });
    const selected = [...state.selected];
    return h("div", { class: "vs-toolbar" },
             h("div", { class: "vs-toolbar__row" },
               h("label", { for: "backup-root", class: "vs-toolbar__label" }, "Backup root"), rootInput,
               h("datalist", { id: "backup-roots" }, state.roots.map(r => h("option", { value: r }))),
               h("label", { for: "group-by", class: "vs-toolbar__label" }, "Group by"),
               select({ id: "group-by", onchange: e => { o.groupBy = e.target.value } },
                      GROUPINGS.map(g => [g, g, g === o.groupBy])),
               checkbox("Raw disks", { id: "opt-raw", checked: o.raw, onchange: e => { o.raw = e.target.checked } }),
               checkbox("Compress", { id: "opt-compress", checked: o.compress, onchange: e => { o.compress = e.target.checked } }),
               checkbox("Prune after", {
                   id: "opt-prune", checked: o.prune,
                   onchange: e => { o.prune = e.target.checked; actions.render() },
               }),
               keep),
             h("div", { class: "vs-toolbar__row" },
               button(selected.length ? "Back up selected (" + selected.length + ")" : "Back up selected",
                      () => startBackup(actions, selected),
                      { variant: "primary", id: "backup-selected", disabled: !selected.length }),
               button("Back up all", () => startBackup(actions, []), { id: "backup-all" }),
               button("Refresh", () => actions.reload(), { variant: "link", id: "refresh" })));
}

function row(actions, domain) {
    const { state } = actions;
    const chain = liveChain(actions, domain.name);
    const points = chain ? chain.points || [] : [];
    const last = lastPoint(actions, domain.name);
    const id = domain.name.replace(/[^A-Za-z0-9_-]/g, "_");
    return h("tr", { class: "pf-v6-c-table__tr", "data-domain": domain.name, id: "domain-" + id },
             h("td", { class: "pf-v6-c-table__check" },
               h("input", {
                   type: "checkbox", "aria-label": "Select " + domain.name, class: "vs-select",
                   checked: state.selected.has(domain.name),
                   onchange: e => {
                       if (e.target.checked) state.selected.add(domain.name);
                       else state.selected.delete(domain.name);
                       actions.render();
                   },
               })),
             h("th", { scope: "row", class: "vs-name" }, domain.name),
             h("td", { class: "pf-v6-c-table__td", "data-label": "State" }, domain.state || "—"),
             h("td", { class: "pf-v6-c-table__td vs-verdict", "data-label": "Verdict" }, verdict(domain)),
             h("td", { class: "pf-v6-c-table__td vs-checkpoints", "data-label": "Checkpoints" }, String((domain.checkpoints || []).length)),
             h("td", { class: "pf-v6-c-table__td", "data-label": "Changed" }, changedBytes(domain)),
             h("td", { class: "pf-v6-c-table__td vs-chain", "data-label": "Live chain" },
               chain ? [h("div", {}, chain.folder),
                        h("div", { class: "vs-muted" }, points.length + (points.length === 1 ? " point · " : " points · ") + bytes(chain.bytes) +
                          (chain.compressed ? " · compressed" : ""))]
                   : "none"),
             h("td", { class: "pf-v6-c-table__td vs-last", "data-label": "Last backup" },
               last ? [h("div", {}, time(last.time)), h("div", { class: "vs-muted" }, last.level + " · " + bytes(last.bytes))]
                   : "—"),
             h("td", { class: "pf-v6-c-table__td pf-v6-c-table__action" },
               h("div", { class: "vs-actions" },
                 button("Back up", () => startBackup(actions, [domain.name]), { id: "backup-" + id, small: true }),
                 button("Verify", () => startVerify(actions, domain.name), { id: "verify-" + id, disabled: !chain, small: true }),
                 button("Restore…", () => openRestore(actions, domain.name), { id: "restore-" + id, small: true }),
                 button("Scrub…", () => openScrub(actions, domain.name), { id: "scrub-" + id, danger: true, small: true }),
                 button("Prune…", () => openPrune(actions, domain.name), { id: "prune-" + id, danger: true, small: true }))));
}

export function renderOverview(section, actions) {
    const { state } = actions;
    const table = state.domains.length
        ? h("table", { class: "pf-v6-c-table pf-m-compact pf-m-grid-md", role: "grid", id: "domains", "aria-label": "Domains" },
            h("thead", { class: "pf-v6-c-table__thead" },
              h("tr", { class: "pf-v6-c-table__tr" },
                ["", "Domain", "State", "Verdict", "Checkpoints", "Changed", "Live chain", "Last backup", ""]
                    .map(text => h("th", { scope: "col", class: "pf-v6-c-table__th pf-m-wrap" }, text)))),
            h("tbody", { class: "pf-v6-c-table__tbody" }, state.domains.map(d => row(actions, d))))
        : h("p", { class: "vs-muted", id: "no-domains" }, "libvirt has no domains.");
    replace(section, h("h2", { class: "vs-card__title" }, "Domains"), toolbar(actions), table);
}
