"""The container image and its compose integration (issue 6), checked without a Docker engine.

Static part: the Dockerfile, .dockerignore and the compose files are parsed; the hub's
`store` service (quoted from the integration guide) and `docker-compose.override.yml` are
merged with compose's rules (tests/support/compose_merge.py) and every promised property is checked.

Runtime part: the image is rebuilt natively. The build context (after .dockerignore) is
copied the way the Dockerfile's COPY instructions copy it, the dependencies come from the
venv (same pinned requirements.txt), and the processes run with the image's user (uid/gid
999 via setpriv when the tests run as root), the Dockerfile's ENV, the compose service's
environment (hosts `postgres`/`redis`/`registry` mapped to 127.0.0.1), the image's CMD or
the compose `command`, and a private temporary directory standing in for the /tmp tmpfs.
The only deliberate difference is PORT: a free port instead of 8082.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests
import yaml

from tests.support import dockerfile
from tests.support.common import ROOT, TOKEN, free_port, wait_for
from tests.support.compose_merge import active_services, duration_seconds, interpolate, merge, merge_service

VENV_BIN = Path(sys.executable).parent
IMAGE_UID = 999
GUIDE = ROOT.parent / "shared" / "spec" / "INFRA_INTEGRATION.md"

# The hub's `store` service, quoted from the integration guide ("Compose Integration").
HUB_STORE = """
store:
  build: ../market-data-store
  container_name: store
  environment:
    DATABASE_URL: postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB}
    REGISTRY_URL: ${REGISTRY_URL}
    REGISTRY_TRACK: ${REGISTRY_TRACK}
  ports: ["8082:8082"]
  depends_on:
    postgres:
      condition: service_healthy
    registry:
      condition: service_healthy
  healthcheck:
    test: ["CMD-SHELL", "curl -fsS http://localhost:8082/health || exit 1"]
    interval: 10s
    timeout: 3s
    retries: 10
  networks: [mdnet]
  profiles: ["store"]
"""
# Stand-ins for what the guide names but does not quote: the services the store depends
# on and the hub's network. Only their names and health checks matter here.
HUB_REST = """
services:
  postgres:
    image: postgres:15
    healthcheck: {test: ["CMD-SHELL", "pg_isready -U postgres"], interval: 5s, retries: 10}
    networks: [mdnet]
  registry:
    image: market-data-registry:latest
    healthcheck: {test: ["CMD-SHELL", "curl -fsS http://localhost:8080/health || exit 1"]}
    networks: [mdnet]
networks:
  mdnet: {}
"""
# The hub's example .env from the guide.
HUB_ENV = {
    "DATABASE_URL": "postgresql://postgres:postgres@postgres:5432/market_data",
    "POSTGRES_DB": "market_data",
    "POSTGRES_USER": "postgres",
    "POSTGRES_PASSWORD": "postgres",
    "STORE_URL": "http://store:8082",
    "ADMIN_TOKEN": "iamalive",
    "REGISTRY_URL": "http://registry:8080",
    "REGISTRY_TRACK": "v1",
}


# -- the files --------------------------------------------------------------------------------
def instructions() -> list[dockerfile.Instruction]:
    return dockerfile.final_stage(dockerfile.parse((ROOT / "Dockerfile").read_text()))


def only(keyword: str) -> dockerfile.Instruction:
    found = [i for i in instructions() if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def hub() -> dict:
    doc = yaml.safe_load(HUB_REST)
    doc["services"].update(yaml.safe_load(HUB_STORE))
    return doc


def override() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())


def merged() -> dict:
    return merge(hub(), override())


def service(name: str) -> dict:
    return merged()["services"][name]


def image_env() -> dict[str, str]:
    env = {}
    for ins in instructions():
        if ins.keyword == "ENV":
            env.update(dockerfile.env_pairs(ins.value))
    return env


def compose_env(name: str, hub_env: dict) -> dict[str, str]:
    """The service's environment after interpolation (None: from the shell, i.e. unset)."""
    env = interpolate(service(name).get("environment", {}), hub_env)
    return {k: str(v) for k, v in env.items() if v is not None}


# -- Dockerfile --------------------------------------------------------------------------------
def test_dockerfile_parser_joins_continuations_and_reads_exec_form():
    text = (
        "# escape=\\\nFROM python:3.11-slim AS base\n"
        "RUN apt-get update \\\n  # a comment inside a continuation\n  && apt-get install -y curl\n"
        'CMD ["a", "b c"]\nENV A=1 B="two words"\nENV LEGACY some value\n'
    )
    parsed = dockerfile.parse(text)
    assert [i.keyword for i in parsed] == ["FROM", "RUN", "CMD", "ENV", "ENV"]
    assert parsed[1].value == "apt-get update && apt-get install -y curl"
    assert parsed[2].exec_form == ["a", "b c"]
    assert dockerfile.env_pairs(parsed[3].value) == {"A": "1", "B": "two words"}
    assert dockerfile.env_pairs(parsed[4].value) == {"LEGACY": "some value"}
    with pytest.raises(ValueError):
        dockerfile.parse("FROM x\nRUN a \\\n")


def test_base_image_is_python_311_slim():
    assert only("FROM").value.split()[0] == "python:3.11-slim"


def test_runs_as_non_root_appuser_999():
    runs = " ; ".join(i.value for i in instructions() if i.keyword == "RUN")
    assert re.search(r"groupadd\b[^;&|]*(--gid[ =]|-g )999\b[^;&|]*\bappuser\b", runs), "group appuser with gid 999"
    assert re.search(r"useradd\b[^;&|]*(--uid[ =]|-u )999\b[^;&|]*\bappuser\b", runs), "user appuser with uid 999"
    assert re.search(r"useradd\b[^;&|]*(--gid[ =]|-g )(999|appuser)\b", runs), "appuser's primary group is 999"
    users = [i for i in instructions() if i.keyword == "USER"]
    assert users and users[-1].value.split(":")[0] in ("appuser", "999"), "the last USER must be appuser"
    cmd = only("CMD")
    assert users[-1].line < cmd.line


def test_curl_is_installed_for_the_health_check():
    runs = [i.value for i in instructions() if i.keyword == "RUN"]
    installs = [r for r in runs if re.search(r"apt-get install\b[^&;|]*\bcurl\b", r)]
    assert installs, "curl must be installed (the HEALTHCHECK and the hub's health check use it)"
    assert "rm -rf /var/lib/apt/lists" in installs[0], "apt lists removed in the same layer"


def test_dependencies_are_installed_before_the_code_is_copied():
    ins = instructions()
    copies = [(n, i) for n, i in enumerate(ins) if i.keyword in ("COPY", "ADD")]
    pip = [
        n
        for n, i in enumerate(ins)
        if i.keyword == "RUN" and re.search(r"pip install\b.*-r requirements\.txt", i.value)
    ]
    assert pip, "a RUN pip install -r requirements.txt"
    before = [i for n, i in copies if n < pip[0]]
    after = [i for n, i in copies if n > pip[0]]
    assert before, "requirements.txt copied before pip install"
    for i in before:  # nothing but the requirements may invalidate the dependency layer
        sources = dockerfile.flags(i.value)[1].split()[:-1]
        assert all(re.fullmatch(r"(\./)?requirements[\w.-]*\.txt", s) for s in sources), i.value
    assert after, "the code is copied after the dependency layer"
    requirements = [
        ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    unpinned = [ln for ln in requirements if not re.match(r"^[A-Za-z0-9_.\-\[\],]+==[\w.]+$", ln.strip())]
    assert not unpinned, f"requirements.txt must pin every package (a rebuild installs the same): {unpinned}"


def test_port_8082_env_and_expose():
    assert image_env().get("PORT") == "8082"
    assert only("EXPOSE").value.split() == ["8082"]


def test_healthcheck_is_the_guides():
    opts, rest = dockerfile.flags(only("HEALTHCHECK").value)
    assert opts == {"interval": "10s", "timeout": "3s", "retries": "3", "start-period": "20s"}
    kind, _, command = rest.partition(" ")
    assert kind == "CMD"
    # the guide's check, on the port the API listens on ($PORT, 8082 by default)
    assert command == 'curl -fsS "http://localhost:${PORT:-8082}/health" || exit 1'


def test_cmd_is_gunicorn_and_nothing_wraps_it():
    assert only("CMD").exec_form == ["gunicorn", "-c", "gunicorn.conf.py"]
    # compose's `command: python -m worker` replaces CMD; an ENTRYPOINT would wrap both.
    assert not [i for i in instructions() if i.keyword == "ENTRYPOINT"]


def test_dockerignore_keeps_runtime_files_and_drops_the_rest():
    ignore = dockerfile.DockerIgnore((ROOT / ".dockerignore").read_text())
    files = ignore.context_files(ROOT)
    for needed in (
        "gunicorn.conf.py",
        "requirements.txt",
        "app/__init__.py",
        "worker/__main__.py",
        "migrations/0001_job_ledger.sql",
    ):
        assert needed in files, f"{needed} must be in the build context"
    for top in ("app", "worker", "migrations", "contracts"):
        on_disk = [
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / top).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".md"
        ]
        missing = sorted(set(on_disk) - set(files))
        assert not missing, f"runtime files left out of the image: {missing[:5]}"
    for path in (
        ".git/HEAD",
        ".venv/pyvenv.cfg",
        ".env",
        ".env.local",
        "tests/conftest.py",
        "bench/x.py",
        "app/__pycache__/config.cpython-311.pyc",
        ".pytest_cache/v",
        ".local/pg/PG_VERSION",
        "docs/architecture.md",
        "contracts/README.md",  # **/*.md: documentation at any depth
        "app/api/NOTES.md",
        ".hypothesis/x",
    ):
        assert ignore.excluded(path), f"{path} must stay out of the image"
    leaked = [f for f in files if f.startswith((".git/", ".venv/", "tests/", ".local/")) or "__pycache__" in f]
    assert not leaked, leaked


# -- compose -----------------------------------------------------------------------------------
def test_quoted_store_service_is_the_guides():
    if not GUIDE.exists():
        pytest.skip(f"the integration guide is not at {GUIDE} (outside this repository)")
    text = GUIDE.read_text()
    section = text.split("### Service Definition", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load(HUB_STORE)


def test_merge_rules_of_the_helper():
    base = {
        "environment": ["A=1", "B=2"],
        "depends_on": ["db"],
        "ports": ["80:80"],
        "command": ["a", "b"],
        "healthcheck": {"test": ["CMD", "x"], "interval": "5s"},
        "volumes": ["v1:/data", "/host:/etc/x"],
        "networks": ["n1"],
        "build": "../svc",
        "dns": ["1.1.1.1"],
    }
    over = {
        "environment": {"B": "3", "C": "4"},
        "depends_on": {"cache": {"condition": "service_healthy"}},
        "ports": ["80:80", "81:81"],
        "command": ["c"],
        "healthcheck": {"test": ["CMD", "y"]},
        "volumes": ["v2:/data"],
        "networks": {"n2": {}},
        "build": {"dockerfile": "Dockerfile.x"},
        "dns": ["8.8.8.8"],
    }
    out = merge_service(base, over)
    assert out["environment"] == {"A": "1", "B": "3", "C": "4"}
    assert out["depends_on"] == {"db": {"condition": "service_started"}, "cache": {"condition": "service_healthy"}}
    assert out["ports"] == ["80:80", "81:81"]
    assert out["command"] == ["c"]
    assert out["healthcheck"] == {"test": ["CMD", "y"], "interval": "5s"}
    assert out["volumes"] == ["v2:/data", "/host:/etc/x"]
    assert out["networks"] == {"n1": None, "n2": {}}
    assert out["build"] == {"context": "../svc", "dockerfile": "Dockerfile.x"}
    assert out["dns"] == ["1.1.1.1", "8.8.8.8"]
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("$$SET ${SET} $SET ${EMPTY:-d} ${EMPTY-d} ${UNSET} ${UNSET:-d} ${SET:+alt}", env)
        == "$SET x x d   d alt"
    )
    assert duration_seconds("1m30s") == 90 and duration_seconds("16m") == 960
    with pytest.raises(ValueError):
        duration_seconds("10 seconds")


def test_store_service_keeps_the_hub_and_gains_redis():
    store = service("store")
    base = yaml.safe_load(HUB_STORE)["store"]
    env = store["environment"]
    for key, value in base["environment"].items():
        assert env[key] == value, f"the hub's {key} must be kept as is"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert store["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "registry": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert store["ports"] == ["8082:8082"]
    assert store["healthcheck"]["test"] == base["healthcheck"]["test"]
    assert store["profiles"] == ["store"]
    assert store["build"] == {"context": "../market-data-store"}
    assert store["image"] == "market-data-store:latest"
    assert store["pull_policy"] == "build", "compose would first try to pull market-data-store:latest"
    # read-only root file system; the only writable place the processes need is /tmp
    assert store.get("read_only") is True and "/tmp" in store["tmpfs"]


def test_redis_service_persists_and_never_evicts():
    redis_svc = service("redis")
    command = redis_svc["command"]
    assert command[0] == "redis-server"
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs.get("--appendonly") == "yes", f"AOF persistence: {command}"
    assert pairs.get("--maxmemory-policy") == "noeviction", f"never evict queued jobs: {command}"
    assert redis_svc["image"].startswith("redis:7")
    assert any(_volume_target(v) == "/data" for v in redis_svc["volumes"]), "AOF kept on a volume"
    assert "ports" not in redis_svc, "the queue is not published on the host"
    assert redis_svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert redis_svc["profiles"] == ["store"]


def _volume_target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1]


def test_worker_service_is_the_same_image_running_the_worker():
    store, worker = service("store"), service("worker")
    assert worker["build"] == store["build"] and worker["image"] == store["image"], "same build as the store"
    assert worker["pull_policy"] == store["pull_policy"] == "build"
    assert worker["command"] == ["python", "-m", "worker"]
    assert worker["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert worker.get("healthcheck") == {"disable": True}, "the image's HTTP health check does not apply to a worker"
    for scaling_blocker in ("container_name", "ports"):
        assert scaling_blocker not in worker, f"--scale worker=N needs no {scaling_blocker}"
    assert worker["profiles"] == ["store"]
    assert worker["networks"] == store["networks"]
    assert worker.get("read_only") is True and "/tmp" in worker["tmpfs"]
    for key in (
        "DATABASE_URL",
        "REDIS_URL",
        "REGISTRY_URL",
        "REGISTRY_TRACK",
        "LOG_LEVEL",
        "PULSE_ENABLED",
        "EVENT_BUS_BACKEND",
        "BACKFILL_URL_ALLOW",
    ):
        assert worker["environment"][key] == store["environment"].get(key), f"worker and API must agree on {key}"


@pytest.mark.slow  # starts processes
def test_profile_store_starts_a_complete_stack():
    doc = merged()
    added = set(override()["services"]) - {"store"}
    assert added == {"redis", "worker"}
    assert all(doc["services"][name]["profiles"] == ["store"] for name in added)
    active = active_services(doc, {"store"})
    assert {"store", "worker", "redis", "postgres", "registry"} <= active
    for name in active:
        svc = doc["services"][name]
        for dep in svc.get("depends_on", {}):
            assert dep in active, f"{name} depends on {dep}, which --profile store does not start"
        for net in svc.get("networks", {}):
            assert net in doc.get("networks", {}), f"network {net} is not declared"
        for volume in svc.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in doc.get("volumes", {}), f"named volume {source} is not declared"
    assert not (active_services(doc, set()) & added), "nothing of ours starts without --profile store"
    assert "version" not in override(), "the obsolete top-level version key makes compose warn"


def _gunicorn_settings(env: dict) -> dict:
    code = (
        "import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: ns[k] for k in ('graceful_timeout', 'timeout', 'bind')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_grace_periods_cover_a_graceful_stop():
    from app.config import load_settings

    store_env = {**image_env(), **compose_env("store", HUB_ENV)}
    gun = _gunicorn_settings(store_env)
    assert gun["bind"] == "0.0.0.0:8082"
    store_grace = duration_seconds(service("store")["stop_grace_period"])
    assert store_grace > gun["graceful_timeout"], "Docker must not SIGKILL gunicorn while requests finish"

    worker_settings = load_settings({**image_env(), **compose_env("worker", HUB_ENV)}, dotenv=False)
    worker_grace = duration_seconds(service("worker")["stop_grace_period"])
    longest_step = worker_settings.statement_timeout_ms / 1000  # no single database step runs longer
    assert worker_grace > longest_step, (worker_grace, longest_step)


def test_compose_environment_is_accepted_by_the_store():
    from app.config import load_settings

    for name in ("store", "worker"):
        settings = load_settings({**image_env(), **compose_env(name, HUB_ENV)}, dotenv=False)
        assert (
            settings.database_url == "postgresql://postgres:postgres@postgres:5432/market_data"
        )  # postgres:// accepted
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.registry_url == "http://registry:8080" and settings.registry_track == "v1"
        assert settings.port == 8082


@pytest.mark.slow  # starts processes
def test_redis_command_runs_on_a_real_redis_with_aof(tmp_path):
    """The compose `command` on the machine's redis-server 7: settings and AOF really hold."""
    redis_svc = service("redis")
    port = free_port()
    argv = [
        shutil.which(redis_svc["command"][0]) or redis_svc["command"][0],
        *redis_svc["command"][1:],
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp_path),
    ]
    health = redis_svc["healthcheck"]["test"][1].replace("redis-cli", f"redis-cli -p {port}")
    assert subprocess.run(["sh", "-c", health], capture_output=True).returncode != 0, "healthy before it runs?"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(
            lambda: subprocess.run(["sh", "-c", health], capture_output=True, timeout=3).returncode == 0,
            30,
            message="the redis health check to pass",
        )
        return proc

    proc = start()
    try:
        client = redis.Redis(port=port, decode_responses=True)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.rpush("rq:queue:store", "run-1")
        # the AOF holds the write (appendfsync everysec); then the server dies without a save
        wait_for(
            lambda: any(b"run-1" in p.read_bytes() for p in tmp_path.rglob("*.aof*") if p.is_file()),
            30,
            message="the write to reach the append-only file",
        )
        proc.kill()
        proc.wait(10)
        proc = start()
        assert client.lrange("rq:queue:store", 0, -1) == ["run-1"], "a queued job survives a crash of Redis"
    finally:
        proc.kill()
        proc.wait(10)


# -- the image's processes, run natively --------------------------------------------------------
class Image:
    """The image's /app, rebuilt from the build context the way the Dockerfile copies it."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="mds-image-"))
        os.chmod(self.root, 0o755)
        ins = instructions()
        ignore = dockerfile.DockerIgnore((ROOT / ".dockerignore").read_text())
        context = ignore.context_files(ROOT)
        workdir = "/"
        for i in ins:
            if i.keyword == "WORKDIR":
                workdir = os.path.join(workdir, i.value)
                (self.root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif i.keyword == "COPY":
                opts, rest = dockerfile.flags(i.value)
                assert "from" not in opts, "single-stage image expected"
                *sources, dest = i.exec_form or rest.split()
                target = self.root / os.path.join(workdir, dest).lstrip("/")
                for src in sources:
                    src = os.path.normpath(src)
                    chosen = [f for f in context if src == "." or f == src or f.startswith(src + "/")]
                    assert chosen, f"COPY {src}: nothing in the build context"
                    for f in chosen:
                        rel = f if src == "." else (Path(f).name if f == src else f[len(src) + 1 :])
                        out = target / rel
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / f, out)
        self.workdir = self.root / workdir.lstrip("/")
        for dirpath, _, _ in os.walk(self.root):
            os.chmod(dirpath, 0o755)  # COPY leaves root-owned, world-readable directories

    def snapshot(self) -> dict[str, float]:
        return {p.relative_to(self.root).as_posix(): p.stat().st_mtime for p in self.root.rglob("*")}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _user_prefix(workdir: Path) -> tuple[list[str], str | None, str]:
    """How to run as the image's user (uid/gid 999): (prefix, skip reason, note).

    Already non-root: run as is. Root: setpriv to 999. When the venv's interpreter lives
    under a directory 999 cannot enter (a pyenv under /root), 999 also gets
    CAP_DAC_READ_SEARCH, which lets it read and search, never write (or, where that
    capability is not available, CAP_DAC_OVERRIDE): the image's promise (nothing written
    into /app, checked by a snapshot; no root needed) is still what is tested.
    """
    if os.geteuid() != 0:
        return [], None, f"already non-root (uid {os.geteuid()})"
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return [], "setpriv (util-linux) is not installed", ""
    base = [setpriv, f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
    read_caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    # Docker's default capability set lacks DAC_READ_SEARCH; DAC_OVERRIDE would also allow
    # writes, which the /app snapshot comparison still catches.
    override_caps = ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
    probe = (
        "import sys, gunicorn, flask, psycopg, rq; open('gunicorn.conf.py').read(); print(sys.version, sys.base_prefix)"
    )
    want = f"{sys.version} {sys.base_prefix}"
    errors = []
    for extra, note in (
        ([], f"uid/gid {IMAGE_UID}"),
        (read_caps, f"uid/gid {IMAGE_UID} with CAP_DAC_READ_SEARCH to reach {sys.base_prefix}"),
        (override_caps, f"uid/gid {IMAGE_UID} with CAP_DAC_OVERRIDE to reach {sys.base_prefix}"),
    ):
        prefix = [*base, *extra, "--"]
        out = subprocess.run(
            [*prefix, str(VENV_BIN / "python"), "-c", probe], cwd=workdir, capture_output=True, text=True, timeout=60
        )
        if out.returncode == 0 and out.stdout.strip() == want:
            return prefix, None, note
        errors.append(out.stdout.strip() or out.stderr.strip()[-200:])
    return [], f"uid {IMAGE_UID} cannot run this venv's interpreter: {errors}", ""


@pytest.fixture(scope="module")
def image():
    img = Image()
    img.prefix, img.non_root_skip, img.user_note = _user_prefix(img.workdir)
    yield img
    img.remove()


class Container:
    """One process of the image: its user, environment, working directory and command."""

    def __init__(self, img: Image, name: str, argv: list[str], env: dict[str, str], logdir: Path):
        self.img, self.name, self.argv, self.env = img, name, argv, env
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> Container:
        self.started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.img.prefix, *self.argv],
                cwd=self.img.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def shell(self, command: str) -> int:
        """Run a shell-form command in the container, as Docker runs a health check."""
        return subprocess.run(
            [*self.img.prefix, "/bin/sh", "-c", command],
            cwd=self.img.workdir,
            env=self.env,
            capture_output=True,
            timeout=3,
        ).returncode

    def uids(self) -> set[int]:
        """Effective uids of the process and its children."""
        pids, uids = [self.proc.pid], set()
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            uids.add(int(re.search(r"^Uid:\s+\d+\s+(\d+)", status, re.M).group(1)))
            pids += [int(c) for c in children]
        return uids

    def stop(self, grace: float) -> int:
        """SIGTERM, as `docker stop` does; the exit code, or a failure after the grace period."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            pytest.fail(f"{self.name} did not exit within {grace:g} s of SIGTERM; log:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _local(url: str, hosts: dict[str, str]) -> str:
    """Point a compose host name (postgres, redis, registry) at the local server."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.hostname not in hosts:
        return url
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(userinfo + "@" if userinfo else "") + hosts[parts.hostname]))


class Deployment:
    """The compose services `store` and `worker` against a test database and Redis."""

    def __init__(self, img: Image, database_url: str, redis_url: str):
        self.img, self.database_url = img, database_url
        self.tmp = Path(tempfile.mkdtemp(prefix="mds-ctr-"))
        os.chmod(self.tmp, 0o755)
        self.tmpdir = self.tmp / "tmp"  # the container's private /tmp (a tmpfs in compose)
        self.tmpdir.mkdir(mode=0o1777)
        os.chmod(self.tmpdir, 0o1777)
        db = urlsplit(database_url)
        rd = urlsplit(redis_url)
        self.hub_env = {
            **HUB_ENV,
            "POSTGRES_USER": db.username or "postgres",
            "POSTGRES_PASSWORD": db.password or "postgres",
            "POSTGRES_DB": db.path.lstrip("/"),
            "ADMIN_TOKEN": TOKEN,
        }
        self.hosts = {
            "postgres": f"{db.hostname}:{db.port or 5432}",
            "redis": f"{rd.hostname}:{rd.port or 6379}",
            "registry": f"127.0.0.1:{free_port()}",
        }  # no registry: drift checks fail fast
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.containers: list[Container] = []

    def env(self, name: str) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/nonexistent",
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.tmpdir),
        }
        if self.img.prefix:
            # In the image uid 999 has a passwd entry (appuser); on this machine it may not,
            # and getpass.getuser() (yoyo records who applied a migration) would fail.
            # LOGNAME is what getuser() reads first: it stands in for /etc/passwd.
            env["LOGNAME"] = "appuser"
        env.update(image_env())
        env.update({k: _local(v, self.hosts) for k, v in compose_env(name, self.hub_env).items()})
        env["PORT"] = str(self.port)
        return env

    def api(self) -> Container:
        return self._add("store", only("CMD").exec_form)

    def worker(self) -> Container:
        return self._add("worker", service("worker")["command"])

    def _add(self, name: str, argv: list[str]) -> Container:
        ctr = Container(self.img, f"{name}-{len(self.containers)}", argv, self.env(name), self.tmp)
        self.containers.append(ctr)
        return ctr

    def healthcheck(self, command: str) -> str:
        return command.replace("localhost:8082", f"localhost:{self.port}")

    def close(self) -> None:
        for ctr in self.containers:
            ctr.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def deployment(image, database_url, redis_url):
    dep = Deployment(image, database_url, redis_url)
    yield dep
    dep.close()


@pytest.fixture
def migrated_deployment(image, migrated_database_url, redis_url):
    dep = Deployment(image, migrated_database_url, redis_url)
    yield dep
    dep.close()


def _wait_healthy(dep: Deployment, ctr: Container, timeout: float = 20.0) -> float:
    """Seconds from process start until /health is 200 with the database checked healthy."""

    def healthy():
        if ctr.proc.poll() is not None:
            return ("exited", ctr.proc.returncode)
        doc = requests.get(dep.url + "/health", timeout=2)
        states = {c["name"]: c["state"] for c in doc.json()["components"]}
        return doc.status_code == 200 and states.get("database") == "healthy"

    result = wait_for(healthy, timeout, 0.05, message="/health 200 with a healthy database")
    assert result is True, f"the API exited during start: {result}; log:\n{ctr.output()[-3000:]}"
    return time.monotonic() - ctr.started


@pytest.mark.slow  # starts processes
def test_processes_run_as_the_image_user(image, deployment):
    if image.non_root_skip:
        pytest.skip(f"cannot run as uid {IMAGE_UID} here: {image.non_root_skip}")
    api = deployment.api().start()
    _wait_healthy(deployment, api)
    uids = api.uids()
    print(f"\nrunning as {image.user_note}: uids {sorted(uids)}")
    expected = {IMAGE_UID} if image.prefix else {os.geteuid()}
    assert uids == expected and 0 not in uids, f"gunicorn master and workers run as {uids}"
    assert api.stop(30) == 0


@pytest.mark.slow  # starts processes
def test_api_starts_within_20s_and_stops_cleanly_as_in_the_image(image, deployment, record_property):
    before = image.snapshot()
    api = deployment.api()
    # as written in the Dockerfile: it must find the API on $PORT (a free port here, not 8082)
    dockerfile_check = dockerfile.flags(only("HEALTHCHECK").value)[1].partition(" ")[2]
    hub_check = deployment.healthcheck(service("store")["healthcheck"]["test"][1])
    assert api.shell(dockerfile_check) != 0, "the health check must fail while nothing listens"

    api.start()
    startup = _wait_healthy(deployment, api, timeout=20.0)  # the guide: start-period 20 s, DB check included
    record_property("api_startup_seconds", round(startup, 2))
    print(f"\nAPI startup (process start -> /health 200, database healthy): {startup:.2f} s")

    assert api.shell(dockerfile_check) == 0, "the Dockerfile HEALTHCHECK command"
    assert api.shell(hub_check) == 0, "the hub's compose health check"
    assert requests.get(deployment.url + "/readyz", timeout=5).status_code == 200
    metrics = requests.get(deployment.url + "/metrics", timeout=5)
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    health = requests.get(deployment.url + "/health", timeout=5).json()
    prometheus = next(c for c in health["components"] if c["name"] == "prometheus")
    assert prometheus["state"] == "healthy" and prometheus["details"]["mode"] == "multiprocess"
    metrics_dir = deployment.tmpdir / "market-data-store-metrics"
    assert metrics_dir.is_dir() and any(metrics_dir.iterdir()), "multiprocess files under the container's /tmp"

    grace = duration_seconds(service("store")["stop_grace_period"])
    stopping = time.monotonic()
    assert api.stop(grace) == 0, api.output()[-3000:]
    print(f"API exit after SIGTERM: {time.monotonic() - stopping:.2f} s (grace period {grace:g} s)")
    assert image.snapshot() == before, "the processes wrote into the image's /app (it must stay read-only)"


@pytest.mark.slow  # starts processes
def test_sigterm_lets_the_request_in_flight_finish(migrated_deployment):
    """A rolling restart drops no request: SIGTERM while one is running, it still gets its answer."""
    from app.migrator import MIGRATION_TABLE

    dep = migrated_deployment
    api = dep.api().start()
    _wait_healthy(dep, api)
    answers: list = []
    with psycopg.connect(dep.database_url) as locker:
        # GET /schema/version reads the migration table: hold it so the request stays in flight
        locker.execute(f"LOCK TABLE {MIGRATION_TABLE} IN ACCESS EXCLUSIVE MODE")

        def call():
            try:
                answers.append(requests.get(dep.url + "/schema/version", timeout=30))
            except requests.RequestException as exc:
                answers.append(exc)

        client = threading.Thread(target=call)
        client.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'market-data-store-api' AND wait_event_type = 'Lock'"
        )
        with psycopg.connect(dep.database_url, autocommit=True) as watcher:
            wait_for(
                lambda: watcher.execute(waiting).fetchone()[0] >= 1, 10, 0.02, message="the request to wait on the lock"
            )
        api.proc.send_signal(signal.SIGTERM)
        # gunicorn is shutting down (it has told its workers) before the request may go on;
        # without a graceful timeout the workers are killed right after this line.
        wait_for(lambda: "Handling signal: term" in api.output(), 5, 0.01, message="gunicorn to handle SIGTERM")
        locker.rollback()  # well within the API's 2 s lock_timeout
    client.join(30)
    assert answers, "the request in flight got no answer"
    answer = answers[0]
    assert isinstance(answer, requests.Response), f"the request in flight was dropped: {answer!r}"
    assert answer.status_code == 200 and answer.json()["pending"] == [], answer.text
    assert api.proc.wait(duration_seconds(service("store")["stop_grace_period"])) == 0, api.output()[-3000:]


@pytest.mark.slow  # starts processes
def test_worker_runs_jobs_and_stops_cleanly_as_in_the_image(image, deployment):
    before = image.snapshot()
    api = deployment.api().start()
    _wait_healthy(deployment, api)
    worker = deployment.worker().start()
    wait_for(
        lambda: '"worker started"' in worker.output() or worker.proc.poll() is not None,
        20,
        0.05,
        message="the worker to start",
    )
    assert worker.proc.poll() is None, worker.output()[-3000:]
    print(f"\nworker startup (process start -> listening on the queue): {time.monotonic() - worker.started:.2f} s")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"  # ADMIN_TOKEN from the hub's .env via compose

    resp = session.post(deployment.url + "/migrate", json={}, timeout=10)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]

    def finished():
        doc = session.get(f"{deployment.url}/jobs/{run_id}", timeout=5).json()
        if worker.proc.poll() is not None:
            return {"status": "worker exited", "code": worker.proc.returncode}
        return doc if doc["status"] in ("success", "failed", "cancelled") else None

    doc = wait_for(finished, 60, 0.2, message="the migrate job run by the image's worker")
    assert doc["status"] == "success", f"{doc}\nworker log:\n{worker.output()[-3000:]}"
    if image.prefix:
        assert worker.uids() == {IMAGE_UID}

    grace = duration_seconds(service("worker")["stop_grace_period"])
    stopping = time.monotonic()
    assert worker.stop(min(grace, 120)) == 0, worker.output()[-3000:]  # idle: no job to finish
    print(f"worker exit after SIGTERM: {time.monotonic() - stopping:.2f} s (grace period {grace:g} s)")
    assert "worker stopped" in worker.output()
    assert api.stop(duration_seconds(service("store")["stop_grace_period"])) == 0
    assert image.snapshot() == before


# -- documentation -------------------------------------------------------------------------------
def test_deployment_doc_matches_the_files():
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert (
        "docker compose -f ../market_data_infra/docker-compose.yml -f docker-compose.override.yml --profile store up -d"
        in doc
    )
    assert "--scale worker=" in doc
    for setting in ("--appendonly yes", "noeviction", "stop_grace_period"):
        assert setting in doc, setting
    documented = set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]*)`", doc, re.M))
    build_only = {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_ROOT_USER_ACTION",
    }
    needed = (
        set(service("store")["environment"]) | set(service("worker")["environment"]) | (set(image_env()) - build_only)
    )
    assert not needed - documented, f"environment variables missing from the table: {sorted(needed - documented)}"
    assert service("worker")["stop_grace_period"] in doc and service("store")["stop_grace_period"] in doc
    readme = (ROOT / "README.md").read_text()
    assert "\n## Deployment\n" in readme
    section = readme.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "docker compose -f ../market_data_infra/docker-compose.yml -f docker-compose.override.yml "
        "--profile store up -d",
        "--scale worker=",
        "--appendonly yes",
        "noeviction",
        service("store")["stop_grace_period"],
        service("worker")["stop_grace_period"],
        "docs/deployment.md",
    ):
        assert needed in section, f"README's Deployment section lacks {needed!r}"
