#!/usr/bin/env python3
"""Builds mcpd's distributions: the PyPI wheel, the npm packages, the release archives.

One script for both users of these steps: tests/packaging/run (which builds them here
and installs them the way a user would) and .github/workflows/release.yml (which builds
them for every platform on a tag and publishes them). Standard library only; needs
maturin (wheel) and npm (npm packages) on PATH.

    scripts/package.py wheel   --out DIR [--release] [--target TRIPLE] [--zig]
    scripts/package.py npm     --bin PATH --target TRIPLE --out DIR
    scripts/package.py launcher --out DIR
    scripts/package.py archive --bin PATH --target TRIPLE --out DIR
    scripts/package.py version

`wheel` runs maturin (bindings = "bin" in pyproject.toml): with --release it is the
optimised, stripped build the release publishes; without, cargo's dev profile, which
reuses what `cargo build` already compiled (the tests prove the packaging, not the
optimiser). `npm` packs the platform package holding one binary (`@mcpd/linux-x64`,
...); `launcher` packs the `mcpd` package whose `mcpd` command starts it. Each prints
the path of what it made.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The npm scope of the per-platform packages: `@mcpd/linux-x64` and so on.
NPM_SCOPE = "@mcpd"

# Rust target triple -> (npm `os`, npm `cpu`). The Linux binaries are static musl
# builds, so one package serves glibc and musl systems alike; a gnu triple (a local
# test build) maps to the same package.
TARGETS = {
    "x86_64-unknown-linux-musl": ("linux", "x64"),
    "aarch64-unknown-linux-musl": ("linux", "arm64"),
    "x86_64-unknown-linux-gnu": ("linux", "x64"),
    "aarch64-unknown-linux-gnu": ("linux", "arm64"),
    "x86_64-apple-darwin": ("darwin", "x64"),
    "aarch64-apple-darwin": ("darwin", "arm64"),
    "x86_64-pc-windows-msvc": ("win32", "x64"),
}

# The platforms the release publishes, each one package; the launcher depends on all.
PUBLISHED = ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64", "win32-x64"]

DESCRIPTION = (
    "A declarative MCP server: internal HTTP APIs as governed tools, described in YAML"
)


class UsageError(Exception):
    """A bad argument: printed as `error: ...`, exit 2."""


def version():
    """The crate's version, from Cargo.toml's [package] table."""
    text = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    package = text.split("[package]", 1)[-1].split("\n[", 1)[0]
    m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.MULTILINE)
    if not m:
        raise UsageError("Cargo.toml has no [package] version")
    return m.group(1)


def platform(target):
    """The npm platform name (`linux-x64`) of a Rust target triple."""
    if target not in TARGETS:
        raise UsageError(
            f"unknown target '{target}'; one of: {', '.join(sorted(TARGETS))}"
        )
    os_name, cpu = TARGETS[target]
    return f"{os_name}-{cpu}"


def tool(name):
    """The path of a program on PATH, or a UsageError saying how to get it."""
    found = shutil.which(name)
    if not found:
        raise UsageError(f"'{name}' is not on PATH (docs/install.md: building packages)")
    return found


def run(cmd, **kw):
    print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def write_json(path, value):
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def npm_pack(stage, out):
    """`npm pack` of a staged package directory into `out`; returns the tarball."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [tool("npm"), "pack", "--json", "--pack-destination", str(out.resolve())],
        cwd=stage,
        check=True,
        capture_output=True,
        text=True,
    )
    name = json.loads(result.stdout)[0]["filename"]
    return out / name


def cmd_wheel(args):
    out = Path(args.out)
    cmd = [tool("maturin"), "build", "--locked", "--out", out]
    if args.release:
        cmd += ["--release", "--strip"]
    else:
        cmd += ["--profile", "dev"]
    if args.target:
        cmd += ["--target", args.target]
        if args.target.endswith("-linux-musl"):
            # A static musl binary runs on glibc and musl systems alike: tag the wheel
            # for both, so pip on either picks it.
            cmd += ["--compatibility", "manylinux_2_17", "musllinux_1_2"]
    if args.zig:
        cmd.append("--zig")
    run(cmd, cwd=ROOT)
    made = list(out.glob("*.whl"))
    if not made:
        raise UsageError(f"maturin wrote no wheel into {out}")
    # The one maturin just wrote (or rewrote) is the newest.
    print(max(made, key=lambda p: p.stat().st_mtime))


def stage_dir(out):
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=out))
    return stage


def cmd_npm(args):
    v = version()
    name = platform(args.target)
    bin_path = Path(args.bin)
    if not bin_path.is_file():
        raise UsageError(f"--bin '{bin_path}' is not a file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stage = stage_dir(out)
    try:
        os_name, cpu = TARGETS[args.target]
        exe = "mcpd.exe" if os_name == "win32" else "mcpd"
        (stage / "bin").mkdir()
        target = stage / "bin" / exe
        shutil.copyfile(bin_path, target)
        # Artifacts moved between CI jobs lose their mode bits: set them here.
        target.chmod(0o755)
        write_json(
            stage / "package.json",
            {
                "name": f"{NPM_SCOPE}/{name}",
                "version": v,
                "description": f"The mcpd binary for {name}; install `mcpd`, which picks it",
                "license": "Apache-2.0",
                "os": [os_name],
                "cpu": [cpu],
                "files": ["bin/"],
                "preferUnplugged": True,
            },
        )
        (stage / "README.md").write_text(
            f"# {NPM_SCOPE}/{name}\n\nThe `mcpd` binary for {name}. Do not install it"
            " directly: install `mcpd` (`npx -y mcpd`), which depends on the package"
            " for each platform and starts the one npm installed.\n",
            encoding="utf-8",
        )
        print(npm_pack(stage, out))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cmd_launcher(args):
    v = version()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stage = stage_dir(out)
    try:
        platforms = {p: f"{NPM_SCOPE}/{p}" for p in PUBLISHED}
        source = (ROOT / "packaging/npm/mcpd.js").read_text(encoding="utf-8")
        if "__PLATFORMS__" not in source:
            raise UsageError("packaging/npm/mcpd.js lost its __PLATFORMS__ placeholder")
        (stage / "bin").mkdir()
        launcher = stage / "bin" / "mcpd.js"
        launcher.write_text(
            source.replace("__PLATFORMS__", json.dumps(platforms, indent=2)),
            encoding="utf-8",
        )
        launcher.chmod(0o755)
        write_json(
            stage / "package.json",
            {
                "name": "mcpd",
                "version": v,
                "description": DESCRIPTION,
                "license": "Apache-2.0",
                "keywords": ["mcp", "model-context-protocol", "mcp-server"],
                "bin": {"mcpd": "bin/mcpd.js"},
                "files": ["bin/"],
                "engines": {"node": ">=18"},
                # Exact versions: the launcher and the binary are one release.
                "optionalDependencies": {pkg: v for pkg in platforms.values()},
            },
        )
        shutil.copyfile(ROOT / "README.md", stage / "README.md")
        print(npm_pack(stage, out))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cmd_archive(args):
    v = version()
    platform(args.target)  # checks the triple
    bin_path = Path(args.bin)
    if not bin_path.is_file():
        raise UsageError(f"--bin '{bin_path}' is not a file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"mcpd-{v}-{args.target}"
    windows = "windows" in args.target
    exe = "mcpd.exe" if windows else "mcpd"
    files = [(bin_path, exe, 0o755), (ROOT / "README.md", "README.md", 0o644)]
    if windows:
        path = out / f"{base}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for src, name, _ in files:
                z.write(src, f"{base}/{name}")
    else:
        path = out / f"{base}.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            for src, name, mode in files:
                info = t.gettarinfo(str(src), f"{base}/{name}")
                info.mode = mode
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(src, "rb") as f:
                    t.addfile(info, f)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / f"{path.name}.sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    print(path)


def main(argv):
    parser = argparse.ArgumentParser(
        prog="scripts/package.py", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheel", help="the PyPI wheel holding the binary (maturin)")
    w.add_argument("--out", required=True)
    w.add_argument("--release", action="store_true", help="optimised and stripped")
    w.add_argument("--target", help="a Rust target triple (default: this machine)")
    w.add_argument("--zig", action="store_true", help="link with zig (cross builds)")
    n = sub.add_parser("npm", help="the npm package of one platform's binary")
    n.add_argument("--bin", required=True)
    n.add_argument("--target", required=True)
    n.add_argument("--out", required=True)
    la = sub.add_parser("launcher", help="the `mcpd` npm package (the launcher)")
    la.add_argument("--out", required=True)
    a = sub.add_parser("archive", help="the release archive of one platform's binary")
    a.add_argument("--bin", required=True)
    a.add_argument("--target", required=True)
    a.add_argument("--out", required=True)
    sub.add_parser("version", help="print the version packages get (Cargo.toml's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "version":
            print(version())
        else:
            globals()[f"cmd_{args.command}"](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: {e}", file=sys.stderr)
        if getattr(e, "stderr", None):
            print(e.stderr, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
