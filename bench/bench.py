#!/usr/bin/env python3
"""VMSnap's benchmark harness (run through bench/run, which prepares the host and the service).

Creates its own TCG domains, measures each thing several times and prints medians, with the
ratios against the floors measured in the same run:

  status     vmsnapctl status of N domains (end to end: CLI -> bus -> service -> host) against
             the same facts gathered directly: libvirt's API on one connection (+ qemu-img info
             for shut-off disks), and against the same virsh/qemu-img commands run one after
             another (what a script, or the original VMSnap, does)
  footprint  vmsnapd's resident memory when idle; vmsnapctl status of one domain
  backup     a full backup of 512 MiB through vmsnapctl against virtnbdbackup run directly on
             the same domain, level and target
  parallel   4 domains backed up one after another against all at once, by concurrency

No result is asserted: this prints numbers, the targets are judged by a reader (BENCHMARKS.md).
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import libvirt

URI = "qemu:///system"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(argv, **kw):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def virsh(*args):
    return run(["virsh", "-c", URI, *args]).stdout


def timed(fn, repeats):
    """Median and spread of `repeats` runs of fn(), in seconds (one warm-up run first)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples), max(samples)


def spread(sample):
    """A (median, min, max) in seconds, as the reports print it."""
    med, lo, hi = sample
    return f"{med:7.3f} s ({lo:.3f}–{hi:.3f})"


class Host:
    def __init__(self, args):
        self.prefix = args.prefix
        self.images = args.images
        self.vmsnapctl = args.vmsnapctl
        self.env = dict(os.environ)
        os.makedirs(self.images, exist_ok=True)

    def define(self, name, size_mib):
        directory = os.path.join(self.images, name)
        os.makedirs(directory, exist_ok=True)
        image = os.path.join(directory, "vda.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", image, f"{size_mib}M"])
        xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>48</memory>"
               "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
               "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
               f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk>"
               "</devices></domain>")
        path = os.path.join(directory, "domain.xml")
        with open(path, "w") as f:
            f.write(xml)
        virsh("define", "--file", path)
        return image

    def status_set(self, count):
        """`count` domains, half running, half shut off, 3 checkpoints each."""
        names = [f"{self.prefix}st{count}-{i:03d}" for i in range(count)]
        for name in names:
            self.define(name, 64)
            virsh("start", "--domain", name)
            for cp in range(3):
                virsh("checkpoint-create-as", "--domain", name, "--name", f"virtnbdbackup.{cp}")
        for name in names[count // 2:]:
            virsh("destroy", "--domain", name)
        return names

    def vmsnapctl_run(self, *args):
        return run([self.vmsnapctl, *args], env=self.env)


def floor_api(names, with_qemu_img):
    """The facts a status report holds, asked directly without tainting a guest: one libvirt
    connection, calls one after another; for running domains each checkpoint's XML with its
    bitmap sizes (VIR_DOMAIN_CHECKPOINT_XML_SIZE) and each disk's block info; qemu-img info of
    shut-off disks (libvirt cannot tell their bitmaps) run all at once."""
    conn = libvirt.open(URI)
    shut_off_disks = []
    for name in names:
        dom = conn.lookupByName(name)
        state, _ = dom.state()
        tree = ET.fromstring(dom.XMLDesc())
        running = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED)
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE if running else 0
        for cp in dom.listAllCheckpoints():
            cp.getXMLDesc(flags)
        if running:
            for target in tree.findall("./devices/disk/target"):
                dom.blockInfo(target.get("dev"))
        else:
            for source in tree.findall("./devices/disk/source"):
                shut_off_disks.append(source.get("file"))
    conn.close()
    if with_qemu_img:
        procs = [subprocess.Popen(["qemu-img", "info", "--force-share", "--output=json", d],
                                  stdout=subprocess.DEVNULL) for d in shut_off_disks]
        for p in procs:
            p.wait()


def naive_cli(names):
    """The same facts through separate virsh and qemu-img processes, one after another."""
    for name in names:
        state = virsh("domstate", "--domain", name).strip()
        xml = virsh("dumpxml", "--domain", name)
        for cp in virsh("checkpoint-list", "--domain", name, "--name").split():
            virsh("checkpoint-dumpxml", "--domain", name, "--checkpointname", cp)
        if state == "running":
            virsh("qemu-monitor-command", "--domain", name, '{"execute":"query-block"}')
        for source in ET.fromstring(xml).findall("./devices/disk/source"):
            run(["qemu-img", "info", "--force-share", "--output=json", source.get("file")])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def bench_status(host, count, repeats):
    log(f"creating {count} domains for status …")
    names = host.status_set(count)
    pattern = f"{host.prefix}st{count}-*"
    doc = json.loads(host.vmsnapctl_run("status", pattern, "--json", "--machine").stdout)
    assert len(doc) == count, f"status reported {len(doc)} of {count} domains"
    results = {
        "vmsnapctl": timed(lambda: host.vmsnapctl_run("status", pattern, "--json", "--machine"),
                           repeats),
        "api_floor": timed(lambda: floor_api(names, True), repeats),
        "api_only": timed(lambda: floor_api(names, False), repeats),
        "cli_sequential": timed(lambda: naive_cli(names), max(3, repeats // 2)),
    }
    return names, results


def backup_once(host, argv_fn, root):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    # The previous run's data is written back now, not during this run's measurement.
    os.sync()
    start = time.perf_counter()
    run(argv_fn(root), env=host.env)
    return time.perf_counter() - start


def bench_backup(host, repeats, data_mib):
    name = f"{host.prefix}bk"
    image = host.define(name, 1024)
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {data_mib}M", image])
    virsh("start", "--domain", name)
    root = os.path.join(host.images, "bk-root")
    direct = lambda r: ["virtnbdbackup", "-d", name, "-l", "full", "-o", r, "-U", URI,
                        "--noprogress"]
    service = lambda r: [host.vmsnapctl, "backup", name, "--output", r, "--json"]
    samples = {"direct": [], "vmsnapctl": []}
    backup_once(host, service, root)  # warm-up (page cache, first checkpoint)
    for _ in range(repeats):
        # In pairs, so drift (page cache, other load) hits both alike; the ratio is the
        # median of the pairs' ratios.
        samples["direct"].append(backup_once(host, direct, root))
        samples["vmsnapctl"].append(backup_once(host, service, root))
    shutil.rmtree(root, ignore_errors=True)
    result = {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}
    result["pairs"] = repeats
    result["ratio"] = statistics.median(
        s / d for d, s in zip(samples["direct"], samples["vmsnapctl"]))
    return result


def bench_parallel(host, restart_service, repeats, data_mib):
    names = [f"{host.prefix}par-{i}" for i in range(4)]
    for name in names:
        image = host.define(name, 512)
        run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x3c 0 {data_mib}M", image])
        virsh("start", "--domain", name)
    root = os.path.join(host.images, "par-root")
    results = {}
    for concurrency in (1, 2, 4):
        restart_service(concurrency)
        samples_seq, samples_par = [], []
        for _ in range(repeats):
            if concurrency == 1:
                shutil.rmtree(root, ignore_errors=True)
                os.makedirs(root)
                start = time.perf_counter()
                for name in names:
                    host.vmsnapctl_run("backup", name, "--output", root, "--json")
                samples_seq.append(time.perf_counter() - start)
            samples_par.append(backup_once(
                host, lambda r: [host.vmsnapctl, "backup", *names, "--output", r, "--json"], root))
        if samples_seq:
            results["one after another"] = statistics.median(samples_seq)
        results[f"one job, {concurrency} at once"] = statistics.median(samples_par)
    shutil.rmtree(root, ignore_errors=True)
    return results


class Cgroup:
    """A cgroup of its own for vmsnapd and its children (v2, or v1's memory and pids)."""

    def __init__(self, name):
        self.v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        roots = ["/sys/fs/cgroup"] if self.v2 else ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]
        self.dirs = [os.path.join(r, name) for r in roots]
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)

    def _read(self, controller, file):
        d = self.dirs[0] if self.v2 or controller == "memory" else self.dirs[1]
        with open(os.path.join(d, file)) as f:
            return f.read()

    def adopt(self, pid):
        for d in self.dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def anon_bytes(self):
        key = "anon" if self.v2 else "rss"
        for line in self._read("memory", "memory.stat").splitlines():
            k, v = line.split()
            if k == key:
                return int(v)
        return 0

    def total_bytes(self):
        return int(self._read("memory", "memory.current" if self.v2 else "memory.usage_in_bytes"))

    def tasks(self):
        return int(self._read("pids", "pids.current"))

    def release(self):
        for d in self.dirs:
            parent = os.path.dirname(d)
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    procs = f.read().split()
                for p in procs:
                    with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                        f.write(p)
                os.rmdir(d)
            except OSError:
                pass


def bench_limits(host, pid, data_mib):
    """Peak memory and tasks of vmsnapd's cgroup (it and every program it runs) while it backs
    up 4 domains at once and then verifies them: what MemoryMax= and TasksMax= are set from."""
    import threading
    names = [f"{host.prefix}lim-{i}" for i in range(4)]
    for name in names:
        image = host.define(name, 1024)
        run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5c 0 {data_mib}M", image])
        virsh("start", "--domain", name)
    root = os.path.join(host.images, "lim-root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    group = Cgroup(f"vmsnap-bench-{os.getpid()}")
    group.adopt(pid)
    peak = {"anon": 0, "total": 0, "tasks": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["anon"] = max(peak["anon"], group.anon_bytes())
            peak["total"] = max(peak["total"], group.total_bytes())
            peak["tasks"] = max(peak["tasks"], group.tasks())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        host.vmsnapctl_run("backup", *names, "--output", root, "--json")
        host.vmsnapctl_run("verify", *names, "--output", root)
    finally:
        stop.set()
        sampler.join()
        group.release()
    shutil.rmtree(root, ignore_errors=True)
    for name in names:
        virsh("destroy", "--domain", name)
    return peak


def job_state(host, path):
    for job in json.loads(host.vmsnapctl_run("jobs", "--json").stdout):
        if job["job"] == path:
            return job["state"]
    raise RuntimeError(f"job {path} is not listed")


def bench_status_during_verify(host, repeats, data_mib):
    """Status latency while a verify of a large chain hashes and rebuilds every point, against
    the same Status on an idle service. Hashing, the journal's fsync and the chain walks run
    off the async runtime, so Status must not wait for them: the two should be alike."""
    names = [f"{host.prefix}vl-{i}" for i in range(4)]
    for name in names:
        image = host.define(name, 64)
        virsh("start", "--domain", name)
    name = f"{host.prefix}vl-chain"
    image = host.define(name, 2 * data_mib)
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5d 0 {data_mib}M", image])
    virsh("start", "--domain", name)
    root = os.path.join(host.images, "vl-root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    host.vmsnapctl_run("backup", name, "--output", root, "--json")
    for _ in range(3):
        host.vmsnapctl_run("backup", name, "--output", root, "--json")
    status = lambda: host.vmsnapctl_run("status", *names, name, "--output", root, "--json",
                                        "--machine")

    def once(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    # The floor (the same questions asked of libvirt and qemu-img directly) is sampled in turn
    # with Status: on two cores the verify's hashing and qemu-img slow every process, and only
    # what Status loses beyond the floor would be the service waiting for the verify.
    floor = lambda: floor_api(names + [name], True)
    once(status), once(floor)
    idle = {"status": [], "floor": []}
    for _ in range(max(21, 3 * repeats)):
        idle["status"].append(once(status))
        idle["floor"].append(once(floor))
    path = host.vmsnapctl_run("verify", name, "--output", root, "--no-wait").stdout.strip()
    busy = {"status": [], "floor": []}
    verify_start = time.perf_counter()
    while job_state(host, path) in ("queued", "running"):
        busy["status"].append(once(status))
        busy["floor"].append(once(floor))
    verify_seconds = time.perf_counter() - verify_start
    state = job_state(host, path)
    if state != "succeeded":
        raise RuntimeError(f"the verify under load ended {state}")
    if len(busy["status"]) < 5:
        raise RuntimeError(f"only {len(busy['status'])} status calls during the verify")
    for n in names + [name]:
        virsh("destroy", "--domain", n)
    shutil.rmtree(root, ignore_errors=True)
    summary = lambda v: (statistics.median(v), statistics.quantiles(v, n=20)[-1], max(v))
    return {"idle": {k: summary(v) for k, v in idle.items()},
            "busy": {k: summary(v) for k, v in busy.items()},
            "samples": (len(idle["status"]), len(busy["status"])),
            "verify_seconds": verify_seconds}


def bench_compress(host, repeats, data_mib):
    """What --compress saves and costs: full backups through the service of a guest whose data
    is one repeated byte (compressible) and of one whose data is random (incompressible), with
    and without compression, in pairs. Returns per kind the median seconds and the data bytes."""
    results = {}
    for kind in ("compressible", "incompressible"):
        name = f"{host.prefix}cz-{kind[:2]}"
        image = host.define(name, 2 * data_mib)
        if kind == "compressible":
            run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5e 0 {data_mib}M", image])
        else:
            noise = os.path.join(host.images, "noise")
            with open(noise, "wb") as f:
                f.write(os.urandom(data_mib << 20))
            run(["qemu-io", "-f", "qcow2", "-c", f"write -s {noise} 0 {data_mib}M", image])
            os.unlink(noise)
        virsh("start", "--domain", name)
        root = os.path.join(host.images, f"cz-root-{kind}")
        samples = {"plain": [], "compressed": []}
        sizes = {}
        for _ in range(repeats):
            for mode, extra in (("plain", []), ("compressed", ["--compress"])):
                argv = lambda r: [host.vmsnapctl, "backup", name, "--output", r, "--json", *extra]
                samples[mode].append(backup_once(host, argv, root))
                data = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                        if f.endswith(".full.data")]
                sizes[mode] = sum(os.path.getsize(f) for f in data)
        shutil.rmtree(root, ignore_errors=True)
        virsh("destroy", "--domain", name)
        results[kind] = {m: (statistics.median(v), sizes[m]) for m, v in samples.items()}
    return results


def build_fs_disk(host, image, work, size_mib=1024):
    """A disk of `size_mib` (1 GiB by default): GPT, one 1000 MiB ext4 partition at 1 MiB
    holding a 100 MiB file of random bytes and 500 small files, written into the qcow2
    `image`; the rest of the disk is left empty. Returns the partition's offset."""
    tree = os.path.join(work, "tree")
    os.makedirs(os.path.join(tree, "etc"), exist_ok=True)
    with open(os.path.join(tree, "big.bin"), "wb") as f:
        f.write(os.urandom(100 << 20))
    for i in range(500):
        with open(os.path.join(tree, "etc", f"file{i:03d}.conf"), "w") as f:
            f.write(f"setting{i} = {i}\n" * 20)
    raw = os.path.join(work, "disk.raw")
    part = os.path.join(work, "part.img")
    run(["truncate", "-s", f"{size_mib}M", raw])
    subprocess.run(["sfdisk", "-q", raw], input="label: gpt\n,1000M,L\n", text=True,
                   check=True)
    run(["truncate", "-s", "1000M", part])
    run(["mkfs.ext4", "-q", "-L", "bench", "-d", tree, part])
    run(["dd", f"if={part}", f"of={raw}", "bs=1M", "seek=1", "conv=notrunc,sparse",
         "status=none"])
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, image])
    for f in (raw, part):
        os.unlink(f)
    shutil.rmtree(tree)
    return 1 << 20


def manual_mount(chain, work, offset, action):
    """What a user does without VMSnap: virtnbdrestore the point into a directory, export the
    qcow2 as a raw file with qemu-storage-daemon (no nbd module here), mount the partition
    read-only with fuse2fs, act, and take it all down again."""
    out = os.path.join(work, "restored")
    shutil.rmtree(out, ignore_errors=True)
    run(["virtnbdrestore", "-i", chain, "-o", out, "-n", "-L", os.path.join(work, "vr.log")])
    image = os.path.join(out, "vda.qcow2")
    export = os.path.join(work, "export.raw")
    mnt = os.path.join(work, "mnt")
    open(export, "w").close()
    os.makedirs(mnt, exist_ok=True)
    argv = ["qemu-storage-daemon", "--blockdev",
            f"driver=file,node-name=f0,filename={image},read-only=on",
            "--blockdev", "driver=qcow2,node-name=q0,file=f0,read-only=on",
            "--export", f"type=fuse,id=e0,node-name=q0,mountpoint={export},writable=off"]
    qsd = subprocess.Popen(argv)
    try:
        # virtnbdrestore's qemu-nbd may still hold the image's lock for a moment after it
        # returned: a daemon that exits at once is started again.
        for _ in range(100):
            if os.path.getsize(export) > 0:
                break
            if qsd.poll() is not None:
                qsd = subprocess.Popen(argv)
            time.sleep(0.05)
        else:
            raise RuntimeError("qemu-storage-daemon did not export the image")
        run(["fuse2fs", export, mnt, "-o", f"ro,offset={offset}"])
        try:
            action(mnt)
        finally:
            run(["umount", mnt])
    finally:
        qsd.terminate()
        qsd.wait()
        subprocess.run(["umount", export], stderr=subprocess.DEVNULL)
    shutil.rmtree(out, ignore_errors=True)


def bench_files(host, repeats):
    """Listing the root of a 1 GiB point and extracting a 100 MiB file from it through
    `vmsnapctl files`, against virtnbdrestore + mount by hand."""
    name = f"{host.prefix}fl"
    image = host.define(name, 1024)
    work = os.path.join(host.images, "fl-work")
    os.makedirs(work, exist_ok=True)
    offset = build_fs_disk(host, image, work)
    root = os.path.join(host.images, "fl-root")
    host.vmsnapctl_run("backup", name, "--output", root)
    chain = next(os.path.join(d) for d, _, fs in os.walk(root) if "vda.full.data" in fs)
    target = os.path.join(host.images, "fl-out")
    ls = lambda: host.vmsnapctl_run("files", name, "--output", root, "ls", "--volume", "1", "/")

    def get():
        shutil.rmtree(target, ignore_errors=True)
        host.vmsnapctl_run("files", name, "--output", root, "get", "--volume", "1", "/big.bin",
                           "--target", target)

    manual_ls = lambda: manual_mount(chain, work, offset, lambda m: os.listdir(m))

    def manual_get():
        shutil.rmtree(target, ignore_errors=True)
        os.makedirs(target)
        manual_mount(chain, work, offset,
                     lambda m: shutil.copyfile(os.path.join(m, "big.bin"),
                                               os.path.join(target, "big.bin")))

    result = {
        "ls": timed(ls, repeats), "manual_ls": timed(manual_ls, repeats),
        "get": timed(get, repeats), "manual_get": timed(manual_get, repeats),
    }
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return result


def drop_caches():
    """Cold cache: what a point costs the first time it is read."""
    run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def bench_index(host, read_point, repeats):
    """The chain index at real sizes: a 4-point chain of a 4 GiB and of a 16 GiB disk (sparse;
    the full holds 1 GiB in 16 extents of 64 MiB spread over the disk, each incremental 64 MiB
    more), its newest point opened through the index and read whole, beside reading the stored
    bytes once and virtnbdrestore's rebuild of the same point. Cold cache before each run."""
    results = {}
    for size_gib in (4, 16):
        name = f"{host.prefix}ix{size_gib}"
        image = host.define(name, size_gib << 10)
        step = (size_gib << 10) // 16
        root = os.path.join(host.images, f"ix-root-{size_gib}")
        for point in range(4):
            if point == 0:
                for i in range(16):
                    run(["qemu-io", "-f", "qcow2", "-c",
                         f"write -P {0x20 + i} {i * step}M 64M", image])
            else:
                run(["qemu-io", "-f", "qcow2", "-c",
                     f"write -P {0x60 + point} {point * step + 8}M 64M", image])
            # Shut off: the service starts it paused for each backup.
            host.vmsnapctl_run("backup", name, "--output", root, "--json")
        folder = next(os.path.join(d, x) for d, subdirs, _ in os.walk(os.path.join(root, name))
                      for x in subdirs if x.startswith("vmsnap-backup-"))
        files = [os.path.join(folder, "vda.full.data")] + [
            os.path.join(folder, f"vda.inc.virtnbdbackup.{n}.data") for n in (1, 2, 3)]
        stored = sum(os.path.getsize(f) for f in files)
        samples = {"open": [], "read": [], "cat": [], "rebuild": []}
        pieces = 0
        for _ in range(repeats):
            drop_caches()
            done = subprocess.run([read_point, *files], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, check=True)
            said = json.loads(done.stderr.strip().splitlines()[-1])
            samples["open"].append(said["index_seconds"])
            samples["read"].append(said["read_seconds"])
            pieces = said["pieces"]
            drop_caches()
            start = time.perf_counter()
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            samples["cat"].append(time.perf_counter() - start)
            out = os.path.join(host.images, f"ix-rebuild-{size_gib}")
            shutil.rmtree(out, ignore_errors=True)
            drop_caches()
            start = time.perf_counter()
            run(["virtnbdrestore", "-i", folder, "-o", out], cwd=host.images)
            samples["rebuild"].append(time.perf_counter() - start)
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        results[size_gib] = {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}
        results[size_gib]["stored"] = stored
        results[size_gib]["pieces"] = pieces
    return results


def bench_inplace(host, repeats):
    """What the in-place reading buys through the service, on a 4 and a 16 GiB disk (sparse):
    GPT with a 1000 MiB ext4 partition (a 100 MiB file, 500 small ones) and 768 MiB more in
    16 extents over the rest of the disk; 4 points (each incremental writes 64 MiB). Cold cache
    before every measurement: the first `files … ls`, the default verify and `--deep` beside
    reading the stored bytes once, and extracting the 100 MiB file beside `cat` of it (and
    `cp` of it into a folder, the same work as an extraction) from an image rebuilt and
    mounted by hand (virtnbdrestore + qemu-storage-daemon + fuse2fs)."""
    results = {}
    for size_gib in (4, 16):
        name = f"{host.prefix}inp{size_gib}"
        image = host.define(name, size_gib << 10)
        work = os.path.join(host.images, f"inp-work-{size_gib}")
        os.makedirs(work, exist_ok=True)
        offset = build_fs_disk(host, image, work, size_gib << 10)
        step = ((size_gib - 1) << 10) // 16
        for i in range(16):
            run(["qemu-io", "-f", "qcow2", "-c", f"write -P {0x20 + i} {1024 + i * step}M 48M",
                 image])
        root = os.path.join(host.images, f"inp-root-{size_gib}")
        for point in range(4):
            if point:
                run(["qemu-io", "-f", "qcow2", "-c",
                     f"write -P {0x60 + point} {1024 + point * step + 8}M 64M", image])
            host.vmsnapctl_run("backup", name, "--output", root, "--json")
        folder = next(os.path.join(d, x) for d, subdirs, _ in os.walk(os.path.join(root, name))
                      for x in subdirs if x.startswith("vmsnap-backup-"))
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                       if f.endswith(".data"))
        target = os.path.join(host.images, f"inp-out-{size_gib}")
        ctl = lambda *a: host.vmsnapctl_run(*a)
        samples = {k: [] for k in ("ls", "verify", "deep", "cat", "get", "cat_rebuilt",
                                   "cp_rebuilt")}

        def cold(key, fn):
            drop_caches()
            start = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - start)

        def cat_rebuilt(mnt):
            drop_caches()
            start = time.perf_counter()
            subprocess.run(["cat", os.path.join(mnt, "big.bin")], stdout=subprocess.DEVNULL,
                           check=True)
            samples["cat_rebuilt"].append(time.perf_counter() - start)
            # The same work as `get`: the file written into a directory.
            shutil.rmtree(target, ignore_errors=True)
            os.makedirs(target)
            drop_caches()
            start = time.perf_counter()
            run(["cp", os.path.join(mnt, "big.bin"), target])
            samples["cp_rebuilt"].append(time.perf_counter() - start)

        for _ in range(repeats):
            cold("ls", lambda: ctl("files", name, "--output", root, "ls", "--volume", "1", "/"))
            cold("verify", lambda: ctl("verify", name, "--output", root))
            cold("cat", lambda: subprocess.run(["cat", *files], stdout=subprocess.DEVNULL,
                                               check=True))
            cold("deep", lambda: ctl("verify", name, "--output", root, "--deep"))
            shutil.rmtree(target, ignore_errors=True)
            cold("get", lambda: ctl("files", name, "--output", root, "get", "--volume", "1",
                                    "/big.bin", "--target", target))
            manual_mount(folder, work, offset, cat_rebuilt)
        shutil.rmtree(target, ignore_errors=True)
        stored = sum(os.path.getsize(f) for f in files)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        results[size_gib] = {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}
        results[size_gib]["stored"] = stored
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prefix", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--vmsnapctl", required=True)
    p.add_argument("--service-pid-file", required=True)
    p.add_argument("--restart-service", required=True,
                   help="command that restarts vmsnapd with --parallel-backups N (N appended)")
    p.add_argument("--read-point", required=True,
                   help="the chain index's reader (guestfs/examples/read-point.rs)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only",
                   default="status,footprint,backup,parallel,limits,status-during-verify,"
                           "compress,files,index,inplace")
    args = p.parse_args()
    host = Host(args)
    only = set(args.only.split(","))

    def pid():
        with open(args.service_pid_file) as f:
            return int(f.read())

    def restart_service(n):
        run([args.restart_service, str(n)])

    report = []
    out = lambda line="": (report.append(line), print(line, flush=True))
    out(f"VMSnap benchmarks — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"medians of {args.repeats} runs (min–max)")
    restart_service(2)
    if "footprint" in only:
        time.sleep(2)
        idle = rss_kib(pid())
    if "status" in only:
        previous = None
        for count in (20, 100):
            _, r = bench_status(host, count, args.repeats)
            vm, floor, api, cli = (r[k] for k in ("vmsnapctl", "api_floor", "api_only",
                                                  "cli_sequential"))
            out()
            out(f"status of {count} domains ({count // 2} running, {count // 2} shut off, "
                "3 checkpoints each)")
            for label, (med, lo, hi) in (("vmsnapctl status --json --machine", vm),
                                         ("floor: libvirt API + qemu-img", floor),
                                         ("  of which libvirt API alone", api),
                                         ("virsh/qemu-img one after another", cli)):
                out(f"  {label:38} {med * 1000:8.1f} ms  ({lo * 1000:.1f}–{hi * 1000:.1f})")
            out(f"  ratio vmsnapctl / floor               {vm[0] / floor[0]:8.2f}x   (target ≤ 2)")
            out(f"  ratio vmsnapctl / libvirt API alone   {vm[0] / api[0]:8.2f}x")
            out(f"  speed-up over sequential commands     {cli[0] / vm[0]:8.2f}x")
            if previous:
                out(f"  per domain: {previous * 1000:.2f} ms at 20, "
                    f"{vm[0] / count * 1000:.2f} ms at {count} (linear or better if ≤)")
            previous = vm[0] / count
    if "footprint" in only:
        one = f"{args.prefix}st20-000" if "status" in only else host.status_set(1)[0]
        single = timed(lambda: host.vmsnapctl_run("status", one, "--json"), args.repeats * 3)
        out()
        out("footprint")
        out(f"  vmsnapd resident memory, idle          {idle / 1024:8.1f} MiB   (target < 15)")
        out(f"  vmsnapd resident memory after the runs {rss_kib(pid()) / 1024:8.1f} MiB")
        out(f"  vmsnapctl status of one domain         {single[0] * 1000:8.1f} ms  "
            f"({single[1] * 1000:.1f}–{single[2] * 1000:.1f})  (target < 50)")
    # The status domains (up to 50 running TCG guests) would eat the CPU the backups need.
    for name in virsh("list", "--name").split():
        if name.startswith(f"{args.prefix}st"):
            virsh("destroy", "--domain", name)
    if "backup" in only:
        # A run of ~2 s varies by ±25 % here (virtnbdbackup's own timing, the TCG guest's
        # firmware retrying to boot): a 5 % question needs many pairs.
        r = bench_backup(host, max(15, 3 * args.repeats), 512)
        out()
        out(f"full backup of 512 MiB of data (running domain, same target filesystem, "
            f"{r['pairs']} pairs)")
        for label, key in (("virtnbdbackup directly", "direct"), ("vmsnapctl backup", "vmsnapctl")):
            med, lo, hi = r[key]
            out(f"  {label:38} {med:8.2f} s   ({lo:.2f}–{hi:.2f})")
        out(f"  ratio vmsnapctl / direct (median pair) {r['ratio']:7.3f}x   (target ≤ 1.05)")
        out(f"  ratio of the medians                   {r['vmsnapctl'][0] / r['direct'][0]:7.3f}x")
    if "parallel" in only:
        r = bench_parallel(host, restart_service, 3, 256)
        out()
        out("4 domains, 256 MiB of data each (running), full backups")
        seq = r["one after another"]
        for label, value in r.items():
            out(f"  {label:38} {value:8.2f} s   {seq / value:5.2f}x")
        restart_service(2)
    if "status-during-verify" in only:
        r = bench_status_during_verify(host, args.repeats, 1024)
        out()
        out(f"status of 5 running domains (--output) on an idle service and during a verify of "
            f"a 4-point chain of 1 GiB ({r['verify_seconds']:.1f} s; "
            f"{r['samples'][0]} and {r['samples'][1]} calls)")
        for label, when, what in (("vmsnapctl status, idle", "idle", "status"),
                                  ("vmsnapctl status, during the verify", "busy", "status"),
                                  ("floor, idle", "idle", "floor"),
                                  ("floor, during the verify", "busy", "floor")):
            med, p95, hi = r[when][what]
            out(f"  {label:38} {med * 1000:8.1f} ms  (p95 {p95 * 1000:.1f}, max {hi * 1000:.1f})")
        slower = {w: r["busy"][w][0] / r["idle"][w][0] for w in ("status", "floor")}
        out(f"  during / idle, vmsnapctl status        {slower['status']:8.2f}x")
        out(f"  during / idle, floor (CPU contention)  {slower['floor']:8.2f}x")
    if "compress" in only:
        r = bench_compress(host, max(5, args.repeats), 512)
        out()
        out("full backup of 512 MiB of data through the service, without and with --compress "
            "(lz4)")
        for kind, modes in r.items():
            (plain_s, plain_b), (comp_s, comp_b) = modes["plain"], modes["compressed"]
            out(f"  {kind:15} plain {plain_s:6.2f} s {plain_b / 2**20:8.1f} MiB   "
                f"compressed {comp_s:6.2f} s {comp_b / 2**20:8.1f} MiB   "
                f"size {comp_b / plain_b:5.3f}x  time {comp_s / plain_s:5.2f}x")
    if "files" in only:
        r = bench_files(host, max(3, args.repeats))
        out()
        out("a 1 GiB point (GPT, ext4, 100 MiB file + 500 small ones), each from nothing: "
            "vmsnapctl files vs virtnbdrestore + qemu-storage-daemon + fuse2fs by hand")
        for what, mine, manual in (("list the root", "ls", "manual_ls"),
                                   ("extract the 100 MiB file", "get", "manual_get")):
            (m, lo, hi), (h, hlo, hhi) = r[mine], r[manual]
            out(f"  {what:26} vmsnapctl {m:6.2f} s ({lo:.2f}–{hi:.2f})   by hand {h:6.2f} s "
                f"({hlo:.2f}–{hhi:.2f})   {m / h:5.2f}x")
    if "index" in only:
        r = bench_index(host, args.read_point, max(3, args.repeats))
        out()
        out("the chain index: the newest point of a 4-point chain (full: 1 GiB in 16 extents; "
            "incrementals: 64 MiB each), cold cache")
        for size, m in r.items():
            fmt = lambda k: spread(m[k])
            out(f"  {size:2} GiB disk, {m['stored'] / 2**30:.2f} GiB stored, {m['pieces']} pieces")
            out(f"    open the point (index every file)   {fmt('open')}")
            out(f"    read the whole disk through it      {fmt('read')}")
            out(f"    cat the stored bytes once           {fmt('cat')}")
            out(f"    virtnbdrestore rebuild of the point {fmt('rebuild')}")
    if "inplace" in only:
        r = bench_inplace(host, max(3, args.repeats))
        out()
        out("every point in place, through the service: a 4-point chain (GPT + ext4 with a "
            "100 MiB file, 768 MiB more data; incrementals 64 MiB each), cold cache")
        for size, m in r.items():
            fmt = lambda k: spread(m[k])
            out(f"  {size:2} GiB disk, {m['stored'] / 2**30:.2f} GiB stored")
            out(f"    vmsnapctl files … ls (first answer)    {fmt('ls')}")
            out(f"    vmsnapctl verify (default)             {fmt('verify')}")
            out(f"    cat the stored bytes once              {fmt('cat')}")
            out(f"      verify / cat                         {m['verify'][0] / m['cat'][0]:7.2f}x"
                "   (target ≤ 1.5)")
            out(f"    vmsnapctl verify --deep                {fmt('deep')}")
            out(f"    vmsnapctl files … get of 100 MiB       {fmt('get')}")
            out(f"    cat of it from a rebuilt, mounted image {fmt('cat_rebuilt')}")
            out(f"    cp of it from that image into a folder  {fmt('cp_rebuilt')}")
    if "limits" in only:
        restart_service(4)
        peak = bench_limits(host, pid(), 512)
        out()
        out("vmsnapd's cgroup (it and the programs it runs): 4 backups at once, then verify")
        out(f"  peak anonymous memory                  {peak['anon'] / 2**20:8.1f} MiB")
        out(f"  peak memory with page cache            {peak['total'] / 2**20:8.1f} MiB")
        out(f"  peak tasks (threads)                   {peak['tasks']:8d}")
        restart_service(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
