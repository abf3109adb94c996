#!/usr/bin/env python3
"""Side-by-side benchmark of holdfast against restic, rustic and borg on the standard
workload (benches/workload: the Rust toolchain corpus, its day-two mutation, a 2 GiB ext4
image), run on one machine in one session so that ratios are comparable.

Usage: benches/compare.py WORKDIR [--runs 3] [--tools holdfast,restic,rustic,borg]
                          [--steps initial,unchanged,day2,restore,image,check]

Each step runs once per tool per round, tools alternating, rounds repeated; the table
reports medians of wall time and peak RSS, and the repository size after the three
backups. Encryption is on everywhere and compression is each tool's default
(restic: auto, rustic: default, borg: lz4 as shipped... set below to zstd,3 for fairness).
Tools that are not installed are skipped. Restores go to a tmpfs (/dev/shm).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PW = "bench-password"


def sh(cmd, env=None, cwd=None, check=True, quiet=True):
    out = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE if quiet else None,
                         stderr=subprocess.PIPE if quiet else None, text=True)
    if check and out.returncode not in (0, 3):
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(map(str, cmd))}\n{out.stderr}")
    return out


def timed(cmd, env=None, cwd=None):
    """Runs under /usr/bin/time; returns (wall seconds, peak RSS MiB, user+sys seconds)."""
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + list(map(str, cmd)), env=env, cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if out.returncode not in (0, 3):
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(map(str, cmd))}\n{out.stderr[-2000:]}")
    last = out.stderr.strip().splitlines()[-1].split()
    return wall, int(last[0]) / 1024, float(last[1]) + float(last[2])


def warm(root):
    """Reads every file once, so every tool starts with the page cache warm."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    while fh.read(1 << 20):
                        pass


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], stdout=subprocess.PIPE, text=True).stdout.split()[0])


class Tool:
    name = ""

    def __init__(self, work):
        self.repo = work / f"repo-{self.name}"
        self.env = dict(os.environ)

    def available(self):
        return shutil.which(self.binary) is not None

    def reset(self):
        shutil.rmtree(self.repo, ignore_errors=True)
        sh(self.init_cmd(), env=self.env)


class Holdfast(Tool):
    name = "holdfast"

    def __init__(self, work):
        super().__init__(work)
        self.binary = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "holdfast")
        self.env.update(HOLDFAST_REPOSITORY=str(self.repo), HOLDFAST_PASSWORD=PW)

    def available(self):
        return Path(self.binary).exists()

    def init_cmd(self):
        return [self.binary, "init", "-q"]

    def backup(self, path):
        return [self.binary, "backup", "-q", path]

    def restore(self, target):
        return [self.binary, "restore", "-q", "latest", "--target", target]

    def check(self):
        return [self.binary, "check", "--read-data", "-q"]


class Restic(Tool):
    name = "restic"
    binary = "restic"

    def __init__(self, work):
        super().__init__(work)
        self.env.update(RESTIC_REPOSITORY=str(self.repo), RESTIC_PASSWORD=PW)

    def init_cmd(self):
        return ["restic", "init", "-q"]

    def backup(self, path):
        return ["restic", "backup", "-q", path]

    def restore(self, target):
        return ["restic", "restore", "-q", "latest", "--target", target]

    def check(self):
        return ["restic", "check", "-q", "--read-data"]


class Rustic(Restic):
    name = "rustic"
    binary = "rustic"

    def __init__(self, work):
        super().__init__(work)
        # rustic reads its own variables (RESTIC_* are ignored since rustic 0.6).
        self.env.update(RUSTIC_REPOSITORY=str(self.repo), RUSTIC_PASSWORD=PW, RUSTIC_NO_PROGRESS="true")

    def init_cmd(self):
        return ["rustic", "init"]

    def backup(self, path):
        return ["rustic", "backup", path]

    def restore(self, target):
        return ["rustic", "restore", "latest", target]

    def check(self):
        return ["rustic", "check", "--read-data"]


class Borg(Tool):
    name = "borg"
    binary = "borg"

    def __init__(self, work):
        super().__init__(work)
        self.n = 0
        self.env.update(BORG_REPO=str(self.repo), BORG_PASSPHRASE=PW, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def init_cmd(self):
        return ["borg", "init", "-e", "repokey-blake2"]

    def backup(self, path):
        self.n += 1
        return ["borg", "create", "--compression", "zstd,3", f"::a{self.n}-{time.time_ns()}", path]

    def restore(self, target):
        last = sh(["borg", "list", "--last", "1", "--short"], env=self.env).stdout.strip()
        return ["sh", "-c", f"cd '{target}' && borg extract '::{last}'"]

    def check(self):
        return ["borg", "check", "--verify-data"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default="holdfast,restic,rustic,borg")
    ap.add_argument("--steps", default="initial,unchanged,day2,restore,image,check")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    steps = args.steps.split(",")
    corpus = work / "toolchain"
    pristine = work / "toolchain.pristine"
    if not pristine.exists():
        sh(["bash", HERE / "workload" / "make_corpus.sh", work, "toolchain"], quiet=False)
        corpus.rename(pristine)
    if "image" in steps and not (work / "img.raw").exists():
        sh(["bash", HERE / "workload" / "make_corpus.sh", work, "image"], quiet=False)
    classes = {"holdfast": Holdfast, "restic": Restic, "rustic": Rustic, "borg": Borg}
    tools = [classes[t](work) for t in args.tools.split(",")]
    tools = [t for t in tools if t.available() or print(f"skipping {t.name}: not installed", file=sys.stderr)]
    results = {t.name: {} for t in tools}

    def record(tool, step, sample):
        results[tool.name].setdefault(step, []).append(sample)

    for rnd in range(args.runs):
        for tool in tools:
            # A fresh copy of day one for each round, so day two mutates the same input.
            shutil.rmtree(corpus, ignore_errors=True)
            sh(["cp", "-a", pristine, corpus])
            warm(corpus)
            tool.reset()
            if "initial" in steps:
                record(tool, "initial", timed(tool.backup(str(corpus)), env=tool.env, cwd=work))
            if "unchanged" in steps:
                record(tool, "unchanged", timed(tool.backup(str(corpus)), env=tool.env, cwd=work))
            if "day2" in steps:
                sh([sys.executable, HERE / "workload" / "mutate.py", corpus])
                record(tool, "day2", timed(tool.backup(str(corpus)), env=tool.env, cwd=work))
            results[tool.name].setdefault("repo_bytes", []).append(du(tool.repo))
            if "restore" in steps:
                target = Path("/dev/shm") / f"bench-restore-{tool.name}"
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                record(tool, "restore", timed(tool.restore(str(target)), env=tool.env, cwd=work))
                shutil.rmtree(target, ignore_errors=True)
            if "check" in steps:
                try:
                    record(tool, "check", timed(tool.check(), env=tool.env, cwd=work))
                except SystemExit as e:
                    print(f"{tool.name} check: {e}", file=sys.stderr)
            if "image" in steps:
                tool.reset()
                record(tool, "image", timed(tool.backup(str(work / "img.raw")), env=tool.env, cwd=work))
            print(f"round {rnd + 1} {tool.name}: {json.dumps(results[tool.name])}", file=sys.stderr)

    print("| step (median of %d) | " % args.runs + " | ".join(t.name for t in tools) + " |")
    print("|---|" + "---|" * len(tools))
    for step in steps + ["repo_bytes"]:
        cells = []
        for t in tools:
            v = results[t.name].get(step)
            if not v:
                cells.append("-")
            elif step == "repo_bytes":
                cells.append(f"{statistics.median(v) / 1e6:.1f} MB")
            else:
                wall = statistics.median(s[0] for s in v)
                rss = statistics.median(s[1] for s in v)
                cpu = statistics.median(s[2] for s in v)
                cells.append(f"{wall:.2f} s / {rss:.0f} MiB / cpu {cpu:.1f} s")
        print(f"| {step} | " + " | ".join(cells) + " |")
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
