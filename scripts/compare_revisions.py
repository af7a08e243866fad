#!/usr/bin/env python3
"""Run every scenario at two revisions and compare the CSV and JSON bytes they write.

    python3 scripts/compare_revisions.py OLD_REV [NEW_REV] [--scenarios GLOB] [--threads N]

NEW_REV defaults to the working tree. Each revision is built (release) in a git worktree under
target/compare/ (cached by commit), and every scenario of `scenarios/*.toml` at NEW_REV (also
run from the same files at OLD_REV, so that only the code differs) is run by both binaries.

Compared: every `*.csv` and `*.json` file, byte for byte, except `manifest.json`, which is
compared after removing what differs between any two runs of one binary (wall-clock fields,
the revision, the command line, the thread count). PNG and SVG files are listed when they
differ but do not count as a difference (figure styling may change; the numbers may not).

Exit 0 when every scenario is identical, 1 otherwise. Standard library only.
"""
import argparse
import filecmp
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLATILE_KEYS = {"git_revision", "command_line", "started_unix_seconds", "threads",
                 "scenario_source", "wall_seconds", "steps_per_second"}


def volatile(key):
    return key in VOLATILE_KEYS or key.endswith("seconds") or key.startswith("wall_seconds")


def scrub(v):
    if isinstance(v, dict):
        return {k: scrub(x) for k, x in v.items() if not volatile(k)}
    if isinstance(v, list):
        return [scrub(x) for x in v]
    return v


def json_paths(a, b, path="", out=None):
    """The paths (a.b[2].c) where two JSON values differ."""
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            json_paths(a.get(k), b.get(k), f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            json_paths(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(path or ".")
    return out


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def build(rev):
    """The release binary of `rev` (a commit), built once in a cached worktree."""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    cache = os.path.join(ROOT, "target", "compare")
    binary = os.path.join(cache, "bin", sha[:12], "ihdyn")
    if os.path.exists(binary):
        return binary
    tree = os.path.join(cache, "tree")
    if os.path.exists(tree):
        sh("git", "-C", ROOT, "worktree", "remove", "--force", tree)
    sh("git", "-C", ROOT, "worktree", "add", "--detach", tree, sha)
    try:
        sh("cargo", "build", "--release", "--locked", "--quiet", cwd=tree,
           env=dict(os.environ, CARGO_TARGET_DIR=os.path.join(cache, "target")))
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        shutil.copy2(os.path.join(cache, "target", "release", "ihdyn"), binary)
    finally:
        sh("git", "-C", ROOT, "worktree", "remove", "--force", tree)
    return binary


def build_worktree():
    sh("cargo", "build", "--release", "--locked", "--quiet", cwd=ROOT)
    return os.path.join(ROOT, "target", "release", "ihdyn")


def run_all(binary, scenarios, out_root, threads):
    env = dict(os.environ)
    env.pop("RAYON_NUM_THREADS", None)
    for s in scenarios:
        r = subprocess.run([binary, "-q", "--threads", str(threads), "run", s,
                            "--output-root", out_root], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  {os.path.basename(binary)} {s}: exit {r.returncode}: {r.stderr.strip()}")


def compare_dir(a, b):
    """(differences, figure differences) between two output folders."""
    diffs, figs = [], []
    names = sorted(set(os.listdir(a)) | set(os.listdir(b)))
    for n in names:
        pa, pb = os.path.join(a, n), os.path.join(b, n)
        if not os.path.exists(pa) or not os.path.exists(pb):
            where = "old" if os.path.exists(pa) else "new"
            (figs if n.endswith((".png", ".svg")) else diffs).append(f"{n}: only in {where}")
            continue
        if n == "manifest.json":
            ja, jb = scrub(json.load(open(pa))), scrub(json.load(open(pb)))
            if ja != jb:
                where = json_paths(ja, jb)
                more = f" (+{len(where) - 4} more)" if len(where) > 4 else ""
                diffs.append(f"{n}: differs at {', '.join(where[:4])}{more}")
        elif n.endswith((".csv", ".json")):
            if not filecmp.cmp(pa, pb, shallow=False):
                diffs.append(f"{n}: bytes differ")
        elif n.endswith((".png", ".svg")):
            if not filecmp.cmp(pa, pb, shallow=False):
                figs.append(n)
    return diffs, figs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new", nargs="?")
    ap.add_argument("--scenarios", default="scenarios/*.toml")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    old_bin = build(args.old)
    new_bin = build(args.new) if args.new else build_worktree()
    scenarios = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, args.scenarios)))
    tmp = tempfile.mkdtemp(prefix="ihdyn-compare-")
    old_out, new_out = os.path.join(tmp, "old"), os.path.join(tmp, "new")
    print(f"old {args.old}: {old_bin}\nnew {args.new or 'working tree'}: {new_bin}")
    print(f"{len(scenarios)} scenarios, {args.threads} threads, outputs in {tmp}")
    run_all(old_bin, scenarios, old_out, args.threads)
    run_all(new_bin, scenarios, new_out, args.threads)
    bad = 0
    for d in sorted(set(os.listdir(old_out)) | set(os.listdir(new_out))):
        a, b = os.path.join(old_out, d), os.path.join(new_out, d)
        if not (os.path.isdir(a) and os.path.isdir(b)):
            print(f"DIFFERENT {d}: output folder only in {'old' if os.path.isdir(a) else 'new'}")
            bad += 1
            continue
        diffs, figs = compare_dir(a, b)
        n = len([f for f in os.listdir(b) if f.endswith((".csv", ".json"))])
        if diffs:
            bad += 1
            print(f"DIFFERENT {d}: " + "; ".join(diffs))
        else:
            note = f" (figures changed: {', '.join(figs)})" if figs else ""
            print(f"identical {d}: {n} CSV/JSON files{note}")
    print(f"{bad} of {len(scenarios)} scenarios differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
