// The dialogs that change things: Restore, Scrub and Prune. Scrub and Prune first ask the
// service for a dry run and show exactly what it would remove; only "Remove" then does it.
// A refusal by polkit is shown in the dialog as the service's own message.
import { h, replace, button, alert, field, textInput, select, checkbox } from "./dom.js";
import { options, describe } from "./service.js";

const FOCUSABLE = "button:not([disabled]), input:not([disabled]), select:not([disabled])";

/**
 * Opens a modal; returns {body, footer, close}. Escape and the close button close it, Tab
 * stays inside it, and the focus goes back where it was when it closes.
 */
function modal(title, id) {
    const host = document.getElementById("dialog");
    const previous = document.activeElement;
    const body = h("div", { class: "pf-v6-c-modal-box__body" });
    const footer = h("footer", { class: "pf-v6-c-modal-box__footer" });
    const close = () => {
        replace(host);
        document.removeEventListener("keydown", onKey);
        if (previous && previous.isConnected)
            previous.focus();
    };
    const onKey = event => {
        if (event.key === "Escape") {
            close();
        } else if (event.key === "Tab") {
            const box = document.getElementById(id);
            const items = box ? [...box.querySelectorAll(FOCUSABLE)] : [];
            if (!items.length)
                return;
            const first = items[0];
            const last = items[items.length - 1];
            const inside = box.contains(document.activeElement);
            if (!inside || (event.shiftKey && document.activeElement === first)) {
                event.preventDefault();
                (event.shiftKey ? last : first).focus();
            } else if (!event.shiftKey && document.activeElement === last) {
                event.preventDefault();
                first.focus();
            }
        }
    };
    document.addEventListener("keydown", onKey);
    replace(host, h("div", { class: "pf-v6-c-backdrop" },
                    h("div", { class: "pf-v6-l-bullseye" },
                      h("div", {
                          class: "pf-v6-c-modal-box pf-m-md", role: "dialog", "aria-modal": "true",
                          "aria-labelledby": id + "-title", id,
                      },
                        h("header", { class: "pf-v6-c-modal-box__header" },
                          h("h1", { class: "pf-v6-c-modal-box__title", id: id + "-title" }, title)),
                        body, footer,
                        // Last in the tab order; PatternFly places it in the top corner.
                        h("div", { class: "pf-v6-c-modal-box__close" },
                          button("×", close, { variant: "plain", id: id + "-close", label: "Close" }))))));
    return { body, footer, close };
}

function focusFirst(container) {
    const first = container.querySelector("input, select, button");
    if (first)
        first.focus();
}

export async function openRestore(actions, domain) {
    const { state, service } = actions;
    const { body, footer, close } = modal("Restore " + domain, "restore-dialog");
    let chains = [];
    try {
        chains = (await service.listBackups(state.root, [domain])).filter(c => c.domain === domain);
    } catch (error) {
        replace(body, alert("danger", "Cannot list the backups of " + domain, describe(error)));
        replace(footer, button("Close", close, { variant: "link", id: "restore-cancel" }));
        return;
    }
    if (!chains.length) {
        replace(body, h("p", {}, "There are no backups of " + domain + " in " + state.root + "."));
        replace(footer, button("Close", close, { variant: "link", id: "restore-cancel" }));
        return;
    }
    const initial = chains.find(c => c.live) || chains[chains.length - 1];
    const pointSelect = select({ id: "restore-point" }, []);
    const fillPoints = folder => {
        const chain = chains.find(c => c.folder === folder);
        const points = chain ? chain.points || [] : [];
        replace(pointSelect.querySelector("select"), points.map((p, i) =>
            h("option", { value: p.checkpoint, selected: i === points.length - 1 },
              p.checkpoint + " (" + p.level + ", " + new Date(p.time * 1000).toLocaleString() + ")")));
    };
    const chainSelect = select({ id: "restore-chain", onchange: e => fillPoints(e.target.value) },
                               chains.map(c => [c.folder, c.folder + (c.live ? " (live)" : ""), c === initial]));
    fillPoints(initial.folder);
    const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
    const target = textInput({ id: "restore-target", value: state.root.replace(/\/$/, "") + "/restore/" + domain + "-" + stamp });
    const defineAs = textInput({ id: "restore-define-as", placeholder: "leave empty to only write the disks" });
    const overwrite = checkbox("Replace files in a non-empty target", { id: "restore-overwrite" });
    const problem = h("div", { id: "restore-problem" });
    replace(body, h("form", { class: "pf-v6-c-form", onsubmit: e => e.preventDefault() },
                    field("Chain", chainSelect),
                    field("Point", pointSelect, "The disks are rebuilt as they were at this checkpoint."),
                    field("Target directory", target, "An absolute directory; it is created if missing."),
                    field("Define as a new domain", defineAs),
                    overwrite, problem));
    const start = async () => {
        try {
            await service.restore(domain, options({
                output: ["s", state.root],
                folder: ["s", chainSelect.querySelector("select").value],
                until: ["s", pointSelect.querySelector("select").value],
                target: ["s", target.querySelector("input").value.trim()],
                define_as: ["s", defineAs.querySelector("input").value.trim()],
                overwrite: ["b", overwrite.querySelector("input").checked || undefined],
            }));
            close();
        } catch (error) {
            replace(problem, alert("danger", "The restore was not started", describe(error)));
        }
    };
    replace(footer, button("Restore", start, { variant: "primary", id: "restore-start" }),
            button("Cancel", close, { variant: "link", id: "restore-cancel" }));
    focusFirst(body);
}

/**
 * A dry run first, then a confirmation listing exactly what goes: `preview()` and `apply()`
 * return the service's per-domain report; `items(report)` lists what it removes.
 */
function confirmRemoval(actions, id, title, form, preview, apply, items) {
    const { body, footer, close } = modal(title, id);
    const outcome = h("div", { id: id + "-outcome" });
    const show = (reports, done) => {
        const removed = reports.flatMap(items);
        const problems = reports.flatMap(r => r.problems || []);
        replace(outcome,
                removed.length
                    ? [h("p", {}, done ? "Removed:" : "This will remove:"),
                       h("ul", { class: "vs-removal", id: id + "-items" }, removed.map(i => h("li", {}, i)))]
                    : h("p", { id: id + "-nothing" }, done ? "Nothing was removed." : "There is nothing to remove."),
                problems.length ? alert("warning", "Problems", h("ul", {}, problems.map(p => h("li", {}, p)))) : null);
        return removed.length;
    };
    const run = async () => {
        replace(outcome, h("p", {}, "Asking the service…"));
        try {
            const count = show(await preview(), false);
            replace(footer,
                    button("Remove", confirm, { variant: "danger", id: id + "-confirm", disabled: !count }),
                    button("Close", close, { variant: "link", id: id + "-cancel" }));
        } catch (error) {
            replace(outcome, alert("danger", "Refused", describe(error)));
        }
    };
    const confirm = async () => {
        try {
            show(await apply(), true);
            replace(footer, button("Close", close, { variant: "primary", id: id + "-cancel" }));
            actions.reload();
        } catch (error) {
            replace(outcome, alert("danger", "Refused", describe(error)));
        }
    };
    replace(body, form, outcome);
    replace(footer, button("Show what will be removed", run, { variant: "primary", id: id + "-preview" }),
            button("Cancel", close, { variant: "link", id: id + "-cancel" }));
    focusFirst(body);
}

export function openScrub(actions, domain) {
    const type = select({ id: "scrub-type" }, [
        ["both", "Checkpoints and bitmaps", true], ["checkpoint", "Checkpoints only"],
        ["bitmap", "Bitmaps only"], ["all", "Everything VMSnap made, whatever its name"],
    ]);
    const form = h("form", { class: "pf-v6-c-form", onsubmit: e => e.preventDefault() },
                   h("p", {}, "Scrub removes VMSnap's checkpoints and dirty bitmaps of " + domain +
                     ". The next backup then starts a new chain."),
                   field("Remove", type));
    const value = () => type.querySelector("select").value;
    confirmRemoval(actions, "scrub-dialog", "Scrub " + domain, form,
                   () => actions.service.scrub(domain, value(), true),
                   () => actions.service.scrub(domain, value(), false),
                   r => [...(r.checkpoints || []).map(c => "checkpoint " + c),
                         ...(r.bitmaps || []).map(b => "bitmap " + b)]);
}

export function openPrune(actions, domain) {
    const { state } = actions;
    const keep = textInput({ id: "prune-dialog-keep", type: "number", min: 0, value: state.options.keep });
    const form = h("form", { class: "pf-v6-c-form", onsubmit: e => e.preventDefault() },
                   h("p", {}, "Prune deletes old period folders of " + domain + " in " + state.root +
                     " (grouped by " + state.options.groupBy + ")."),
                   field("Past periods to keep", keep));
    const count = () => Math.max(0, Number(keep.querySelector("input").value) || 0);
    confirmRemoval(actions, "prune-dialog", "Prune " + domain, form,
                   () => actions.service.prune(domain, state.root, count(), state.options.groupBy, true),
                   () => actions.service.prune(domain, state.root, count(), state.options.groupBy, false),
                   r => (r.deleted || []).map(d => "folder " + d));
}
