#!/usr/bin/env python3
"""Checks one installed `mcpd` command the way a new user's first minutes use it.

    check.py --label L --version V --commit C [--cwd DIR] -- COMMAND...

COMMAND is how the user starts mcpd (`/venv/bin/mcpd`, `uvx ... mcpd@0.1.0`,
`npx -y mcpd@0.1.0`). It must:
  1. print its version, the commit it was built from and the MCP protocol versions;
  2. create a starter config (`init`) that `validate` accepts (exit 0), and fail a
     broken config with exit 1 and the problem on stdout (the exit code and stdout pass
     through any launcher);
  3. serve MCP over stdio: initialize, then tools/list lists the starter's tool; every
     line on stdout is a JSON-RPC message (a launcher adds nothing); and exit by itself
     once stdin closes, as hosts stop stdio servers;
  4. stop, mcpd included, on SIGTERM to the command (POSIX), as hosts also stop them;
     with --sighup, first reload on SIGHUP to the command (tools/list_changed).
Prints "LABEL: all checks passed", or what failed and exits 1. Standard library only.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEADLINE = 60.0  # seconds for any one step: npx and uvx start slowly on a busy machine


class Failed(Exception):
    pass


def run(cmd, cwd):
    try:
        p = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{' '.join(cmd)} did not finish in {DEADLINE:.0f} s") from e
    return p.returncode, p.stdout, p.stderr


def expect(cond, what, out="", err=""):
    if not cond:
        raise Failed(f"{what}\n--- stdout:\n{out}\n--- stderr:\n{err}")


def check_version(cmd, cwd, version, commit):
    code, out, err = run(cmd + ["--version"], cwd)
    expect(code == 0, f"--version exited {code}", out, err)
    lines = out.strip().splitlines()
    expect(len(lines) == 3, "--version prints three lines", out, err)
    expect(lines[0] == f"mcpd {version}", f"--version line 1 is 'mcpd {version}'", out, err)
    expect(lines[1] == f"commit: {commit}", f"--version line 2 is 'commit: {commit}'", out, err)
    protocols = lines[2].removeprefix("MCP protocol versions: ").split(", ")
    expect(
        lines[2].startswith("MCP protocol versions: ") and "2025-11-25" in protocols,
        "--version line 3 lists the MCP protocol versions, 2025-11-25 among them",
        out,
        err,
    )


def check_init_and_validate(cmd, cwd, work):
    starter = work / "starter"
    code, out, err = run(cmd + ["init", str(starter)], cwd)
    expect(code == 0, f"init exited {code}", out, err)
    code, out, err = run(cmd + ["validate", str(starter)], cwd)
    expect(code == 0 and out.startswith("ok: 1 tools"), f"validate of the starter exited {code}", out, err)

    broken = work / "broken"
    shutil.copytree(starter, broken)
    tool = broken / "tools.d" / "orders.list.yaml"
    tool.write_text(tool.read_text().replace("  method: GET", "  metod: GET"))
    code, out, err = run(cmd + ["validate", str(broken)], cwd)
    expect(code == 1, f"validate of a broken config exits 1, not {code}", out, err)
    expect("unknown field `metod`" in out, "the problem is printed on stdout", out, err)
    return starter


class Session:
    """`COMMAND serve --config DIR --no-watch` with stdio pipes and a line reader."""

    def __init__(self, cmd, cwd, config):
        self.proc = subprocess.Popen(
            cmd + ["serve", "--config", str(config), "--no-watch"],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group, so a failed check can end everything it started,
            # a binary a launcher left behind included.
            start_new_session=os.name == "posix",
        )
        self.lines = queue.Queue()
        self.stderr = []
        self.seen = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    # Bytes, not text: text mode would turn "\n" into "\r\n" on Windows.
    def _pump_stdout(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace"))
        self.lines.put(None)

    def _pump_stderr(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace"))

    def kill(self):
        if os.name == "posix":
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self.proc.kill()

    def fail(self, what):
        self.kill()
        raise Failed(
            f"{what}\n--- stdout:\n{''.join(self.seen)}\n--- stderr:\n{''.join(self.stderr)}"
        )

    def send(self, msg):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def next_line(self, end, waiting_for):
        try:
            return self.lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            self.fail(f"nothing on stdout in {DEADLINE:.0f} s, waiting for {waiting_for}")

    def reply(self, id_):
        end = time.monotonic() + DEADLINE
        while True:
            line = self.next_line(end, f"the reply to request {id_}")
            if line is None:
                self.fail(f"stdout closed before the reply to request {id_}")
            self.seen.append(line)
            try:
                msg = json.loads(line)
            except ValueError:
                self.fail(f"a line on stdout is not a JSON-RPC message: {line!r}")
            if msg.get("id") == id_:
                return msg

    def initialize(self):
        self.send(
            {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "packaging-check", "version": "0"},
            },
        }
    )
        init = self.reply(1)
        if init.get("result", {}).get("serverInfo", {}).get("name") != "mcpd":
            self.fail(f"initialize did not answer as mcpd: {init}")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def wait_stdout_closed(self, after):
        """Every process holding the stdout pipe (a launcher and mcpd) has exited."""
        end = time.monotonic() + DEADLINE
        while self.next_line(end, f"stdout to close after {after}") is not None:
            pass
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail(f"the command did not exit within {DEADLINE:.0f} s of {after}")


def check_stdio(cmd, cwd, config):
    s = Session(cmd, cwd, config)
    s.initialize()
    s.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    listed = s.reply(2)
    names = [t.get("name") for t in listed.get("result", {}).get("tools", [])]
    if names != ["orders_list"]:
        s.fail(f"tools/list gave {names}, expected ['orders_list']")
    s.proc.stdin.close()
    code = s.wait_stdout_closed("stdin closing")
    if code != 0:
        s.fail(f"exited {code} after stdin closed")


def check_signals(cmd, cwd, config, sighup):
    """With `sighup`, SIGHUP to the command reaches mcpd: it reloads the edited config
    and tells the client the tool list changed. Then a host that stops the server with
    SIGTERM stops mcpd too, not only a launcher in front of it: the stdout pipe, which
    mcpd holds, must close."""
    if os.name != "posix":
        return
    s = Session(cmd, cwd, config)
    s.initialize()
    if sighup:
        tool = Path(config) / "tools.d" / "orders.list.yaml"
        tool.write_text(tool.read_text().replace("title: List orders", "title: List the orders"))
        s.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + DEADLINE
        while True:
            line = s.next_line(end, "notifications/tools/list_changed after SIGHUP")
            if line is None:
                s.fail("stdout closed after SIGHUP: the signal ended mcpd instead of reloading it")
            s.seen.append(line)
            if json.loads(line).get("method") == "notifications/tools/list_changed":
                break
    s.proc.send_signal(signal.SIGTERM)
    try:
        s.wait_stdout_closed("SIGTERM")
    finally:
        s.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--cwd", default=None)
    parser.add_argument(
        "--sighup", action="store_true", help="also check that SIGHUP reaches mcpd (a reload)"
    )
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcpd-packaging-") as tmp:
        try:
            check_version(args.command, args.cwd, args.version, args.commit)
            starter = check_init_and_validate(args.command, args.cwd, Path(tmp))
            check_stdio(args.command, args.cwd, starter)
            check_signals(args.command, args.cwd, starter, args.sighup)
        except Failed as e:
            print(f"{args.label}: FAILED: {e}")
            return 1
    print(f"{args.label}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
