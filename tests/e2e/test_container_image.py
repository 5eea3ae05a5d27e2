"""The container image is built from only what it copies (.dockerignore) and runs payorch
as an unprivileged user, and what it writes still works: read from the Dockerfile,
.dockerignore and docker-compose.yml (no Docker engine here), then
the real server run the way the image runs it, as that user in a directory it owns.

What this cannot show without Docker: that the image builds, and that the base image's
`useradd` made the user. The first part holds the files to what the second part runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from payments.orchestrator.v1 import orchestrator_pb2 as orch
from payments.orchestrator.v1 import orchestrator_pb2_grpc as orch_grpc
from payorch.adapters.worker_lock import lock_path
from payorch.entrypoints.cli import DEMO_KEY_FILE
from payorch.settings import Settings
from tests.e2e.server import start_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(ROOT / "Dockerfile")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def image_user() -> tuple[int, int]:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the image sets no USER: payorch runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and (not gid or gid.isdigit()), (
        f"USER {users[-1]}: numeric, so a runtime's non-root check can verify it"
    )
    return int(uid), int(gid or uid)


def image_workdir() -> str:
    return [args for word, args in final_stage() if word == "WORKDIR"][-1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in final_stage():
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def compose_healthcheck_command() -> list[str]:
    """The payorch service's healthcheck `test` (a YAML list of strings)."""
    text = (ROOT / "docker-compose.yml").read_text()
    block = re.search(r"healthcheck:\n(?:\s*#.*\n)*\s*test:\n((?:\s+- .*\n)+)", text)
    assert block, "the payorch service has no healthcheck test list"
    return [line.strip()[2:] for line in block.group(1).splitlines()]


class DockerIgnore:
    """A .dockerignore applied as Docker applies it (moby's patternmatcher): lines
    trimmed, `#` comments and blanks skipped, each pattern cleaned and anchored at the
    context root; `*` and `?` stop at `/`, `**` spans directories; a pattern matching
    a parent directory matches what is under it; the last matching line decides, and
    `!` makes it an exception."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[re.Pattern[str], bool]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.rules.append((re.compile(self._regex(pattern)), exception))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out += ".*" if i == len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end
            else:
                out += re.escape(ch)
            i += 1
        return out + "$"

    def excludes(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for regex, exception in self.rules:
            if any(regex.match(c) for c in candidates):
                excluded = not exception
        return excluded


def build_context_rules() -> DockerIgnore:
    path = ROOT / ".dockerignore"
    assert path.is_file(), "no .dockerignore: the whole tree is sent to the build daemon"
    return DockerIgnore(path.read_text())


def test_the_dockerignore_reading_follows_dockers_documented_examples():
    """The reader above, held to the examples of Docker's own documentation."""
    temp = DockerIgnore("*/temp*\n*/*/temp*\ntemp?")
    assert temp.excludes("somedir/temporary.txt") and temp.excludes("somedir/temp")
    assert temp.excludes("somedir/subdir/temporary.txt") and temp.excludes("tempa")
    assert not temp.excludes("temporary.txt") and not temp.excludes("a/b/c/temp")
    assert DockerIgnore("**/*.go").excludes("main.go")
    assert DockerIgnore("**/*.go").excludes("a/b/main.go")
    markdown = DockerIgnore("*.md\n!README*.md\nREADME-secret.md")
    assert not markdown.excludes("README.md") and markdown.excludes("README-secret.md")
    assert markdown.excludes("CHANGELOG.md")
    assert not DockerIgnore("*.md\nREADME-secret.md\n!README*.md").excludes("README-secret.md")
    assert DockerIgnore("/foo/bar").excludes("foo/bar/baz") and DockerIgnore("foo/").excludes("foo")
    assert not DockerIgnore("bar").excludes("foo/bar"), "anchored at the root, unlike git"


# The demo key the server writes, its default database, and what a checkout holds.
DATABASE = Settings.from_env({}).database_url
KEPT_OUT = [
    DEMO_KEY_FILE,
    *(DATABASE.removeprefix("sqlite:///") + end for end in ("", "-wal", "-shm", "-journal")),
    *(str(lock_path(DATABASE, kind)) for kind in ("scheduler", "webhook-dispatcher")),
    ".git", ".git/config", ".venv/bin/python", ".venv/lib/python3.11/site-packages/x.py",
    "node_modules/.bin/buf", "node_modules/@bufbuild/buf/package.json",
    ".pytest_cache/v/cache/lastfailed", ".hypothesis/examples/ab/cd", ".mypy_cache/3.11/x.json",
    ".ruff_cache/CACHEDIR.TAG", "bench/results/run.json", "tests/e2e/server.py",
    "src/payorch/__pycache__/cli.cpython-311.pyc", "src/payorch.egg-info/PKG-INFO",
    "build/lib/payorch/__init__.py", "dist/payorch-0.1.0.tar.gz", ".env",
]  # fmt: skip


@pytest.mark.parametrize("path", KEPT_OUT)
def test_the_build_context_leaves_out_keys_databases_and_local_artefacts(path):
    assert build_context_rules().excludes(path), f"{path} is sent to the build daemon"


def tracked_files(source: str) -> list[str]:
    """The project's own files under `source`: what git tracks, so that what an install
    leaves in the tree (`src/payorch.egg-info`, bytecode) is not asked of the context."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", source],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [path for path in listed.split("\0") if path]


def test_the_build_context_holds_every_file_the_dockerfile_copies():
    rules = build_context_rules()
    sources = [
        source
        for word, args in instructions(ROOT / "Dockerfile")
        if word in ("COPY", "ADD")
        for source in shlex.split(args)[:-1]
        if not source.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "src"} <= set(sources), sources
    for source in sources:
        kept = tracked_files(source)
        assert kept, f"COPY {source}: nothing there"
        left_out = [path for path in kept if rules.excludes(path)]
        assert not left_out, f"COPY {source} would miss {left_out[:5]}"


def test_the_image_runs_as_a_numeric_non_root_user():
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    steps = final_stage()
    user_at = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert steps[-1][0] == "CMD" and user_at < len(steps) - 1, "USER comes before CMD"
    # No step after USER installs anything (it would run unprivileged and fail).
    assert not [args for word, args in steps[user_at:] if word == "RUN"]


def test_the_working_directory_is_made_for_that_user_and_holds_every_default_path():
    uid, gid = image_user()
    workdir = image_workdir()
    assert PurePosixPath(workdir).is_absolute()
    runs = " ".join(args for word, args in final_stage() if word == "RUN")
    made = re.search(rf"install -d -o {uid} -g {gid} -m 07[57]0 {re.escape(workdir)}\b", runs)
    assert made, f"{workdir} is not created owned by {uid}:{gid}"
    # The paths payorch writes by default are relative: they land in the workdir.
    database = Settings.from_env({}).database_url.removeprefix("sqlite:///")
    for relative in (database, DEMO_KEY_FILE):
        assert not PurePosixPath(relative).is_absolute(), relative
        assert ".." not in PurePosixPath(relative).parts


def test_the_image_listens_beyond_loopback_and_compose_checks_readiness_on_its_port():
    env = image_env()
    assert env["PAYORCH_LISTEN"].startswith("0.0.0.0:")
    assert env["PAYORCH_HTTP_HOST"] == "0.0.0.0"
    command = compose_healthcheck_command()
    assert command[:2] == ["CMD", "python"], "the image has no curl or shell tools"
    url = re.search(r"http://127\.0\.0\.1:(\d+)/readyz", command[-1])
    assert url, command
    compose = (ROOT / "docker-compose.yml").read_text()
    port = re.search(r'PAYORCH_HTTP_PORT: "(\d+)"', compose)
    assert port and url.group(1) == port.group(1) == env["PAYORCH_HTTP_PORT"]
    # Nothing in compose puts the services back on root.
    assert not re.search(r"^\s+user:", compose, re.MULTILINE)


@pytest.fixture
def image_workdir_copy() -> Iterator[Path]:
    """A directory standing for the image's workdir: owned by the image's user, mode
    0750. Not under pytest's tmp_path, whose parents only root may enter."""
    uid, gid = image_user()
    path = Path(tempfile.mkdtemp(prefix="payorch-image-"))
    os.chown(path, uid, gid)
    path.chmod(0o750)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def interpreter_for(uid: int) -> tuple[str, dict[str, str]]:
    """An interpreter `uid` can run payorch with, and the environment it needs.

    This one, when `uid` may read it. Where it lives under a directory only root may
    enter (a pyenv under /root, as on this project's machines and CI), the system's
    Python of the same minor version, given this one's packages and source by path.
    """
    if os.geteuid() != 0:
        pytest.fail("the image-user test starts a process as another user: run it as root")
    paths = [str(ROOT / "src"), str(ROOT), sysconfig.get_path("purelib")]
    paths += [sysconfig.get_path("platlib")]
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [(sys.executable, {})]
    for system in (Path("/usr/bin") / minor, Path("/usr/local/bin") / minor):
        if system.exists():
            candidates.append((str(system), {"PYTHONPATH": os.pathsep.join(paths)}))
    tried = []
    for python, env in candidates:
        try:
            done = subprocess.run(
                [python, "-c", "import payorch.entrypoints.cli"],
                user=uid,
                group=uid,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
            )
        except OSError as exc:  # not even startable by `uid`
            tried.append(f"{python}: {exc}")
            continue
        if done.returncode == 0:
            return python, env
        tried.append(f"{python}: {done.stderr.strip().splitlines()[-1:]}")
    pytest.fail(f"no interpreter uid {uid} can run payorch with: {tried}")


def test_the_server_runs_as_the_image_user_with_its_defaults_and_passes_the_healthcheck(
    image_workdir_copy,
):
    uid, _ = image_user()
    python = interpreter_for(uid)
    workdir = image_workdir_copy
    # As the image runs it: its ENV (ports made free ones), the default SQLite database
    # in the working directory, plus the other paths payorch writes.
    env = {
        **image_env(),
        "HOME": str(workdir),
        "PAYORCH_DATABASE_URL": Settings().database_url,
        "PAYORCH_LISTEN": "127.0.0.1:0",
        "PAYORCH_HTTP_HOST": "127.0.0.1",
        "PAYORCH_HTTP_PORT": "0",
        "PAYORCH_DEMO_KEY_FILE": DEMO_KEY_FILE,
        "PAYORCH_RETROSPECTIVE_DIR": "retrospectives",
        # None given: the key sealing stored secrets is made beside the database.
        "PAYORCH_SECRETS_KEY": "",
    }
    server = start_server(workdir, env["PAYORCH_DATABASE_URL"], env=env, user=uid, python=python)
    try:
        sealing = (workdir / Settings().database_url.removeprefix("sqlite:///")).with_name(
            "payorch.db.secrets-key"
        )
        assert sealing.stat().st_uid == uid and sealing.stat().st_mode & 0o777 == 0o600
        key = (workdir / DEMO_KEY_FILE).read_text().strip()
        with server.channel() as channel:
            paid = orch_grpc.PaymentOrchestratorStub(channel).CreatePayment(
                orch.CreatePaymentRequest(
                    request_id="image-user-payment",
                    amount_minor=1999,
                    currency="usd",
                    payment_method="pm_card_visa",
                ),
                metadata=[("authorization", f"Bearer {key}")],
                timeout=20,
            )
        assert paid.payment.payment_id.startswith("pay_")
        # docker-compose's healthcheck, run as the same user against this server.
        port = server.http_address.rsplit(":", 1)[1]
        check = [arg.replace(":9464/", f":{port}/") for arg in compose_healthcheck_command()]
        assert check[1] == "python"
        done = subprocess.run(
            [python[0], *check[2:]],
            user=uid,
            group=uid,
            env={**os.environ, **python[1]},
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    finally:
        assert server.stop() == 0, server.log()
    written = [p for p in workdir.rglob("*") if not p.name.startswith("server-")]
    assert {p.name for p in written} >= {"payorch.db", "demo-key"}
    assert {p.stat().st_uid for p in written} == {uid}, "written by the image's user"
