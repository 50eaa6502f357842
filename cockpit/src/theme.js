// Light and dark like the rest of Cockpit: the shell keeps the user's choice in
// localStorage "shell:style" (auto, light or dark) and pages follow it, "auto" meaning the
// browser's preference. PatternFly switches its palette on the html element's class.

const DARK = "pf-v6-theme-dark";
const query = window.matchMedia("(prefers-color-scheme: dark)");

function apply() {
    let style = "auto";
    try {
        style = window.localStorage.getItem("shell:style") || "auto";
    } catch (_e) {
        // Storage can be refused (private windows); the browser's preference still counts.
    }
    const dark = style === "dark" || (style === "auto" && query.matches);
    document.documentElement.classList.toggle(DARK, dark);
}

export function followShellTheme() {
    apply();
    query.addEventListener("change", apply);
    window.addEventListener("storage", event => {
        if (event.key === "shell:style")
            apply();
    });
}
