// The page's one door to vmsnapd: a cockpit.dbus client for org.vmsnap.VMSnap1 on the system
// bus, the same API vmsnapctl uses. Calls go out as the logged-in user, or as root when the
// user has switched Cockpit to administrative access ("superuser": "try"); polkit inside the
// service decides, and a refusal comes back as a D-Bus error the page shows as it is.

export const BUS_NAME = "org.vmsnap.VMSnap1";
export const MANAGER_PATH = "/org/vmsnap/VMSnap1";
export const MANAGER = "org.vmsnap.VMSnap1.Manager";
export const JOB = "org.vmsnap.VMSnap1.Job";

/** Turns cockpit's {t, v} variants (nested in a{sv} and aa{sv}) into plain values. */
export function unwrap(value) {
    if (Array.isArray(value))
        return value.map(unwrap);
    if (value && typeof value === "object") {
        const keys = Object.keys(value);
        if (keys.length === 2 && typeof value.t === "string" && "v" in value)
            return unwrap(value.v);
        const out = {};
        for (const key of keys)
            out[key] = unwrap(value[key]);
        return out;
    }
    return value;
}

/** Builds an a{sv} from {key: [signature, value]}, leaving out undefined values. */
export function options(spec) {
    const out = {};
    for (const [key, [t, v]] of Object.entries(spec)) {
        if (v !== undefined && v !== null && v !== "")
            out[key] = { t, v };
    }
    return out;
}

/** A readable message for a failed call: the service's typed errors name what went wrong. */
export function describe(error) {
    const name = error && error.name ? error.name : "";
    const message = (error && (error.message || error.problem)) || String(error);
    if (name === "org.freedesktop.DBus.Error.AccessDenied" ||
        name === "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" ||
        error.problem === "access-denied")
        return "Not authorized: " + message +
            " — switch to administrative access in Cockpit, or ask an administrator for this right.";
    if (name.startsWith("org.vmsnap.VMSnap1.Error."))
        return name.slice("org.vmsnap.VMSnap1.Error.".length) + ": " + message;
    if (name === "org.freedesktop.DBus.Error.ServiceUnknown" ||
        name === "org.freedesktop.DBus.Error.NameHasNoOwner" ||
        name.startsWith("org.freedesktop.systemd1.") ||
        name.startsWith("org.freedesktop.DBus.Error.Spawn"))
        return "The VMSnap service is not running: " + message;
    return message;
}

/** True when `error` means the service is not there (rather than a refused or failed call). */
export function isServiceGone(error) {
    const name = (error && error.name) || "";
    return name === "org.freedesktop.DBus.Error.ServiceUnknown" ||
        name === "org.freedesktop.DBus.Error.NameHasNoOwner" ||
        name === "org.freedesktop.DBus.Error.NoReply" ||
        name.startsWith("org.freedesktop.systemd1.") ||
        name.startsWith("org.freedesktop.DBus.Error.Spawn") ||
        (error && (error.problem === "disconnected" || error.problem === "not-found"));
}

/**
 * The connection to the service. `onChange(event)` is told when the service appears
 * ("up"), disappears ("down"), a job's progress ("progress", path, domain, disk, done,
 * total) or end ("completed", path) arrives, and when the job list changes ("jobs").
 */
export class Service {
    constructor(onChange) {
        this.onChange = onChange;
        this.client = null;
        this.jobs = null;
        this.connect();
        this.followAdministrativeAccess();
    }

    // A channel keeps the identity it was opened with: when the user switches Cockpit's
    // administrative access on or off, open a new one so calls go out as root or as the user.
    followAdministrativeAccess() {
        const superuser = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
        let current = null;
        superuser.addEventListener("changed", () => {
            const now = superuser.Current;
            if (now === "init")
                return;
            if (current !== null && now !== current)
                this.reconnect();
            current = now;
        });
    }

    reconnect() {
        const old = this.client;
        this.client = null;
        if (old)
            old.close();
        this.connect();
        this.onChange("reconnected");
    }

    connect() {
        const client = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
        this.client = client;
        client.addEventListener("owner", (_event, owner) => {
            if (client === this.client)
                this.onChange(owner ? "up" : "down");
        });
        // The bridge went away (logout, a change of administrative access): start over.
        client.addEventListener("close", () => {
            if (client !== this.client)
                return;
            this.client = null;
            this.onChange("down");
            window.setTimeout(() => this.connect(), 2000);
        });
        client.subscribe({ interface: JOB, member: "Progress", path_namespace: MANAGER_PATH },
                         (path, _iface, _signal, args) => this.onChange("progress", path, ...args));
        client.subscribe({ interface: JOB, member: "Completed", path_namespace: MANAGER_PATH },
                         (path) => this.onChange("completed", path));
        // Jobs come and go through the service's ObjectManager.
        this.jobs = client.proxies(JOB, MANAGER_PATH);
        for (const event of ["added", "changed", "removed"])
            this.jobs.addEventListener(event, () => this.onChange("jobs"));
    }

    async call(method, args, iface = MANAGER, path = MANAGER_PATH) {
        if (!this.client)
            throw Object.assign(new Error("not connected"), { problem: "disconnected" });
        const reply = await this.client.call(path, iface, method, args, { flags: "" });
        return unwrap(reply);
    }

    /**
     * A job's Results as this page's caller may see them: in full for the job's starter and
     * root. The job list (ObjectManager) and its change signals carry only the public view,
     * without folders, errors and checks, because they reach every local user.
     */
    async jobResults(path) {
        const [value] = await this.call("Get", [JOB, "Results"],
                                        "org.freedesktop.DBus.Properties", path);
        return value;
    }

    async property(name) {
        const [value] = await this.call("Get", [MANAGER, name],
                                        "org.freedesktop.DBus.Properties");
        return value;
    }

    status(domains) {
        return this.call("Status", [domains, {}]).then(([report]) => report);
    }

    listBackups(root, domains = []) {
        return this.call("ListBackups", [domains, options({ output: ["s", root] })])
            .then(([chains]) => chains);
    }

    backup(domains, opts) {
        return this.call("Backup", [domains, opts]).then(([job]) => job);
    }

    verify(domain, root, folder) {
        return this.call("Verify", [[domain], options({ output: ["s", root], folder: ["s", folder] })])
            .then(([job]) => job);
    }

    restore(domain, opts) {
        return this.call("Restore", [domain, opts]).then(([job]) => job);
    }

    scrub(domain, type, dryRun) {
        return this.call("Scrub", [[domain], options({ type: ["s", type], dry_run: ["b", dryRun] })])
            .then(([report]) => report);
    }

    prune(domain, root, keep, groupBy, dryRun) {
        return this.call("Prune", [[domain], options({
            output: ["s", root], keep: ["u", keep], group_by: ["s", groupBy], dry_run: ["b", dryRun],
        })]).then(([report]) => report);
    }

    cancel(path) {
        return this.call("Cancel", [], JOB, path);
    }

    /** The jobs the ObjectManager announced, newest first, with plain values. */
    jobList() {
        if (!this.jobs)
            return [];
        return Object.keys(this.jobs)
            .filter(path => path.startsWith(MANAGER_PATH + "/"))
            .map(path => ({ path, ...unwrap(this.jobs[path].data) }))
            .sort((a, b) => (b.StartTime || 0) - (a.StartTime || 0));
    }
}
