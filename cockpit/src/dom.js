// Small DOM helpers. Every text that comes from the service (domain names, paths, error
// lines) is set as a text node, never as HTML: a domain name is chosen by whoever defined
// the domain and must not become markup in an administrator's browser.

/** h("div", {class: "x", onclick: f}, child, "text", [more]) builds an element. */
export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
        if (value === undefined || value === null || value === false)
            continue;
        if (key.startsWith("on"))
            el.addEventListener(key.slice(2), value);
        else if (key === "class")
            el.className = value;
        else if (key === "value")
            el.value = value;
        else if (key === "checked")
            el.checked = !!value;
        else
            el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const child of children) {
        if (child === undefined || child === null || child === false)
            continue;
        if (Array.isArray(child))
            append(el, child);
        else if (child instanceof Node)
            el.appendChild(child);
        else
            el.appendChild(document.createTextNode(String(child)));
    }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
    if (n === undefined || n === null)
        return "—";
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + " " + UNITS[unit];
}

export function time(seconds) {
    if (!seconds)
        return "—";
    return new Date(Number(seconds) * 1000).toLocaleString();
}

export function percent(done, total) {
    if (!total)
        return 0;
    return Math.min(100, Math.floor((Number(done) * 100) / Number(total)));
}

/**
 * A PatternFly button. When `onclick` returns a promise, the button stays disabled until it
 * settles, so a second click cannot start the same restore or removal twice.
 */
export function button(text, onclick, { variant = "secondary", id, disabled, danger, small, label: name } = {}) {
    const cls = "pf-v6-c-button pf-m-" + variant + (danger ? " pf-m-danger" : "") + (small ? " pf-m-small" : "");
    const handler = event => {
        const el = event.currentTarget;
        const pending = onclick(event);
        if (pending && typeof pending.finally === "function") {
            el.disabled = true;
            pending.finally(() => { el.disabled = false });
        }
    };
    return h("button", { type: "button", class: cls, id, disabled, onclick: handler, "aria-label": name }, text);
}

/** A PatternFly label; color one of green, red, orange, blue, grey. */
export function label(text, color) {
    return h("span", { class: "pf-v6-c-label pf-m-" + color },
             h("span", { class: "pf-v6-c-label__content" }, text));
}

/** A PatternFly inline alert. */
export function alert(variant, title, details) {
    return h("div", { class: "pf-v6-c-alert pf-m-inline pf-m-" + variant, role: "alert" },
             h("p", { class: "pf-v6-c-alert__title" }, title),
             details ? h("div", { class: "pf-v6-c-alert__description" }, details) : null);
}

/** A PatternFly progress bar with an accessible value. */
export function progress(title, done, total, { state, id } = {}) {
    const value = percent(done, total);
    const cls = "pf-v6-c-progress pf-m-sm" + (state ? " pf-m-" + state : "");
    const bar = h("div", { class: "pf-v6-c-progress__indicator" });
    bar.style.width = value + "%";
    return h("div", { class: cls, id, "data-percent": value },
             h("div", { class: "pf-v6-c-progress__description" }, title),
             h("div", { class: "pf-v6-c-progress__status" },
               h("span", { class: "pf-v6-c-progress__measure" },
                 value + "% (" + bytes(done) + " of " + bytes(total) + ")")),
             h("div", {
                 class: "pf-v6-c-progress__bar", role: "progressbar", "aria-label": title,
                 "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": value,
             }, bar));
}

/** A labelled form field around `control`. */
export function field(text, control, helper) {
    const input = control.querySelector("input, select") || control;
    const id = input.id || ("f-" + Math.random().toString(36).slice(2));
    input.id = id;
    return h("div", { class: "pf-v6-c-form__group" },
             h("div", { class: "pf-v6-c-form__group-label" },
               h("label", { class: "pf-v6-c-form__label", for: id },
                 h("span", { class: "pf-v6-c-form__label-text" }, text))),
             h("div", { class: "pf-v6-c-form__group-control" },
               control,
               helper ? h("div", { class: "pf-v6-c-form__helper-text" }, helper) : null));
}

export function textInput(attrs) {
    return h("span", { class: "pf-v6-c-form-control" }, h("input", { type: "text", ...attrs }));
}

export function select(attrs, options) {
    return h("span", { class: "pf-v6-c-form-control" },
             h("select", attrs, options.map(([value, text, selected]) =>
                 h("option", { value, selected }, text))));
}

export function checkbox(text, attrs) {
    const id = attrs.id;
    return h("div", { class: "pf-v6-c-check" },
             h("input", { type: "checkbox", class: "pf-v6-c-check__input", ...attrs }),
             h("label", { class: "pf-v6-c-check__label", for: id }, text));
}
