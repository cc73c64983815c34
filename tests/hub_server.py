"""A real HTTP server that speaks the part of the Hugging Face Hub's API that downloads and uploads use.

It serves repos from folders: ``ROOT/models/<owner>/<name>`` and ``ROOT/datasets/<owner>/<name>``.
Point ``HF_ENDPOINT`` at it and ``from_pretrained``, ``load_dataset`` (streaming too) and
``hf_hub_download`` read those folders as Hub repos; ``create_repo``, ``create_branch`` and
``create_commit`` write them (Parquet files through the legacy LFS protocol, as the Hub asks of clients
without ``hf_xet`` or with ``HF_HUB_DISABLE_XET=1``; other files inline). Every branch and pull
request shows the one folder, at the commit last made. Run as a process:
``python tests/hub_server.py ROOT PORT``; ``GET /requests`` lists the paths it was asked for and
``GET /commits`` the repos, branches and commits made (with their files and the token sent).
"""

from __future__ import annotations

import base64
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


def sha(repo: Path) -> str:
    """The repo's last commit: `COMMIT` until one is made."""
    marker = repo.parent / f".{repo.name}.commit"
    return marker.read_text() if marker.is_file() else COMMIT


class HubHandler(BaseHTTPRequestHandler):
    root: Path
    requests: list[str] = []
    writes: list[dict] = []

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

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def record(self, action: str, **details) -> None:
        HubHandler.writes.append({"action": action, "token": self.headers.get("Authorization"), **details})

    def url(self, repo_type: str, repo_id: str) -> str:
        return f"http://{self.headers['Host']}/{'datasets/' if repo_type == 'datasets' else ''}{repo_id}"

    def create_repo(self) -> None:
        """``POST /api/repos/create``."""
        form = json.loads(self.body())
        repo_type = {"dataset": "datasets", None: "models", "model": "models"}[form.get("type")]
        repo_id = f"{form['organization']}/{form['name']}" if form.get("organization") else form["name"]
        (self.root / repo_type / repo_id).mkdir(parents=True, exist_ok=True)
        self.record("create_repo", repo_type=repo_type, repo_id=repo_id, visibility=form.get("visibility"))
        self.reply_json({"url": self.url(repo_type, repo_id)})

    def commit(self, repo_type: str, repo_id: str, repo: Path, revision: str, query: str) -> None:
        """``POST /api/{type}/{id}/commit/{revision}``: an ndjson header, then files (base64) and deletions."""
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        added, deleted = {}, []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                added[value["path"]] = (self.root / ".lfs" / value["oid"]).read_bytes()
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key != "header":
                raise ValueError(f"unsupported commit entry {key!r}")
        for path in deleted:
            (repo / path).unlink()
        for path, content in added.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(content)
        oid = hashlib.sha1(f"{repo_id} {len(HubHandler.writes)}".encode()).hexdigest()
        (repo.parent / f".{repo.name}.commit").write_text(oid)
        create_pr = "create_pr=1" in query
        pulls = sum(w["action"] == "commit" and w["create_pr"] and w["repo_id"] == repo_id for w in HubHandler.writes)
        self.record(
            "commit", repo_type=repo_type, repo_id=repo_id, revision=revision, create_pr=create_pr,
            summary=lines[0]["value"]["summary"], added=sorted(added), deleted=sorted(deleted),
        )  # fmt: skip
        url = self.url(repo_type, repo_id)
        pull = f"{url}/discussions/{pulls + 1}" if create_pr else None
        self.reply_json({"commitUrl": f"{url}/commit/{oid}", "commitOid": oid, "pullRequestUrl": pull})

    def repo(self, repo_type: str, owner: str, name: str) -> Path | None:
        folder = self.root / repo_type / owner / name
        return folder if folder.is_dir() else None

    def api(self, parts: list[str], query: str) -> None:
        """``/api/{models|datasets}/{owner}/{name}[/revision/{rev} | /tree/{rev}/{path} | /paths-info/{rev} |
        /branch/{name} | /preupload/{rev} | /commit/{rev}]``."""
        repo_type, owner, name, rest = parts[0], parts[1], parts[2], parts[3:]
        repo = self.repo(repo_type, owner, name)
        if repo is None:
            return self.not_found("RepoNotFound")
        if not rest or rest[0] == "revision":
            files = sorted(path for path in repo.rglob("*") if path.is_file())
            siblings = [{"rfilename": path.relative_to(repo).as_posix()} for path in files]
            return self.reply_json(
                {"id": f"{owner}/{name}", "sha": sha(repo), "private": False, "disabled": False, "gated": False,
                 "siblings": siblings}
            )  # fmt: skip
        if rest[0] == "branch":
            self.record("create_branch", repo_type=repo_type, repo_id=f"{owner}/{name}", branch=rest[1])
            return self.reply_json({})
        if rest[0] == "preupload":
            files = json.loads(self.body())["files"]
            modes = [("lfs" if file["path"].endswith(".parquet") else "regular") for file in files]
            return self.reply_json(
                {"files": [{"path": f["path"], "uploadMode": mode, "shouldIgnore": False} for f, mode in zip(files, modes)]}
            )
        if rest[0] == "commit":
            return self.commit(repo_type, f"{owner}/{name}", repo, rest[1], query)
        if rest[0] == "tree":
            folder = repo.joinpath(*rest[2:])
            if not folder.is_dir():
                return self.not_found()
            recursive = "recursive=true" in query.lower()
            children = folder.rglob("*") if recursive else folder.iterdir()
            return self.reply_json([tree_entry(repo, path) for path in sorted(children)])
        if rest[0] == "paths-info":
            form = urllib.parse.parse_qs(self.body().decode())
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
        self.reply(200, data, {"X-Repo-Commit": sha(repo), "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    def route(self) -> None:
        url = urllib.parse.urlparse(self.path)
        parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/")]
        if parts == ["requests"]:
            return self.reply_json(HubHandler.requests)
        if parts == ["commits"]:
            return self.reply_json(HubHandler.writes)
        HubHandler.requests.append(f"{self.command} {url.path}")
        if parts == ["api", "repos", "create"]:
            return self.create_repo()
        if url.path.endswith(".git/info/lfs/objects/batch"):  # LFS uploads: each object is PUT to /lfs/{oid}
            objects = json.loads(self.body())["objects"]
            host = f"http://{self.headers['Host']}"
            return self.reply_json({"objects": [
                {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{host}/lfs/{o['oid']}"}}}
                for o in objects
            ]})  # fmt: skip
        if parts[0] == "lfs" and self.command == "PUT":
            (self.root / ".lfs").mkdir(exist_ok=True)
            (self.root / ".lfs" / parts[1]).write_bytes(self.body())
            return self.reply_json({})
        if parts == ["api", "validate-yaml"]:  # cards are checked by the tests that read them back
            return self.reply_json({})
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in REPO_TYPES:
            return self.api(parts[1:], url.query)
        repo_type = "datasets" if parts[0] == "datasets" else "models"
        parts = parts[1:] if parts[0] == "datasets" else parts
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(repo_type, parts[0], parts[1], parts[4:])
        return self.not_found()

    do_GET = do_HEAD = do_POST = do_PUT = route

    def log_message(self, format, *args) -> None:  # one line per request is kept in `requests` instead
        pass


def main(root: str, port: int) -> None:
    HubHandler.root = Path(root)
    ThreadingHTTPServer(("127.0.0.1", port), HubHandler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
