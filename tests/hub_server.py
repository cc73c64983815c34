"""A real HTTP server that speaks the part of the Hugging Face Hub's API that downloads use.

It serves repos from folders: ``ROOT/models/<owner>/<name>`` and ``ROOT/datasets/<owner>/<name>``,
every one at a single commit. Point ``HF_ENDPOINT`` at it and ``from_pretrained``,
``load_dataset`` (streaming too) and ``hf_hub_download`` read those folders as Hub repos.
Run as a process: ``python tests/hub_server.py ROOT PORT``; ``GET /requests`` lists the paths it
was asked for.
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_TYPES = {"models": "models", "datasets": "datasets"}


def tree_entry(repo: Path, path: Path) -> dict:
    relative = path.relative_to(repo).as_posix()
    if path.is_dir():
        return {"type": "directory", "path": relative, "oid": COMMIT}
    data = path.read_bytes()
    return {"type": "file", "path": relative, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}


class HubHandler(BaseHTTPRequestHandler):
    root: Path
    requests: list[str] = []

    def reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, payload) -> None:
        self.reply(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def not_found(self, code: str = "EntryNotFound") -> None:
        self.reply(404, b"", {"X-Error-Code": code, "X-Error-Message": f"{code}: {self.path}"})

    def repo(self, repo_type: str, owner: str, name: str) -> Path | None:
        folder = self.root / repo_type / owner / name
        return folder if folder.is_dir() else None

    def api(self, parts: list[str], query: str) -> None:
        """``/api/{models|datasets}/{owner}/{name}[/revision/{rev} | /tree/{rev}/{path} | /paths-info/{rev}]``."""
        repo_type, owner, name, rest = parts[0], parts[1], parts[2], parts[3:]
        repo = self.repo(repo_type, owner, name)
        if repo is None:
            return self.not_found("RepoNotFound")
        if not rest or rest[0] == "revision":
            files = sorted(path for path in repo.rglob("*") if path.is_file())
            siblings = [{"rfilename": path.relative_to(repo).as_posix()} for path in files]
            return self.reply_json(
                {"id": f"{owner}/{name}", "sha": COMMIT, "private": False, "disabled": False, "gated": False,
                 "siblings": siblings}
            )  # fmt: skip
        if rest[0] == "tree":
            folder = repo.joinpath(*rest[2:])
            if not folder.is_dir():
                return self.not_found()
            recursive = "recursive=true" in query.lower()
            children = folder.rglob("*") if recursive else folder.iterdir()
            return self.reply_json([tree_entry(repo, path) for path in sorted(children)])
        if rest[0] == "paths-info":
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            paths = [repo / path for path in form.get("paths", [])]
            return self.reply_json([tree_entry(repo, path) for path in paths if path.exists()])
        return self.not_found()

    def resolve(self, repo_type: str, owner: str, name: str, path: list[str]) -> None:
        """``/[datasets/]{owner}/{name}/resolve/{rev}/{path}``: the file, with the headers downloads check."""
        repo = self.repo(repo_type, owner, name)
        if repo is None:
            return self.not_found("RepoNotFound")
        file = repo.joinpath(*path)
        if not file.is_file():
            return self.not_found()
        data = file.read_bytes()
        self.reply(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    def route(self) -> None:
        url = urllib.parse.urlparse(self.path)
        parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/")]
        if parts == ["requests"]:
            return self.reply_json(HubHandler.requests)
        HubHandler.requests.append(f"{self.command} {url.path}")
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in REPO_TYPES:
            return self.api(parts[1:], url.query)
        repo_type = "datasets" if parts[0] == "datasets" else "models"
        parts = parts[1:] if parts[0] == "datasets" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(repo_type, parts[0], parts[1], parts[4:])
        return self.not_found()

    do_GET = do_HEAD = do_POST = route

    def log_message(self, format, *args) -> None:  # one line per request is kept in `requests` instead
        pass


def main(root: str, port: int) -> None:
    HubHandler.root = Path(root)
    ThreadingHTTPServer(("127.0.0.1", port), HubHandler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
