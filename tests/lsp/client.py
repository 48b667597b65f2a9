"""A minimal language-server client for the tests: `sw lsp` as a subprocess, spoken to in
JSON-RPC over its stdin and stdout (Content-Length framing), as an editor would."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


class Client:
    def __init__(self, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stackwise_dsl", "lsp"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
        )  # fmt: skip
        self.messages: queue.Queue = queue.Queue()
        self.pending: list[dict] = []  # notifications read while waiting for something else
        self.next_id = 0
        self.stderr: list[bytes] = []  # drained, so a chatty server never blocks on it
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()

    # --- the wire ---

    def _read(self) -> None:
        out = self.process.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(out.read(length)))

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def request(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        """The response's message (result or error) to a request."""
        self.next_id += 1
        mine = self.next_id
        self.send({"id": mine, "method": method, "params": params or {}})
        return self._wait(lambda m: m.get("id") == mine and "method" not in m, timeout)

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def _wait(self, wanted, timeout: float) -> dict:
        for i, m in enumerate(self.pending):
            if wanted(m):
                return self.pending.pop(i)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from sw lsp")
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no answer from sw lsp") from None
            if m.get("method") == "window/logMessage" or m.get("method") == "$/progress":
                continue
            if wanted(m):
                return m
            self.pending.append(m)

    # --- the protocol ---

    def initialize(self, root: Path, capabilities: dict | None = None) -> dict:
        answer = self.request("initialize", {"processId": None, "rootUri": root.as_uri(),
                                             "capabilities": capabilities or {}})  # fmt: skip
        self.notify("initialized", {})
        return answer["result"]

    def open(self, path: Path, text: str, version: int = 1) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": path.as_uri(), "languageId": "sw", "version": version, "text": text}})  # fmt: skip

    def change(self, path: Path, version: int, text: str, where: dict | None = None) -> None:
        change = {"text": text} if where is None else {"range": where, "text": text}
        self.notify("textDocument/didChange", {
            "textDocument": {"uri": path.as_uri(), "version": version},
            "contentChanges": [change]})  # fmt: skip

    def diagnostics(self, path: Path, version: int | None = None, timeout: float = 30) -> list:
        """The next diagnostics published for `path` (of `version`, when given)."""
        uri = path.as_uri()

        def wanted(m: dict) -> bool:
            if m.get("method") != "textDocument/publishDiagnostics":
                return False
            params = m["params"]
            return params["uri"] == uri and (version is None or params.get("version") == version)

        return self._wait(wanted, timeout)["params"]["diagnostics"]

    def at(self, method: str, path: Path, line: int, character: int) -> dict:
        return self.request(method, {"textDocument": {"uri": path.as_uri()},
                                     "position": {"line": line, "character": character}})  # fmt: skip

    def close(self) -> int:
        """Shut down and exit as an editor does; the server's exit code."""
        try:
            self.request("shutdown", timeout=10)
            self.notify("exit", {})
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
