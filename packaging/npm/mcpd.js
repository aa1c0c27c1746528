#!/usr/bin/env node
// The `mcpd` command of the npm package: starts the mcpd binary from the platform
// package npm installed beside this one (one optional dependency per platform, chosen
// by its `os` and `cpu` fields), passing arguments, stdio, signals and the exit status
// through. stdin and stdout are the binary's own (inherited, not copied), so the MCP
// stdio transport sees exactly what mcpd writes. Generated into the package by
// scripts/package.py; PLATFORMS is filled in there.
"use strict";

const { spawn } = require("child_process");

const PLATFORMS = __PLATFORMS__;

function fail(message) {
  process.stderr.write(`mcpd: ${message}\n`);
  process.exit(2);
}

function binaryPath() {
  const key = `${process.platform}-${process.arch}`;
  const pkg = PLATFORMS[key];
  if (!pkg) {
    fail(
      `there is no prebuilt mcpd for ${key} (there is for ${Object.keys(PLATFORMS).join(", ")}); ` +
        "build it from source with `cargo install --path .` in a checkout of mcpd",
    );
  }
  const exe = process.platform === "win32" ? "mcpd.exe" : "mcpd";
  try {
    return require.resolve(`${pkg}/bin/${exe}`);
  } catch {
    fail(
      `the package ${pkg}, which holds mcpd's binary for ${key}, is not installed. ` +
        "npm leaves optional dependencies out with --omit=optional (or --no-optional, " +
        "or omit=optional in .npmrc): install mcpd again without that",
    );
  }
}

const bin = binaryPath();
const child = spawn(bin, process.argv.slice(2), { stdio: "inherit", windowsHide: true });

// A host stops a server with SIGTERM (or SIGINT); SIGHUP reloads mcpd's config. They
// reach this process, not the binary, so pass them on.
const forwarded = ["SIGTERM", "SIGINT", "SIGHUP"].filter(
  (s) => process.platform !== "win32" || s !== "SIGHUP",
);
for (const signal of forwarded) {
  process.on(signal, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  });
}

// npx runs this file through `sh -c`, and passes a host's SIGTERM to that shell only:
// the shell dies and this process is handed to another parent. Notice that and stop
// the binary, so it is not left running without its host. (POSIX only: Windows does
// not hand orphans over.)
if (process.platform !== "win32") {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
    }
  }, 250).unref();
}

child.on("error", (e) => fail(`cannot start ${bin}: ${e.message}`));
child.on("exit", (code, signal) => {
  if (signal) {
    // End the same way, so the caller sees the signal, not an exit code.
    for (const s of forwarded) process.removeAllListeners(s);
    process.kill(process.pid, signal);
    // A signal whose default does not end a process: exit as a shell would report it.
    setTimeout(() => process.exit(128 + (require("os").constants.signals[signal] || 0)), 100);
    return;
  }
  process.exit(code === null ? 1 : code);
});
